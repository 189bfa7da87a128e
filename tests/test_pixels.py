"""views() and pixel_values(): geometry of every strategy's views, padding, errors, and the fast path's bound."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import gridvlm
from images import photo_like
from gridvlm.errors import ImageError, PlanError
from gridvlm.imaging import load_preview, preview_size
from gridvlm.pixels import (
    DRAFT_ERROR_BUDGET,
    FAST_MEAN_ABS_BOUND,
    _decode,
    _draft_error,
    _draft_factor,
    _resize,
    _split,
    _view_needs,
    pixel_values,
    qwen_patchify,
    qwen_pixel_values,
    views,
)

torch = pytest.importorskip("torch")

MAGENTA = (255, 0, 255)
BLOCK = (420, 250, 520, 350)  # original pixels: a solid magenta square in a green-ish gradient


def marked_image(width: int = 900, height: int = 600) -> Image.Image:
    """A smooth gradient far from magenta, with one magenta block at BLOCK."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([120 * x / width, 80 + 120 * y / height, 60 + 60 * x / width], -1)
    image = Image.fromarray(rgb.astype(np.uint8))
    ImageDraw.Draw(image).rectangle((BLOCK[0], BLOCK[1], BLOCK[2] - 1, BLOCK[3] - 1), fill=MAGENTA)
    return image




def jpeg(image: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def normalisation(strategy: str):
    return gridvlm.strategy_info(strategy).pixels.normalisation


def pad_colour(plan: gridvlm.Plan):
    return gridvlm.strategy_info(plan.strategy).pixel_recipe(plan).pad_colour


def mean_abs_pixels(fast, exact, strategy: str) -> float:
    """Mean |fast − exact| in 0..1 pixel units (de-normalised), over every value of every view."""
    std = torch.tensor(normalisation(strategy)[1]).view(3, 1, 1)
    fast = fast if isinstance(fast, list) else list(fast)
    exact = exact if isinstance(exact, list) else list(exact)
    assert [f.shape for f in fast] == [e.shape for e in exact]
    total = sum(float(((f - e).abs() * std).sum()) for f, e in zip(fast, exact))
    return total / sum(f.numel() for f in fast)


@pytest.fixture(scope="module")
def marked():
    return marked_image()


# ----------------------------------------------------------------------------------------- views, every strategy


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_views_follow_the_plan(marked, strategy):
    plan = gridvlm.plan(marked, strategy)
    got = views(marked, plan)
    assert len(got) == plan.num_views == len(plan.views)
    assert [v.size for v in got] == [tuple(t.input_size) for t in plan.views]
    assert all(v.mode == "RGB" for v in got)


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_padding_has_the_pad_colour(marked, strategy):
    plan = gridvlm.plan(marked, strategy)
    pad = np.array(pad_colour(plan), dtype=np.uint8)
    for tile, view in zip(plan.views, views(marked, plan)):
        pixels = np.asarray(view)
        outside = _outside(tile.content_box, tile.input_size, margin=2)
        if outside.any():
            assert (pixels[outside] == pad).all(), f"{strategy} view {tile.index}: padding is not {tuple(pad)}"


def test_some_strategies_really_pad():
    """The padding test above is not vacuous: these plans have padding for a 900×600 image."""
    image = marked_image()
    for strategy, params in (("llava-next", {}), ("deepseek-vl2", {}), ("llava-1.5", {"mode": "pad"})):
        plan = gridvlm.plan(image, strategy, **params)
        assert any(_outside(t.content_box, t.input_size, 2).any() for t in plan.views), strategy


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_marked_block_lands_where_content_box_says(marked, strategy):
    plan = gridvlm.plan(marked, strategy)
    checked = 0
    for tile, view in zip(plan.views, views(marked, plan)):
        spot = _block_in_view(tile)
        if spot is None:
            continue
        x, y = spot
        got = np.asarray(view)[y, x].astype(int)
        assert np.abs(got - MAGENTA).max() <= 40, f"{strategy} view {tile.index}: {tuple(got)} at ({x}, {y})"
        checked += 1
    assert checked >= 1, f"{strategy}: no view shows the marked block"


def test_fixed_grid_zero_pads_edge_tiles():
    image = marked_image(700, 400)  # 3×2 tiles of 336 px run past the right and bottom edges
    plan = gridvlm.plan(image, "fixed-grid")
    last = np.asarray(views(image, plan)[-1])
    assert (last[400 - 336:, :] == 0).all() and (last[:, 700 - 2 * 336:] == 0).all()


def test_llava15_pads_before_resizing():
    """Pad-then-resize: the pad colour bleeds into the image edge, which resize-then-pad would not do."""
    image = Image.new("RGB", (600, 300), (0, 0, 0))
    plan = gridvlm.plan(image, "llava-1.5", mode="pad")
    view = np.asarray(views(image, plan)[0]).astype(int)
    assert tuple(view[0, 0]) == pad_colour(plan)
    assert tuple(view[168, 168]) == (0, 0, 0)
    edge = view[84, 168]  # the row where the image starts: a blend of black and the pad colour
    assert 0 < edge[0] < pad_colour(plan)[0]


# ----------------------------------------------------------------------------------------- pixel_values


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_pixel_values_shapes_and_normalisation(marked, strategy):
    plan = gridvlm.plan(marked, strategy)
    values = pixel_values(marked, plan, exact=True)
    sizes = {tuple(t.input_size) for t in plan.views}
    if len(sizes) == 1:
        w, h = sizes.pop()
        assert isinstance(values, torch.Tensor) and values.shape == (plan.num_views, 3, h, w)
        values = list(values)
    else:
        assert isinstance(values, list)
        assert [tuple(v.shape) for v in values] == [(3, t.input_size[1], t.input_size[0]) for t in plan.views]
    assert all(v.dtype == torch.float32 for v in values)
    # De-normalised, they are the views that views() shows (to within uint8 rounding).
    mean, std = (torch.tensor(x).view(3, 1, 1) for x in normalisation(strategy))
    for v, shown in zip(values, views(marked, plan)):
        pixels = torch.from_numpy(np.asarray(shown).copy()).permute(2, 0, 1).float() / 255
        assert float((v * std + mean - pixels).abs().max()) <= 0.5 / 255 + 1e-6


def test_mean_and_std_override(marked):
    plan = gridvlm.plan(marked, "llava-next")
    raw = pixel_values(marked, plan, mean=(0, 0, 0), std=(1, 1, 1))
    first = torch.from_numpy(np.asarray(views(marked, plan, exact=False)[0]).copy()).permute(2, 0, 1).float() / 255
    assert float((raw[0] - first).abs().max()) < 1e-6  # the same (fast) pixels, only divided by 255
    with pytest.raises(PlanError):
        pixel_values(marked, plan, mean=(0.5, 0.5), std=(1, 1, 1))
    with pytest.raises(PlanError):
        pixel_values(marked, plan, std=(0.5, 0, 0.5))


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_every_strategy_has_a_normalisation(strategy):
    mean, std = normalisation(strategy)
    assert len(mean) == len(std) == 3 and all(0 <= m <= 1 for m in mean) and all(s > 0 for s in std)


def test_qwen_patchify_layout():
    x = torch.arange(3 * 56 * 84, dtype=torch.float32).view(3, 56, 84)
    patches, thw = qwen_patchify(x)
    assert thw.tolist() == [[1, 4, 6]] and patches.shape == (24, 3 * 2 * 14 * 14)
    # Patch 1 is the second patch of the first 2×2 merge block: row 0, column 1.
    assert torch.equal(patches[1].view(3, 2, 14, 14)[:, 0], x[:, 0:14, 14:28])
    assert torch.equal(patches[2].view(3, 2, 14, 14)[:, 1], x[:, 14:28, 0:14])
    assert torch.equal(patches[4].view(3, 2, 14, 14)[:, 0], x[:, 0:14, 28:42])


# ----------------------------------------------------------------------------------------- errors


def test_plan_for_another_size_is_refused(marked):
    plan = gridvlm.plan((800, 600), "llava-next")
    with pytest.raises(PlanError, match="800×600.*900×600"):
        pixel_values(marked, plan)
    with pytest.raises(PlanError, match="800×600"):
        views(marked, plan)


def test_unreadable_bytes_raise_image_error():
    plan = gridvlm.plan((900, 600), "llava-next")
    with pytest.raises(ImageError):
        pixel_values(b"this is not an image", plan)
    with pytest.raises(ImageError):
        pixel_values(jpeg(marked_image())[:2000], plan)  # truncated
    with pytest.raises(ImageError):
        views(b"", plan)


# ----------------------------------------------------------------------------------------- fast path


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_fast_is_close_to_exact_png(strategy):
    image = photo_like(700, 500, seed=1)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    plan = gridvlm.plan(image, strategy)
    diff = mean_abs_pixels(pixel_values(buf.getvalue(), plan), pixel_values(buf.getvalue(), plan, exact=True),
                           strategy)
    assert diff <= FAST_MEAN_ABS_BOUND


@pytest.fixture(scope="module")
def big_jpeg():
    return jpeg(photo_like(2400, 1800, seed=2))


@pytest.mark.parametrize("strategy, params", [
    ("llava-1.5", {}),
    ("llava-1.5", {"mode": "crop"}),
    ("llava-next", {}),
    ("qwen2-vl", {"max_pixels": 200_000}),
    ("deepseek-vl2", {"cropping": False}),
    ("idefics3", {"do_image_splitting": False}),
    ("llava-uhd", {}),
])
def test_fast_is_close_to_exact_big_jpeg(big_jpeg, strategy, params):
    plan = gridvlm.plan(gridvlm.image_size(big_jpeg), strategy, **params)
    diff = mean_abs_pixels(pixel_values(big_jpeg, plan), pixel_values(big_jpeg, plan, exact=True), strategy)
    assert diff <= FAST_MEAN_ABS_BOUND


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_fast_pixel_values_are_the_fast_views_normalised(big_jpeg, strategy):
    """The fast path writes each view straight into its output, padding first (while the image decodes), the
    piece a resize made after: the same values as normalising the views it shows, padding included."""
    plan = gridvlm.plan(gridvlm.image_size(big_jpeg), strategy)
    values = pixel_values(big_jpeg, plan)
    values = list(values) if isinstance(values, torch.Tensor) else values
    mean, std = (torch.tensor(x, dtype=torch.float32).view(3, 1, 1) for x in normalisation(strategy))
    for value, shown in zip(values, views(big_jpeg, plan, exact=False), strict=True):
        pixels = torch.from_numpy(np.asarray(shown).copy()).permute(2, 0, 1).float()
        assert float((value - (pixels / 255 - mean) / std).abs().max()) <= 1e-5


def test_draft_decoding_kicks_in_for_big_jpegs(big_jpeg):
    plan = gridvlm.plan((2400, 1800), "llava-next")
    k = _draft_factor(plan)
    assert k >= 2
    assert _decode(big_jpeg, plan, draft=k).size == (math.ceil(2400 / k), math.ceil(1800 / k))
    assert _draft_factor(gridvlm.plan((2400, 1800), "llava-1.5")) >= 4
    assert _draft_factor(gridvlm.plan((2400, 1800), "qwen2-vl")) == 1  # native resolution needs every pixel


def test_no_draft_for_png_or_pil():
    image = photo_like(2400, 1800, seed=3)
    plan = gridvlm.plan(image, "llava-1.5")
    assert _decode(image, plan, draft=4).size == (2400, 1800)
    assert image.size == (2400, 1800)  # the caller's image is untouched


def test_exif_rotated_jpeg():
    stored = photo_like(1200, 800, seed=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show upright: 800×1200
    data = jpeg(stored, exif=exif.tobytes())
    assert gridvlm.image_size(data) == (800, 1200)
    upright = gridvlm.load_image(data)
    for strategy in ("llava-next", "internvl"):
        plan = gridvlm.plan((800, 1200), strategy)
        exact = pixel_values(data, plan, exact=True)
        assert torch.equal(exact, pixel_values(upright, plan, exact=True))
        assert mean_abs_pixels(pixel_values(data, plan), exact, strategy) <= FAST_MEAN_ABS_BOUND
    with pytest.raises(PlanError, match="1200×800"):
        pixel_values(data, gridvlm.plan((1200, 800), "llava-next"))


# ----------------------------------------------------------------------------------------- helpers


def _outside(content_box, input_size, margin: int) -> np.ndarray:
    """Mask (h, w) of pixels at least `margin` px outside the content box (resampling may blur its edge)."""
    w, h = input_size
    x0, y0, x1, y1 = content_box
    ys, xs = np.mgrid[0:h, 0:w]
    return (xs + 1 <= x0 - margin) | (xs >= x1 + margin) | (ys + 1 <= y0 - margin) | (ys >= y1 + margin)


def _block_in_view(tile):
    """Where the centre of BLOCK appears in this view, in input pixels, if the view shows it at ≥ 5 px."""
    bx0, by0, bx1, by1 = tile.box
    cx0, cy0, cx1, cy1 = tile.content_box
    if bx1 <= bx0 or by1 <= by0:
        return None
    sx, sy = (cx1 - cx0) / (bx1 - bx0), (cy1 - cy0) / (by1 - by0)
    # The middle of the block's part inside this view.
    x0, x1 = max(BLOCK[0], bx0), min(BLOCK[2], bx1)
    y0, y1 = max(BLOCK[1], by0), min(BLOCK[3], by1)
    if (x1 - x0) * sx < 5 or (y1 - y0) * sy < 5:
        return None
    x = cx0 + ((x0 + x1) / 2 - bx0) * sx
    y = cy0 + ((y0 + y1) / 2 - by0) * sy
    return int(x), int(y)


@pytest.mark.parametrize("params", [{}, {"max_pixels": 200_000}])
def test_qwen_pixel_values_fast_is_the_patch_layout_of_exact(big_jpeg, params):
    plan = gridvlm.plan(gridvlm.image_size(big_jpeg), "qwen2-vl", **params)
    fast, grid_fast = qwen_pixel_values(big_jpeg, plan)
    exact, grid_exact = qwen_pixel_values(big_jpeg, plan, exact=True)
    assert fast.shape == exact.shape and fast.dtype == exact.dtype
    assert grid_fast.tolist() == grid_exact.tolist()
    assert grid_fast.tolist() == [[1, plan.tiles[0].input_size[1] // 14, plan.tiles[0].input_size[0] // 14]]
    std = torch.tensor(normalisation("qwen2-vl")[1]).repeat_interleave(2 * 14 * 14)
    assert ((fast - exact).abs() * std).mean() <= FAST_MEAN_ABS_BOUND


def test_qwen_pixel_values_refuses_other_plans():
    with pytest.raises(PlanError, match="qwen2-vl"):
        qwen_pixel_values(jpeg(marked_image()), gridvlm.plan(marked_image(), "llava-next"))


@pytest.mark.parametrize("strategy", ["llava-next", "internvl", "llava-uhd", "qwen2-vl"])
def test_fast_views_are_close_to_exact(big_jpeg, strategy):
    plan = gridvlm.plan(gridvlm.image_size(big_jpeg), strategy)
    fast, exact = views(big_jpeg, plan, exact=False), views(big_jpeg, plan)
    assert [v.size for v in fast] == [v.size for v in exact]
    diff = np.mean([np.abs(np.asarray(a, float) - np.asarray(b, float)).mean() for a, b in zip(fast, exact)]) / 255
    assert diff <= FAST_MEAN_ABS_BOUND


# ----------------------------------------------------------------------------------------- real photos


ROOT = Path(__file__).resolve().parents[1]
# Example images (wherever the app keeps them) and the benchmark's photos; a text page as a JPEG (blur shows).
REAL_JPEGS = sorted({p.name: p for pattern in ("assets/*.jpg", "gridvlm/app/assets/*.jpg", "bench/photos/*.jpg")
                     for p in ROOT.glob(pattern)}.values())
DOCUMENT = next(iter(sorted(ROOT.glob("assets/document_page.png")) + sorted(ROOT.glob("gridvlm/app/assets/document_page.png"))), None)
BIG_PHOTO_STRATEGIES = ("llava-next", "internvl", "minicpm-v", "idefics3", "llava-1.5", "deepseek-vl2", "qwen2-vl")


def _real_cases():
    cases = []
    for path in REAL_JPEGS:
        w, h = gridvlm.image_size(path)
        strategies = gridvlm.list_strategies() if w * h <= 4_500_000 else BIG_PHOTO_STRATEGIES
        cases += [(path.name, s) for s in strategies if s in gridvlm.list_strategies()]
    if DOCUMENT is not None:
        cases += [("document_page.jpg", s) for s in gridvlm.list_strategies()]
    return cases


@pytest.fixture(scope="module")
def real_bytes():
    found = {p.name: p.read_bytes() for p in REAL_JPEGS}
    if DOCUMENT is not None:
        found["document_page.jpg"] = jpeg(Image.open(DOCUMENT).convert("RGB"))
    return found


@pytest.mark.parametrize("name, strategy", _real_cases())
def test_fast_is_close_to_exact_on_real_images(real_bytes, name, strategy):
    """The promise on real JPEGs (photos up to 5120×2880, an illustration with hard edges, a text page), at
    whatever DCT scale the plan picks."""
    data = real_bytes[name]
    plan = gridvlm.plan(gridvlm.image_size(data), strategy)
    diff = mean_abs_pixels(pixel_values(data, plan), pixel_values(data, plan, exact=True), strategy)
    assert diff <= FAST_MEAN_ABS_BOUND, f"{name} {strategy} at 1/{_draft_factor(plan)}: {diff * 255:.2f}/255"


@pytest.mark.parametrize("size, strategy, k", [
    ((5120, 2880), "llava-next", 4),  # the 672-px canvas needs 0.13 of the original: 1/4 keeps r = 0.53
    ((2560, 1600), "llava-next", 2),
    ((4032, 3024), "qwen2-vl", 1),  # native resolution needs every pixel
    ((1920, 1080), "llava-next", 2),  # canvas r = 0.7, squashed thumbnail 0.62: predicted 1.08/255 at 1/2
    ((1920, 1080), "llava-onevision", 1),  # its 1920×1152 canvas needs every pixel
])
def test_draft_factor_follows_what_the_views_need(size, strategy, k):
    assert _draft_factor(gridvlm.plan(size, strategy)) == k


def test_predicted_draft_error_stays_in_budget():
    """Every plan's chosen scale keeps the curve-weighted error within DRAFT_ERROR_BUDGET and never upsamples."""
    for size in ((5120, 2880), (4032, 3024), (2560, 1600), (1920, 1080), (1622, 2880), (800, 4000)):
        for strategy in gridvlm.list_strategies():
            plan = gridvlm.plan(size, strategy)
            k = _draft_factor(plan)
            needs = _view_needs(plan)
            total = sum(px for _, _, px in needs)
            assert all(r * k <= 1 for r, _, _ in needs) or k == 1
            if k > 1:
                assert sum(c * _draft_error(r * k) for r, c, _ in needs) / total <= DRAFT_ERROR_BUDGET


def test_banded_resize_joins_without_seams():
    """A resize split into horizontal bands (fast path, both cores) is the single resize, up to rounding."""
    image = photo_like(1500, 1000, seed=5)
    whole = np.asarray(image.resize((700, 450), Image.Resampling.BICUBIC, box=(10, 20, 1490, 980),
                                    reducing_gap=None)).astype(int)
    for bands in (2, 3):
        got = np.concatenate([np.asarray(image.resize((700, r.stop - r.start), Image.Resampling.BICUBIC,
                                                       box=(10, 20 + r.start * 960 / 450, 1490, 20 + r.stop * 960 / 450)))
                              for r in _split(450, bands)]).astype(int)
        assert np.abs(got - whole).max() <= 1
    banded = _resize(image, (700, 450), Image.Resampling.BICUBIC, (10, 20, 1490, 980), exact=False)
    single = np.asarray(image.resize((700, 450), Image.Resampling.BICUBIC, box=(10, 20, 1490, 980),
                                     reducing_gap=2.0)).astype(int)
    assert banded.shape == (450, 700, 3) and np.abs(banded.astype(int) - single).mean() < 0.5


# ----------------------------------------------------------------------------------------- app preview


@pytest.mark.parametrize("size, orientation", [((4032, 3024), 1), ((3024, 4032), 1), ((2400, 1200), 6),
                                               ((900, 600), 1)])
def test_preview_has_the_thumbnail_size_and_looks_the_same(size, orientation):
    stored = photo_like(*size, seed=6)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(stored, exif=exif.tobytes())
    full = gridvlm.load_image(data)
    expected = full.copy()
    expected.thumbnail((1024, 1024), Image.Resampling.BILINEAR)
    got = load_preview(data, 1024)
    assert got.size == expected.size == preview_size(full.size, 1024) and got.mode == "RGB"
    assert np.abs(np.asarray(got, float) - np.asarray(expected, float)).mean() <= 3  # display, not model input


def test_preview_decodes_at_the_smallest_dct_scale_that_still_covers_it(monkeypatch):
    data = jpeg(photo_like(4032, 3024, seed=7))
    loaded = []
    original = Image.Image.load

    def spy(self):
        result = original(self)
        loaded.append(self.size)
        return result

    monkeypatch.setattr(Image.Image, "load", spy)
    load_preview(data, 1024)
    assert (2016, 1512) in loaded and (4032, 3024) not in loaded  # 1/2: 2016 ≥ 1024 > 1008 (1/4)

"""Ovis2, DeepSeek-OCR and InternVL's transformers class, checked against their references at test time.

* ``ovis2`` (variant "transformers"): transformers' own `get_min_tile_covering_grid`,
  `Ovis2ImageProcessorPil.crop_image_to_patches` (grid, views, tile boxes on the canvas) and `Ovis2Processor`
  (image and marker tokens counted in its `input_ids`) on a few hundred random sizes; `pixel_values` of the real
  PIL processor within 1/255 on a few sizes.
* ``ovis2`` (variant "original", AIDC-AI/Ovis remote code, not in transformers): its covering grid is the same
  rule as transformers' helper *before* the installed processor transposes it, so the original's (rows, cols)
  must equal `get_min_tile_covering_grid` itself on the same sizes; its views are checked against PIL doing what
  `preprocess_image` does (crop, resize to long side 448 / short side int(short/long·448), centre on the mean
  colour). The public vectors check the rest (tests/test_vectors_2.py).
* ``deepseek-ocr`` (remote code, not in transformers): checked against the public vectors and, here, its views
  against PIL doing what `tokenize_with_images` / `dynamic_preprocess` do (ImageOps.pad to base² in grey
  127; tiny/small squash to image² first; Gundam tiles = image.resize((640·cols, 640·rows)).crop(...)).
* ``internvl``: `InternVLProcessor` + `GotOcr2ImageProcessorPil` (image tokens and the <img></img> markers in
  its `input_ids`, views, grid) on a few hundred sizes; its pixels are already compared in test_pixels_reference.
"""

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import gridvlm
from gridvlm import pixel_values, views

import hf_reference_f5 as hf  # noqa: E402  (tests/ is on sys.path under pytest)
from images import photo_like

pytestmark = pytest.mark.slow  # a few hundred sizes through transformers' own code


def random_sizes(n, seed, max_side=8000, max_aspect=150):
    rng = random.Random(seed)
    sizes = []
    while len(sizes) < n:
        long = rng.randint(1, max_side)
        short = max(1, round(long / rng.uniform(1, max_aspect)))
        sizes.append((long, short) if rng.random() < 0.5 else (short, long))
    for t in (448, 640):  # tile multiples and their neighbours, where covering ratios and ties turn
        for k in (1, 2, 3):
            sizes += [(k * t, k * t), (k * t + 1, k * t), (k * t - 1, 2 * k * t), (2 * k * t, k * t + 1)]
    return sizes


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ------------------------------------------------------------------------------------------------------- Ovis2


@pytest.mark.parametrize("max_tiles", [9, 4])
def test_ovis2_geometry_equals_transformers(max_tiles):
    for w, h in random_sizes(250, 11):
        ref = hf.ovis2_geometry(w, h, max_tiles=max_tiles)
        plan = gridvlm.plan((w, h), "ovis2", max_tiles=max_tiles)
        assert plan.grid == ref["grid"], (w, h)
        assert plan.num_views == ref["num_views"]
        assert [v.input_size for v in plan.views] == ref["view_sizes"]
        assert plan.canvas_size == ref["canvas_size"]
        assert [t.canvas_box for t in plan.tiles] == ref["tile_boxes"]
        assert plan.token_count == 256 * ref["num_views"]
        # the original reads the same covering grid as (rows, cols); the installed processor transposes it
        original = gridvlm.plan((w, h), "ovis2", variant="original", max_tiles=max_tiles)
        assert original.grid == ref["covering_grid"], (w, h)


def test_ovis2_tokens_equal_the_processors_input_ids():
    for w, h in random_sizes(120, 12):
        ref = hf.ovis2_processor_tokens(w, h)
        plan = gridvlm.plan((w, h), "ovis2")
        assert plan.grid == ref["grid"], (w, h)
        assert plan.num_views == ref["num_views"]
        assert [v.input_size for v in plan.views] == ref["view_sizes"]
        assert plan.token_count == ref["image_tokens"]
        assert plan.text_tokens == ref["markers"]


@pytest.mark.parametrize("size", [(1024, 768), (500, 800), (300, 200), (1900, 333)])
def test_ovis2_pixel_values_equal_the_pil_processor(size):
    image = photo_like(*size, seed=3, text=True)
    plan = gridvlm.plan(image, "ovis2")
    ours = pixel_values(image, plan, exact=True)
    theirs = torch.from_numpy(hf.ovis2_pixel_values(image))
    assert ours.shape == theirs.shape
    std = torch.tensor(gridvlm.strategy_info("ovis2").pixels.normalisation[1]).view(3, 1, 1)
    assert float(((ours - theirs).abs() * std).max()) <= 1 / 255


def _mean_rgb():
    mean = gridvlm.strategy_info("ovis2").pixels.normalisation[0]
    return tuple(round(255 * m) for m in mean)


def _ovis2_original_view(crop: Image.Image, side: int = 448) -> np.ndarray:
    """What preprocess_image's _preprocess makes of one crop, in uint8 (its padding is 0 after normalising)."""
    w, h = crop.size
    if w == h:
        nw = nh = side
    elif w > h:
        nw, nh = side, int(h / w * side)
    else:
        nw, nh = int(w / h * side), side
    out = Image.new("RGB", (side, side), _mean_rgb())
    out.paste(crop.resize((nw, nh), Image.Resampling.BICUBIC), ((side - nw) // 2, (side - nh) // 2))
    return np.asarray(out, dtype=np.int16)


@pytest.mark.parametrize("size", [(1024, 768), (100, 900), (1200, 300)])
def test_ovis2_original_views_follow_preprocess_image(size):
    image = photo_like(*size, seed=4)
    plan = gridvlm.plan(image, "ovis2", variant="original")
    crops = [image.crop(tuple(int(v) for v in t.box)) for t in plan.tiles]
    expected = [image, *crops] if len(crops) > 1 else crops
    ours = views(image, plan, exact=True)
    assert len(ours) == len(expected)
    for got, crop in zip(ours, expected):
        diff = np.abs(np.asarray(got, dtype=np.int16) - _ovis2_original_view(crop))
        assert diff.max() <= 1, (size, diff.max())


# ------------------------------------------------------------------------------------------------- DeepSeek-OCR


def _deepseek_expected(image: Image.Image, mode: str, plan) -> list[np.ndarray]:
    base, tile, crop = {"tiny": (512, 512, False), "small": (640, 640, False), "base": (1024, 1024, False),
                        "large": (1280, 1280, False), "gundam": (1024, 640, True)}[mode]
    source = image.resize((tile, tile)) if tile <= 640 and not crop else image
    global_view = ImageOps.pad(source, (base, base), color=(127, 127, 127))
    if plan.thumbnail is None:
        return [np.asarray(global_view)]
    rows, cols = plan.grid
    resized = image.resize((tile * cols, tile * rows))
    tiles = [resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows)
             for c in range(cols)]
    return [np.asarray(v) for v in (*tiles, global_view)]


@pytest.mark.parametrize("mode", ["tiny", "small", "base", "large", "gundam"])
@pytest.mark.parametrize("size", [(1024, 768), (300, 500), (700, 90)])
def test_deepseek_ocr_views_follow_the_published_pipeline(mode, size):
    image = photo_like(*size, seed=5)
    plan = gridvlm.plan(image, "deepseek-ocr", mode=mode)
    expected = _deepseek_expected(image, mode, plan)
    ours = views(image, plan, exact=True)
    assert len(ours) == len(expected)
    for got, want in zip(ours, expected):
        assert np.abs(np.asarray(got, dtype=np.int16) - want.astype(np.int16)).max() <= 1, (mode, size)
    values = pixel_values(image, plan, exact=True)
    first = torch.from_numpy(expected[0].astype(np.float32) / 255).permute(2, 0, 1)
    assert float((values[0] * 0.5 + 0.5 - first).abs().max()) <= 1 / 255  # ImageTransform: mean = std = 0.5


def test_deepseek_ocr_tokens_follow_get_num_image_tokens():
    """deepseek_ocr.py get_num_image_tokens L61-106, re-read: h·(w+1) + tiles + 1 with q = ceil(base/16/4)."""
    for w, h in random_sizes(300, 13):
        plan = gridvlm.plan((w, h), "deepseek-ocr")
        cols, rows = (plan.grid[1], plan.grid[0]) if plan.thumbnail is not None else (1, 1)
        local = (rows * 10) * (cols * 10 + 1) if cols * rows > 1 else 0
        assert plan.token_count == 16 * 17 + local + 1
        assert (plan.thumbnail is not None) == (w > 640 or h > 640)
        assert 2 <= cols * rows <= 6 or plan.thumbnail is None


# ------------------------------------------------------------------------------------------------------ InternVL


@pytest.mark.parametrize("max_tiles", [12, 6])
def test_internvl_equals_internvl_processor(max_tiles):
    for w, h in random_sizes(150, 14):
        ref = hf.internvl_processor_tokens(w, h, max_tiles=max_tiles)
        plan = gridvlm.plan((w, h), "internvl", max_tiles=max_tiles)
        assert plan.grid == ref["grid"], (w, h)
        assert plan.num_views == ref["num_views"]
        assert [v.input_size for v in plan.views] == ref["view_sizes"]
        assert plan.token_count == ref["image_tokens"]
        assert plan.text_tokens == ref["markers"] == 2

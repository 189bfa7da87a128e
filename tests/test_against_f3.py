"""gemma3, gemma4, paligemma, pixtral, mistral3 and idefics2 equal transformers' own code, run at test time.

`hf_reference_f3` calls transformers' size functions and processor methods (see its docstring) on a few hundred
random sizes per family plus the boundaries where their rules turn (Pan & Scan's 1.2 ratio and 256-px crops,
the longest edges, Idefics2's 378/980 band): grid, views (boxes and input sizes), image tokens and marker
tokens as ids in `input_ids` (processors built offline with a local word-level tokenizer), refusals, and
`pixel_values(exact=True)` within 1/255 of the PIL processors on a few sizes. All of these image processors have
PIL backends. PixtralProcessor's module imports one helper from the torchvision backend module; without
torchvision, hf_reference_f3 registers that module name holding the PIL module's copy of the helper, so the
processor's own code runs (see `_import_pixtral_processor`).
"""

import random

import numpy as np
import pytest

import gridvlm
from gridvlm.pixels import pixel_values
from images import photo_like

import hf_reference_f3 as hf  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.slow  # a few hundred sizes through transformers' own code

TOLERANCE = 1 / 255


def random_sizes(n, seed, max_side=8000, extra=()):
    rng = random.Random(seed)
    sizes = []
    while len(sizes) < n:
        long = int(round(10 ** rng.uniform(0, np.log10(max_side))))
        short = max(1, round(long / rng.uniform(1, 200)))
        sizes.append((long, short) if rng.random() < 0.5 else (short, long))
    return sizes + list(extra)


GEMMA3_EDGES = [(1200, 1000), (1199, 1000), (1000, 1200), (2500, 1000), (600, 250), (600, 256), (767, 256),
                (768, 256), (1024, 255), (1537, 1024), (1536, 1024), (5000, 1000), (513, 256), (512, 256)]
PIXTRAL_EDGES = [(1024, 1024), (1025, 1024), (1540, 1540), (1541, 700), (16, 16), (17, 15), (27, 28), (28, 27),
                 (29, 29), (10000, 50), (50, 10000), (10000, 70), (1, 1), (1, 200), (200, 1)]
IDEFICS2_EDGES = [(980, 980), (981, 980), (980, 981), (378, 377), (1, 1), (1, 500), (500, 1), (2, 2), (1960, 2),
                  (3, 1000), (1000, 3), (10000, 50)]


def _close(ours, theirs, mean, std):
    """ours: (3, h, w) torch tensor; theirs: (3, h, w) numpy, both normalised with mean/std: equal within 1/255."""
    a = ours.numpy() * np.array(std, dtype=np.float32).reshape(3, 1, 1) + np.array(mean, dtype=np.float32).reshape(3, 1, 1)
    b = theirs * np.array(std, dtype=np.float32).reshape(3, 1, 1) + np.array(mean, dtype=np.float32).reshape(3, 1, 1)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= TOLERANCE + 1e-6


def _recipe_norm(plan):
    return gridvlm.strategy_info(plan.strategy).pixel_recipe(plan).normalisation


# ------------------------------------------------------------------------------------------------ Gemma 3

@pytest.mark.parametrize("pan_and_scan", [False, True])
def test_gemma3_geometry_and_tokens(pan_and_scan):
    for w, h in random_sizes(300, 31, extra=GEMMA3_EDGES):
        ref = hf.gemma3_geometry(w, h, pan_and_scan)
        plan = gridvlm.plan((w, h), "gemma3", pan_and_scan=pan_and_scan)
        assert plan.grid == ref["grid"], (w, h)
        assert plan.num_views == ref["num_views"]
        assert plan.token_count == ref["token_count"]
        assert plan.text_tokens == ref["text_tokens"]
        if ref["crop_boxes"]:
            assert [tuple(int(v) for v in t.box) for t in plan.tiles] == ref["crop_boxes"]
            assert plan.thumbnail_position == "first" and plan.thumbnail.box == (0.0, 0.0, w, h)
        assert [v.input_size for v in plan.views] == [(896, 896)] * plan.num_views
        # the quirk the plan's note reports: the processor's count helper ignores Pan & Scan
        assert ref["tokens_mm"] == 256
        assert bool(plan.notes) == (plan.token_count != ref["tokens_mm"])


@pytest.mark.parametrize("size,pan_and_scan", [((1024, 768), True), ((300, 900), True), ((640, 480), False)])
def test_gemma3_processor_pixels_and_input_ids(size, pan_and_scan):
    image = photo_like(*size, seed=3)
    ref = hf.gemma3_processor_run(image, pan_and_scan)
    plan = gridvlm.plan(size, "gemma3", pan_and_scan=pan_and_scan)
    assert plan.token_count == ref["token_count"] and plan.text_tokens == ref["text_tokens"]
    ours = pixel_values(image, plan, exact=True)
    assert ours.shape[0] == ref["pixel_values"].shape[0] == plan.num_views
    for a, b in zip(ours, ref["pixel_values"]):
        _close(a, b, *_recipe_norm(plan))


# ------------------------------------------------------------------------------------------------ Gemma 4

@pytest.mark.parametrize("max_soft_tokens", [70, 140, 280, 560, 1120])
def test_gemma4_geometry_and_tokens(max_soft_tokens):
    for w, h in random_sizes(120, 41, extra=[(8000, 30), (30, 8000), (1, 1), (10000, 50)]):
        ref = hf.gemma4_geometry(w, h, max_soft_tokens)
        if "error" in ref:
            with pytest.raises(gridvlm.PlanError):
                gridvlm.plan((w, h), "gemma4", max_soft_tokens=max_soft_tokens)
            continue
        plan = gridvlm.plan((w, h), "gemma4", max_soft_tokens=max_soft_tokens)
        assert plan.tiles[0].input_size == ref["resized_hw"][::-1], (w, h)
        assert plan.token_count == ref["num_soft_tokens"] == ref["token_count"] == ref["tokens_mm"]
        assert plan.text_tokens == ref["text_tokens"] == 2


@pytest.mark.parametrize("size", [(1024, 768), (100, 700), (768, 768)])
def test_gemma4_pixels(size):
    image = photo_like(*size, seed=4)
    plan = gridvlm.plan(size, "gemma4")
    _close(pixel_values(image, plan, exact=True)[0], hf.gemma4_pixels(image), *_recipe_norm(plan))


# ------------------------------------------------------------------------------------------------ PaliGemma

@pytest.mark.parametrize("image_size", [224, 448, 896])
def test_paligemma(image_size):
    image = photo_like(500, 300, seed=5)
    ref = hf.paligemma_processor_run(image, image_size)
    plan = gridvlm.plan((500, 300), "paligemma", image_size=image_size)
    assert plan.token_count == ref["token_count"] == (image_size // 14) ** 2
    _close(pixel_values(image, plan, exact=True)[0], ref["pixel_values"][0], *_recipe_norm(plan))


# ------------------------------------------------------------------------------------------------ Pixtral / Mistral 3

PIXTRAL_PARAMS = {
    "pixtral": dict(longest_edge=1024, patch_size=16, spatial_merge_size=1, resize_patch_size=16),
    "mistral3": dict(longest_edge=1540, patch_size=14, spatial_merge_size=2, resize_patch_size=14),
}


@pytest.mark.parametrize("name", ["pixtral", "mistral3"])
def test_pixtral_geometry_and_tokens(name):
    params = PIXTRAL_PARAMS[name]
    for w, h in random_sizes(300, 51, max_side=10000, extra=PIXTRAL_EDGES):
        ref = hf.pixtral_geometry(w, h, **params)
        if "error" in ref:
            with pytest.raises(gridvlm.PlanError):
                gridvlm.plan((w, h), name)
            continue
        plan = gridvlm.plan((w, h), name)
        assert plan.tiles[0].input_size == ref["resized_hw"][::-1], (w, h)
        assert plan.token_count == ref["token_count"], (w, h)
        assert plan.text_tokens == ref["text_tokens"], (w, h)


@pytest.mark.parametrize("name,size", [("pixtral", (1024, 768)), ("pixtral", (300, 170)), ("mistral3", (1024, 768)),
                                       ("mistral3", (2000, 600))])
def test_pixtral_pixels(name, size):
    image = photo_like(*size, seed=6)
    ref = hf.pixtral_processor_run(image, **PIXTRAL_PARAMS[name])
    plan = gridvlm.plan(size, name)
    assert plan.tiles[0].input_size == ref["image_sizes"][::-1]
    _close(pixel_values(image, plan, exact=True)[0], ref["pixel_values"][0], *_recipe_norm(plan))


def test_pixtral_processor_input_ids():
    """Through PixtralProcessor.__call__ the ids equal the plan for Pixtral. For Mistral 3 the processor passes
    patch_size · spatial_merge_size (28) to the image processor, so it rounds sides to 28 px, not the image
    processor's 14 (gridvlm: resize_patch_size=28 reproduces that call path)."""
    for name, size in (("pixtral", (1024, 768)), ("pixtral", (333, 77)), ("mistral3", (1024, 768))):
        image = photo_like(*size, seed=7)
        ref = hf.pixtral_processor_run(image, **PIXTRAL_PARAMS[name], through_processor=True)
        extra = {"resize_patch_size": 28} if name == "mistral3" else {}
        plan = gridvlm.plan(size, name, **extra)
        assert plan.tiles[0].input_size == ref["image_sizes"][::-1]
        if name == "mistral3":  # the default plan says so in a note
            assert any("PixtralProcessor.__call__" in n for n in gridvlm.plan(size, name).notes)
        assert (plan.token_count, plan.text_tokens) == (ref["token_count"], ref["text_tokens"])


# ------------------------------------------------------------------------------------------------ Idefics2

@pytest.mark.parametrize("split", [False, True])
def test_idefics2_geometry(split):
    for w, h in random_sizes(300, 61, extra=IDEFICS2_EDGES):
        ref = hf.idefics2_geometry(w, h, split)
        if "error" in ref:
            with pytest.raises(gridvlm.PlanError):
                gridvlm.plan((w, h), "idefics2", do_image_splitting=split)
            continue
        plan = gridvlm.plan((w, h), "idefics2", do_image_splitting=split)
        assert plan.num_views == ref["num_views"]
        assert [v.input_size for v in plan.views] == ref["view_sizes"], (w, h)
        for view, box, (sh, sw) in zip(plan.views, ref["view_boxes"], ref["view_shapes"]):
            x0, y0, x1, y1 = (int(v) for v in view.box)
            assert (y1 - y0, x1 - x0) == (sh, sw), (w, h)
            assert box is None or (x0, y0, x1, y1) == box, (w, h)


@pytest.mark.parametrize("split,size", [(False, (1024, 768)), (True, (1024, 768)), (True, (500, 800))])
def test_idefics2_processor_pixels_and_input_ids(split, size):
    image = photo_like(*size, seed=8)
    ref = hf.idefics2_processor_run(image, split)
    plan = gridvlm.plan(size, "idefics2", do_image_splitting=split)
    assert plan.token_count == ref["token_count"] and plan.text_tokens == ref["text_tokens"]
    ours = pixel_values(image, plan, exact=True)
    assert len(ours) == len(ref["pixel_values"]) == plan.num_views
    for view, a, b, mask in zip(plan.views, ours, ref["pixel_values"], ref["pixel_attention_mask"]):
        w, h = view.input_size
        assert mask.sum() == w * h  # the processor zero-pads every view to the largest one
        _close(a, b[:, :h, :w], *_recipe_norm(plan))

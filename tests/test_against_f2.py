"""gridvlm equals transformers' own code, run at test time, for Mllama, Llama 4, Aya Vision, Cohere2-Vision,
DeepSeek-OCR-2 and Perception-LM, on a few hundred random and boundary sizes each (see hf_reference_f2).

- Mllama, Aya Vision, DeepSeek-OCR-2 (PIL backends): grid, canvas / resized size, view sizes, the global view's
  placement, visual tokens from the processor's expansion, and on a few sizes the real processors: image tokens
  in `input_ids` (tokenizers trained here) and `pixel_values` within 1/255 of `gridvlm.pixel_values(exact=True)`.
- Llama 4, Cohere2-Vision, Perception-LM: their image processors need torchvision, which cannot be installed
  here, so the comparison is with their pure size functions (Llama 4: `_preprocess`'s own size decisions on
  shape-only tensors) and the processors' prompt expansion; their pixels are not compared (the torchvision
  resize, and Llama 4's bfloat16 normalisation, are not what gridvlm's PIL renderer does).
"""

import os

import numpy as np
import pytest

import gridvlm

import hf_reference_f2 as hf  # noqa: E402  (tests/ is on sys.path under pytest)
from images import photo_like
from test_against_transformers import random_sizes

pytestmark = pytest.mark.slow  # a few hundred sizes through transformers' own code

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sizes(n, seed, tiles):
    """random_sizes' random and 336/384/448/364 boundary sizes, plus this family's tile multiples ± 1."""
    out = random_sizes(n, seed)
    for t in tiles:
        for k in (1, 2, 3, 4):
            out += [(k * t, t), (t, k * t), (k * t + 1, t), (t - 1, k * t), (k * t, k * t - 1), (2 * k * t, t + 1)]
    out += [(1, 1), (1, 200), (200, 1), (2, 3)]
    return out


def test_mllama():
    for w, h in sizes(250, 11, (560,)):
        ref = hf.mllama_geometry(w, h)
        plan = gridvlm.plan((w, h), "mllama")
        assert plan.grid == ref["grid"], (w, h)
        assert plan.canvas_size == ref["canvas_size"], (w, h)
        assert plan.content_box == (0, 0, *ref["resized_wh"]), (w, h)
        assert f"aspect_ratio_id {ref['aspect_ratio_id']} " in plan.notes[0]
        assert plan.token_count == 1601 * plan.grid[0] * plan.grid[1]
    for max_tiles in (1, 2, 3, 6):
        for w, h in random_sizes(30, 12):
            ref = hf.mllama_geometry(w, h, max_tiles=max_tiles)
            plan = gridvlm.plan((w, h), "mllama", max_image_tiles=max_tiles)
            assert (plan.grid, plan.content_box) == (ref["grid"], (0, 0, *ref["resized_wh"])), (w, h, max_tiles)


@pytest.mark.parametrize("to_max", [False, True])
def test_llama4(to_max):
    # the last four: get_max_res_without_distortion's float32 tensor scale floors one pixel away from float64
    float32_cases = [(7260, 2420), (2862, 954), (1896, 1106), (3632, 4767)]
    for w, h in sizes(200 if not to_max else 80, 13, (336,)) + float32_cases:
        ref = hf.llama4_geometry(w, h, resize_to_max_canvas=to_max)
        plan = gridvlm.plan((w, h), "llama4", resize_to_max_canvas=to_max)
        assert plan.grid == ref["grid"], (w, h)
        assert plan.canvas_size == ref["canvas_size"], (w, h)
        assert plan.content_box == (0, 0, *ref["resized_wh"]), (w, h)
        assert (plan.num_views, plan.token_count, plan.text_tokens) == (
            ref["num_views"], ref["token_count"], ref["text_tokens"]), (w, h)


def test_aya_vision():
    for w, h in sizes(250, 14, (364,)):
        ref = hf.aya_geometry(w, h)
        plan = gridvlm.plan((w, h), "aya-vision")
        assert plan.grid == ref["grid"], (w, h)
        assert [v.input_size for v in plan.views] == ref["view_sizes"]
        assert (plan.num_views, plan.token_count, plan.text_tokens) == (
            ref["num_views"], ref["token_count"], ref["text_tokens"]), (w, h)


def test_cohere2_vision():
    for w, h in sizes(300, 15, (512,)):
        ref = hf.cohere2_geometry(w, h)
        plan = gridvlm.plan((w, h), "cohere2-vision")
        assert (plan.grid, plan.num_views, plan.token_count, plan.text_tokens) == (
            ref["grid"], ref["num_views"], ref["token_count"], ref["text_tokens"]), (w, h)
    for max_tiles in (1, 4, 20):
        for w, h in random_sizes(30, 16):
            ref = hf.cohere2_geometry(w, h, max_tiles=max_tiles)
            assert gridvlm.plan((w, h), "cohere2-vision", max_tiles=max_tiles).grid == ref["grid"], (w, h)


def test_deepseek_ocr2():
    for w, h in sizes(150, 17, (768, 1024)):
        ref = hf.deepseek_ocr2_geometry(w, h)
        plan = gridvlm.plan((w, h), "deepseek-ocr-2")
        assert plan.grid == ref["grid"], (w, h)
        assert [v.input_size for v in plan.views] == ref["view_sizes"], (w, h)
        glob = plan.views[-1]
        assert tuple(int(v) for v in glob.content_box) == ref["global_content"], (w, h)
        assert (plan.num_views, plan.token_count) == (ref["num_views"], ref["token_count"]), (w, h)


def test_perception_lm():
    for w, h in sizes(300, 18, (448,)):
        ref = hf.perception_lm_geometry(w, h)
        plan = gridvlm.plan((w, h), "perception-lm")
        assert (plan.grid, plan.num_views, plan.token_count) == (ref["grid"], ref["num_views"], ref["token_count"]), \
            (w, h)
    for max_tiles in (1, 4, 9, 16):
        for w, h in random_sizes(30, 19):
            ref = hf.perception_lm_geometry(w, h, max_num_tiles=max_tiles)
            assert gridvlm.plan((w, h), "perception-lm", max_num_tiles=max_tiles).grid == ref["grid"], (w, h)


def _close(ours, theirs, std):
    """Within 1/255 after de-normalising (x · std), per value."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape
    scale = np.asarray(std, dtype=np.float64).reshape(3, 1, 1)
    assert np.max(np.abs(ours - theirs) * scale) <= 1 / 255 + 1e-6


@pytest.mark.parametrize("name,run,sizes_wh", [
    ("mllama", hf.mllama_run, [(700, 300), (300, 1300), (1200, 1250)]),
    ("aya-vision", hf.aya_run, [(700, 300), (200, 150), (365, 1100)]),
    ("deepseek-ocr-2", hf.deepseek_ocr2_run, [(1000, 300), (500, 700), (900, 1700)]),
])
def test_pixels_and_input_ids(name, run, sizes_wh):
    std = gridvlm.strategy_info(name).pixels.normalisation[1]
    for i, (w, h) in enumerate(sizes_wh):
        image = photo_like(w, h, seed=i)
        ref = run(image)
        plan = gridvlm.plan((w, h), name)
        ours = gridvlm.pixel_values(image, plan, exact=True)
        ours = list(ours) if not isinstance(ours, list) else ours
        theirs = list(ref["pixel_values"])
        assert len(ours) == len(theirs) == plan.num_views
        for a, b in zip(ours, theirs):
            _close(a.numpy(), b, std)
        expected = 1 if name == "mllama" else plan.token_count
        assert ref["image_tokens"] == expected
        if name == "mllama":
            assert f"aspect_ratio_id {ref['aspect_ratio_id']} " in plan.notes[0]

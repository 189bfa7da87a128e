"""The Qwen family, Kimi-VL and Fuyu equal transformers' own code, run at test time (`hf_reference_f1`).

* qwen2.5-vl, qwen3-vl, glm-4.1v, paddleocr-vl: each family's own `smart_resize` and its PIL processor's resize
  on ~300 random and tie/boundary sizes (refusals included); on a few sizes the processor itself (local
  tokenizer): image pad tokens in `input_ids`, `image_grid_thw`, and `pixel_values` within 1/255 of
  `qwen_pixel_values(exact=True)`. Qwen2.5-VL's windows against `vision_utils.get_vision_window_index`.
* kimi-vl: transformers' `navit_resize` (kimi_k25). Its processor is torchvision-only (not installable here), so
  neither the class nor its pixels can be run; the function is compiled from transformers' source.
* fuyu: `FuyuImageProcessorPil.resize` and `FuyuProcessor._get_num_multimodal_tokens` (|SPEAKER| + |NEWLINE|
  positions); pixels against the PIL image processor. `FuyuProcessor.__call__` itself fails in transformers 5.23
  (see hf_reference_f1.fuyu_image), so input_ids cannot be read.
"""

import math
import random

import numpy as np
import pytest
import torch

import gridvlm
from gridvlm.pixels import pixel_values, qwen_pixel_values

import hf_reference_f1 as hf  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.slow  # a few hundred sizes through transformers' own code


def random_sizes(n, seed, ties=(28, 32)):
    """Log-uniform sides in 1…10000 with aspect up to 250 (some refused), plus rounding ties and boundaries."""
    rng = random.Random(seed)
    sizes = []
    while len(sizes) < n:
        w = round(math.exp(rng.uniform(0, math.log(10000))))
        h = round(math.exp(rng.uniform(0, math.log(10000))))
        if max(w, h) / min(w, h) <= 250:
            sizes.append((w, h))
    for f in ties:
        for k in (1, 2, 7, 36):
            sizes += [(f * k + f // 2, f * k + f // 2), (f * k + f // 2, f * k), (f * k - 1, f * k + 1), (f // 2, f * k)]
    sizes += [(1, 1), (1, 200), (200, 1), (1, 201), (27, 28), (28, 27), (7168, 7169), (10000, 50), (50, 10000)]
    return sizes


@pytest.mark.parametrize("name", list(hf.FAMILIES))
def test_resize_and_tokens(name):
    for w, h in random_sizes(300, 11):
        try:
            ref = hf.resize_geometry(name, w, h)
        except ValueError:
            with pytest.raises(gridvlm.PlanError):
                gridvlm.plan((w, h), name)
            continue
        plan = gridvlm.plan((w, h), name)
        assert ref["resized_hw"] == ref["processor_hw"]
        assert plan.tiles[0].input_size == ref["resized_hw"][::-1], (w, h)
        assert plan.token_count == ref["tokens"], (w, h)
        assert plan.grid == (1, 1) and plan.num_views == 1 and plan.text_tokens == 2


@pytest.mark.parametrize("name", list(hf.FAMILIES))
def test_processor_tokens_and_pixels(name):
    layout = {"paddleocr-vl": 1}.get(name)
    for k, (w, h) in enumerate([(300, 200), (97, 1000), (1024, 768), (20, 45)]):
        image = hf._random_image(w, h, k)
        ref = hf.processor_run(name, w, h, k)
        plan = gridvlm.plan(image, name)
        assert ref["image_tokens"] == plan.token_count
        patches, grid_thw = qwen_pixel_values(image, plan, exact=True)
        assert torch.equal(grid_thw, ref["grid_thw"])
        theirs = ref["pixel_values"].reshape(patches.shape)
        t = 1 if layout else 2
        p = plan.params["patch_size"]
        std = torch.tensor(gridvlm.strategy_info(name).pixels.normalisation[1])
        per_value_std = std.view(3, 1, 1, 1).expand(3, t, p, p).reshape(-1)
        assert float(((patches - theirs).abs() * per_value_std).max()) <= 1 / 255 + 1e-6, (name, w, h)


def test_qwen25_windows():
    for w, h in random_sizes(300, 12, ties=(28, 112)):
        if max(w, h) / min(w, h) > 200:
            continue
        plan = gridvlm.plan((w, h), "qwen2.5-vl")
        rw, rh = plan.tiles[0].input_size
        ref = [(min(x0, rw), min(y0, rh), min(x1, rw), min(y1, rh)) for x0, y0, x1, y1 in hf.window_boxes((rh, rw))]
        sx, sy = w / rw, h / rh
        expected = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in ref]
        assert len(plan.windows) == len(expected), (w, h)
        for a, e in zip(plan.windows, expected):
            assert a == pytest.approx(e, abs=1e-6), (w, h)


def test_kimi_navit_resize():
    navit_resize = hf.kimi_navit_resize()
    for w, h in random_sizes(300, 13, ties=(14, 28)) + [(7200, 100), (100, 7200), (20000 // 3, 9000)]:
        (nh, nw), (ph, pw) = navit_resize(h, w, 14, 2, 16384, 512)
        plan = gridvlm.plan((w, h), "kimi-vl")
        view = plan.tiles[0]
        assert view.input_size == (pw, ph), (w, h)
        assert view.content_box == (0.0, 0.0, float(nw), float(nh))
        assert plan.token_count == (ph // 28) * (pw // 28)


def test_fuyu_resize_and_tokens():
    for w, h in random_sizes(300, 14, ties=(30, 60)) + [(1920, 1080), (1921, 1080), (1920, 1081), (3840, 2161)]:
        if max(w, h) / min(w, h) > 200:
            continue
        ref = hf.fuyu_geometry(w, h)
        plan = gridvlm.plan((w, h), "fuyu")
        rh, rw = ref["resized_hw"]
        assert plan.tiles[0].content_box == (0.0, 0.0, float(rw), float(rh)), (w, h)
        rows = plan.tiles[0].token_grid[0]
        assert plan.token_count + rows == ref["tokens_with_newlines"], (w, h)  # |SPEAKER| and |NEWLINE| positions
        assert plan.text_tokens == rows + 1


def test_fuyu_pixels():
    for k, (w, h) in enumerate([(100, 70), (1000, 300), (2500, 900)]):
        image = hf._random_image(w, h, k)
        plan = gridvlm.plan(image, "fuyu")
        vw, vh = plan.tiles[0].input_size
        theirs = torch.from_numpy(np.ascontiguousarray(hf.fuyu_image(w, h, k)[:, :vh, :vw]))
        ours = pixel_values(image, plan, exact=True)[0]
        assert ours.shape == theirs.shape
        assert float((ours - theirs).abs().max()) * 0.5 <= 1 / 255 + 1e-6, (w, h)

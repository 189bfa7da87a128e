"""phi-4-multimodal, lfm2-vl and molmo2 equal transformers' own code, run at test time, on a few hundred random
sizes each (log-uniform 1…10,000 px a side, aspect ≤ 200) plus the tile-multiple boundaries where ties live.

Compared: grid, number and order of views (and their input sizes where the reference makes them), canvas,
crop windows, visual tokens, and the image / marker tokens in `input_ids` of each processor's own expansion
(see `hf_reference_f4`). All three image processors are torchvision backends with no PIL backend, and
torchvision cannot be installed here: their size/grid/mask/token methods run with only the pixel resampling
stubbed, so `pixel_values` are not compared (there is no PIL processor to compare them with).
phi-3.5-vision is remote code (not in transformers): it is checked by tests/test_vectors_2.py against the public
vectors and by a re-reading of microsoft/Phi-3.5-vision-instruct image_processing_phi3_v.py cited in
gridvlm/strategies/phi.py.
"""

import math
import os
import random

import pytest

import gridvlm

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hf_reference_f4 as hf  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.slow  # a few hundred sizes through transformers' own code


def random_sizes(n, seed, tiles=()):
    rng = random.Random(seed)
    sizes = []
    while len(sizes) < n:
        long = max(1, round(math.exp(rng.uniform(0, math.log(10_000)))))
        short = max(1, min(long, round(long / rng.uniform(1, 200))))
        sizes.append((long, short) if rng.random() < 0.5 else (short, long))
    for t in tiles:
        for k in (1, 2, 3):
            sizes += [(k * t, k * t), (k * t + 1, k * t), (k * t - 1, 2 * k * t), (2 * k * t, k * t + 1)]
    return sizes


@pytest.mark.parametrize("params,n", [({}, 200), ({"dynamic_hd": 4}, 60), ({"dynamic_hd": 12}, 60)])
def test_phi4_multimodal(params, n):
    for w, h in random_sizes(n, 11 + len(params) * 7 + params.get("dynamic_hd", 0), tiles=(448,)):
        ref = hf.phi4_geometry(w, h, **params)
        if "error" in ref:
            with pytest.raises(gridvlm.PlanError):
                gridvlm.plan((w, h), "phi-4-multimodal", **params)
            continue
        plan = gridvlm.plan((w, h), "phi-4-multimodal", **params)
        assert plan.grid == ref["grid"], (w, h)
        assert plan.num_views == ref["num_views"], (w, h)
        assert plan.canvas_size == ref["canvas_size"], (w, h)
        assert plan.token_count == ref["token_count"] == ref["input_ids_image_tokens"], (w, h)
        assert plan.text_tokens == 0


def test_phi4_multimodal_refuses_what_the_processor_refuses():
    for size in [(10000, 5), (5, 10000), (3000, 3), (1, 1000)]:
        assert "error" in hf.phi4_geometry(*size)
        with pytest.raises(gridvlm.PlanError, match="extreme"):
            gridvlm.plan(size, "phi-4-multimodal")


@pytest.mark.parametrize("params,n", [
    ({}, 300),
    ({"do_image_splitting": False}, 120),
    ({"min_tiles": 1, "max_tiles": 4}, 80),
    ({"use_thumbnail": False, "max_image_tokens": 128}, 80),
])
def test_lfm2_vl(params, n):
    for w, h in random_sizes(n, 21 + n, tiles=(512, 720, 730)):
        ref = hf.lfm2_geometry(w, h, **params)
        plan = gridvlm.plan((w, h), "lfm2-vl", **params)
        assert plan.grid == ref["grid"], (w, h)
        assert plan.num_views == ref["num_views"], (w, h)
        assert [v.input_size for v in plan.views] == ref["view_sizes"], (w, h)
        assert plan.token_count == ref["token_count"], (w, h)
        assert plan.text_tokens == ref["text_tokens"], (w, h)


@pytest.mark.parametrize("params,n", [({}, 300), ({"max_crops": 3}, 80), ({"max_crops": 12, "overlap_margin": 2}, 60)])
def test_molmo2(params, n):
    for w, h in random_sizes(n, 31 + n, tiles=(266, 378, 112)):
        ref = hf.molmo2_geometry(w, h, **params)
        plan = gridvlm.plan((w, h), "molmo2", **params)
        assert plan.grid == ref["grid"], (w, h)
        assert plan.num_views == ref["num_views"], (w, h)
        assert plan.canvas_size == ref["canvas_size"], (w, h)
        assert [list(t.canvas_box) for t in plan.tiles] == ref["crop_boxes_canvas"], (w, h)
        assert plan.token_count == ref["token_count"] == ref["grid_tokens"], (w, h)
        assert plan.text_tokens == ref["text_tokens"], (w, h)
        assert sum(t.token_count for t in plan.tiles) == plan.tokens["tiles"]

"""gridvlm equals transformers' own code, run at test time, on a few hundred random sizes per strategy.

`hf_reference` calls transformers' size functions, processors and model packing code (see its docstring).
"""

import random

import pytest

import gridvlm

import hf_reference as hf  # noqa: E402  (tests/ is on sys.path under pytest)


def random_sizes(n, seed, max_side=6000):
    rng = random.Random(seed)
    sizes = []
    while len(sizes) < n:
        long = rng.randint(1, max_side)
        short = max(1, round(long / rng.uniform(1, 150)))
        sizes.append((long, short) if rng.random() < 0.5 else (short, long))
    # boundaries where tie-breaks live: tile multiples and their neighbours
    for t in (336, 384, 448, 364):
        for k in (1, 2, 3):
            sizes += [(k * t, k * t), (k * t + 1, k * t), (k * t - 1, 2 * k * t), (2 * k * t, k * t + 1)]
    return sizes


def assert_same(plan, ref, *, boxes_key=None):
    assert plan.grid == tuple(ref["grid"])
    assert plan.num_views == ref["num_views"]
    assert plan.token_count == ref["token_count"]
    if "view_sizes" in ref:
        assert [v.input_size for v in plan.views] == [tuple(s) for s in ref["view_sizes"]]
    if boxes_key:
        assert [list(t.canvas_box) for t in plan.tiles] == [list(b) for b in ref[boxes_key]]


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_llava_15(mode):
    for w, h in random_sizes(150, 1):
        ref = hf.llava15_geometry(w, h, mode=mode)
        plan = gridvlm.plan((w, h), "llava-1.5", mode=mode)
        assert_same(plan, ref)
        if mode == "crop":
            assert plan.canvas_size == tuple(ref["resized_hw"][::-1])


def test_llava_next():
    for w, h in random_sizes(300, 2):
        ref = hf.llava_next_geometry(w, h)
        plan = gridvlm.plan((w, h), "llava-next")
        assert_same(plan, ref, boxes_key="tile_boxes_canvas")
        assert plan.canvas_size == tuple(ref["best_resolution_hw"][::-1])
        assert ref["tokens_model"] == ref["tokens_processor"] == plan.token_count


def test_llava_onevision():
    for w, h in random_sizes(200, 3):
        ref = hf.llava_onevision_geometry(w, h)
        plan = gridvlm.plan((w, h), "llava-onevision")
        assert_same(plan, ref, boxes_key="tile_boxes_canvas")
        assert ref["tokens_model"] == plan.token_count


@pytest.mark.parametrize("max_pixels", [12845056, 1003520])
def test_qwen2_vl(max_pixels):
    for w, h in random_sizes(300, 4):
        if max(w, h) / min(w, h) > 200:
            continue
        ref = hf.qwen2_vl_geometry(w, h, max_pixels=max_pixels)
        plan = gridvlm.plan((w, h), "qwen2-vl", max_pixels=max_pixels)
        assert plan.tiles[0].input_size == tuple(ref["resized_hw"][::-1])
        assert plan.token_count == ref["token_count"] == ref["tokens_processor"]


@pytest.mark.parametrize("family,preset", [("idefics3", {}), ("smolvlm", {}),
                                           ("smolvlm", {"longest_edge": 2048, "tile_size": 512, "tokens_per_tile": 64})])
def test_idefics3_and_smolvlm(family, preset):
    defaults = {"idefics3": (1456, 364, 169), "smolvlm": (1536, 384, 81)}[family]
    edge = preset.get("longest_edge", defaults[0])
    tile = preset.get("tile_size", defaults[1])
    tokens = preset.get("tokens_per_tile", defaults[2])
    for w, h in random_sizes(200, 5):
        ref = hf.idefics3_geometry(w, h, longest_edge=edge, tile_size=tile, tokens_per_tile=tokens, family=family)
        plan = gridvlm.plan((w, h), family, **preset)
        assert_same(plan, ref)
        if plan.thumbnail is not None:
            assert plan.canvas_size == tuple(ref["after_vision_encoder_resize_hw"][::-1])
            assert [list(t.canvas_box) for t in plan.tiles] == [list(b) for b in ref["tile_boxes"]]


@pytest.mark.parametrize("max_tiles", [12, 6])
def test_internvl(max_tiles):
    for w, h in random_sizes(300, 6):
        ref = hf.internvl_geometry(w, h, max_tiles=max_tiles)
        plan = gridvlm.plan((w, h), "internvl", max_tiles=max_tiles)
        assert_same(plan, ref)
        assert [list(t.canvas_box) for t in plan.tiles] == [list(b) for b in ref["tile_boxes"]]


def test_minicpm_v_46():
    for w, h in random_sizes(200, 7):
        ref = hf.minicpmv46_geometry(w, h)
        plan = gridvlm.plan((w, h), "minicpm-v", version="4.6")
        assert_same(plan, ref)
        assert [v.token_count for v in plan.views] == list(ref["tokens_per_view"])


def test_llava_onevision_multi_image():
    for w, h in random_sizes(60, 8):
        ref = hf.llava_onevision_geometry(w, h, multi_image=True)
        plan = gridvlm.plan((w, h), "llava-onevision", multi_image=True)
        assert_same(plan, ref)
        assert plan.token_count == ref["tokens_processor"]

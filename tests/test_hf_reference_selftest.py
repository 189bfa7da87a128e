"""Self-test of tests/hf_reference.py: the functions that run transformers' own code must reproduce the
transformers-backed variants of tests/data/vectors-public.json, and the fast geometry path must agree with
the real PIL image processors (small images only; the processors are slow)."""

from __future__ import annotations

import json
import math
import os
import random
import zlib
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

try:  # tests/ may become a package
    from . import hf_reference as R
except ImportError:
    import sys

    if str(Path(__file__).parent) not in sys.path:  # e.g. pytest --import-mode=importlib
        sys.path.insert(0, str(Path(__file__).parent))
    import hf_reference as R

VECTORS = json.loads((Path(__file__).parent / "data" / "vectors-public.json").read_text())["strategies"]


def _plain(x):
    """tuples -> lists, recursively (JSON shapes)."""
    return json.loads(json.dumps(x))


def _same(got, want) -> bool:
    got, want = _plain(got), _plain(want)
    if isinstance(want, float) or isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    return got == want


def _assert_all(label, pairs):
    bad = [f"  {name}: got {_plain(g)!r}, vector {_plain(w)!r}" for name, g, w in pairs if not _same(g, w)]
    assert not bad, f"{label}:\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------------------------
# variant -> (function, kwargs built from the vector's own `params`, expectations)
# ------------------------------------------------------------------------------------------------------------

def _llava15_kwargs(v, mode):
    return {"mode": mode, "image_size": v["params"]["image_size"], "patch_size": v["params"]["patch"]}


def _next_kwargs(v):
    p = v["params"]
    assert p["strategy"] == "default" and p["num_additional_image_tokens"] == 1
    return {"grid_pinpoints": p["pinpoints_hw"], "tile": p["tile"], "patch_size": p["patch"]}


def _ov_kwargs(v):
    p = v["params"]
    assert p["strategy"] == "full" and p["num_image_tokens"] == (p["tile"] // p["patch"]) ** 2
    return {"tile": p["tile"], "patch_size": p["patch"], "vision_aspect_ratio": p["vision_aspect_ratio"]}


def _qwen_kwargs(v):
    p = v["params"]
    assert p["factor"] == p["patch"] * p["merge"]
    return {"min_pixels": p["min_pixels"], "max_pixels": p["max_pixels"], "patch_size": p["patch"],
            "merge_size": p["merge"]}


def _idefics_kwargs(v, family):
    p = v["params"]
    return {"family": family, "longest_edge": p["size_longest_edge"], "tile_size": p["max_image_size"],
            "tokens_per_tile": p["image_seq_len"]}


def _internvl_kwargs(v):
    p = v["params"]
    return {"tile": p["tile"], "min_tiles": p["min_patches"], "max_tiles": p["max_patches"],
            "use_thumbnail": p["use_thumbnail"], "tokens_per_tile": p["tokens_per_tile"]}


def _minicpm_kwargs(v):
    p = v["params"]
    return {"max_slice_nums": p["max_slice_nums"], "scale_resolution": p["scale_resolution"],
            "patch_size": p["patch"], "downsample_mode": p["downsample_mode"]}


def _exp_llava15(c, g):
    _, h, w = c["pixel_values_shape"]
    pairs = [("grid", g["grid"], [1, 1]), ("num_views", g["num_views"], 1), ("token_count", g["token_count"], c["tokens"]),
             ("view_sizes", g["view_sizes"], [[w, h]]), ("pixel_values_shape", g["pixel_values_shape"], c["pixel_values_shape"])]
    if "padded_square" in c:
        pairs += [("padded_square", g["padded_square"], c["padded_square"]),
                  ("paste_offset_xy", g["paste_offset_xy"], c["paste_offset_xy"]),
                  ("image_box_in_336", g["image_box_in_view"], c["image_box_in_336"])]
    else:
        pairs += [("resized_hw", g["resized_hw"], c["resized_hw"]), ("crop_top_left", g["crop_top_left"], c["crop_top_left"]),
                  ("visible_box_in_original", g["visible_box_in_original"], c["visible_box_in_original"])]
    return pairs


def _exp_anyres(c, g):
    t = g["view_sizes"][0][0]
    pairs = [("grid", g["grid"], c["grid_rows_cols"]), ("num_views", g["num_views"], c["num_views_incl_global"]),
             ("num_views_from_processor", g["num_views_from_processor"], c["num_views_incl_global"]),
             ("token_count", g["token_count"], c["tokens_model"]),
             ("tokens_model", g["tokens_model"], c["tokens_model"]),
             ("tokens_processor", g["tokens_processor"], c["tokens_processor"]),
             ("view_sizes", g["view_sizes"], [[t, t]] * c["num_views_incl_global"]),
             ("canvas_size", g["canvas_size"], c["best_resolution_hw"][::-1]),
             ("best_resolution_hw", g["best_resolution_hw"], c["best_resolution_hw"]),
             ("resized_hw_inside_canvas", g["resized_hw_inside_canvas"], c["resized_hw_inside_canvas"]),
             ("pad_top_bottom_left_right", g["pad_top_bottom_left_right"], c["pad_top_bottom_left_right"]),
             ("tile_boxes_canvas", g["tile_boxes_canvas"], c["tile_boxes_canvas"]),
             ("unpadded_feature_hw", g["unpadded_feature_hw"], c["unpadded_feature_hw"]),
             ("token_breakdown", g["token_breakdown"], c["token_breakdown"])]
    if "image_sizes_hw" in c:
        pairs.append(("image_sizes_hw", g["image_sizes_hw"], c["image_sizes_hw"]))
    if "anyres_max_ratio" in c:
        pairs += [("anyres_max_ratio", g["anyres_max_ratio"], c["anyres_max_ratio"]),
                  ("final_feature_hw", g["final_feature_hw"], c["final_feature_hw_after_bilinear"])]
    else:
        pairs.append(("final_feature_hw", g["final_feature_hw"], c["unpadded_feature_hw"]))
    return pairs


def _exp_qwen(c, g):
    h, w = c["resized_hw"]
    return [("grid", g["grid"], [1, 1]), ("num_views", g["num_views"], 1), ("token_count", g["token_count"], c["tokens"]),
            ("view_sizes", g["view_sizes"], [[w, h]]), ("resized_hw", g["resized_hw"], c["resized_hw"]),
            ("resized_hw_processor", g["resized_hw_processor"], c["resized_hw"]),
            ("grid_thw", g["grid_thw"], c["grid_thw"]), ("merged_grid_hw", g["merged_grid_hw"], c["merged_grid_hw"]),
            ("num_patches", g["num_patches"], c["grid_thw"][1] * c["grid_thw"][2])]


def _exp_idefics(c, g):
    rows, cols = c["rows_cols"]
    h2, w2 = c["after_vision_encoder_resize_hw"]
    t = g["view_sizes"][-1][0]
    return [("grid", g["grid"], [rows, cols] if rows else [1, 1]), ("rows_cols", g["rows_cols"], c["rows_cols"]),
            ("num_views", g["num_views"], c["num_frames_incl_global"]),
            ("token_count", g["token_count"], c["image_tokens"]),
            ("view_sizes", g["view_sizes"], [[t, t]] * c["num_frames_incl_global"]),
            ("canvas_size", g["canvas_size"], [w2, h2]),
            ("after_longest_edge_resize_hw", g["after_longest_edge_resize_hw"], c["after_longest_edge_resize_hw"]),
            ("after_vision_encoder_resize_hw", g["after_vision_encoder_resize_hw"], c["after_vision_encoder_resize_hw"]),
            ("get_number_of_image_patches", g["get_number_of_image_patches"], c["get_number_of_image_patches"]),
            ("tile_boxes", g["tile_boxes"], c["tile_boxes"]),
            ("placeholder_tokens_total", g["placeholder_tokens_total"], c["placeholder_tokens_total"])] + (
        [("tokens_processor", g["tokens_processor"], c["placeholder_tokens_total"])] if "tokens_processor" in g else [])


def _exp_internvl(c, g):
    cols, rows = c["grid_cols_rows"]
    return [("grid", g["grid"], [rows, cols]), ("grid_cols_rows", g["grid_cols_rows"], c["grid_cols_rows"]),
            ("num_views", g["num_views"], c["num_tiles_incl_thumbnail"]),
            ("num_patches_processor", g["num_patches_processor"], c["num_tiles_incl_thumbnail"]),
            ("token_count", g["token_count"], c["image_tokens"]),
            ("canvas_size", g["canvas_size"], c["resized_wh"]), ("resized_wh", g["resized_wh"], c["resized_wh"]),
            ("tile_boxes", g["tile_boxes"], c["tile_boxes"]), ("thumbnail", g["thumbnail"], c["thumbnail"]),
            ("placeholder_tokens_total", g["placeholder_tokens_total"], c["placeholder_tokens_total"])]


def _exp_minicpm(c, g):
    rows, cols = c["grid_rows_cols"]
    ts = c["target_sizes_in_patches_hw"]
    return [("grid", g["grid"], [rows, cols] if rows else [1, 1]), ("grids_rows_cols", g["grids_rows_cols"], c["grid_rows_cols"]),
            ("num_views", g["num_views"], len(ts)), ("token_count", g["token_count"], c["image_tokens"]),
            ("view_sizes", g["view_sizes"], [[w * 14, h * 14] for h, w in ts]),
            ("source_hw", g["source_hw"], c["source_hw"]), ("target_sizes_in_patches_hw", g["target_sizes_in_patches_hw"], ts),
            ("tokens_per_view", g["tokens_per_view"], c["tokens_per_view"])]


SPECS = {
    "llava15_pad": (R.llava15_geometry, lambda v: _llava15_kwargs(v, "pad"), _exp_llava15),
    "llava15_crop": (R.llava15_geometry, lambda v: _llava15_kwargs(v, "crop"), _exp_llava15),
    "llava_next_hf": (R.llava_next_geometry, _next_kwargs, _exp_anyres),
    "llava_onevision_hf": (R.llava_onevision_geometry, _ov_kwargs, _exp_anyres),
    "qwen2_vl_hf_checkpoint": (R.qwen2_vl_geometry, _qwen_kwargs, _exp_qwen),
    "qwen2_vl_hf_classdefault": (R.qwen2_vl_geometry, _qwen_kwargs, _exp_qwen),
    "idefics3": (R.idefics3_geometry, lambda v: _idefics_kwargs(v, "idefics3"), _exp_idefics),
    "smolvlm_instruct": (R.idefics3_geometry, lambda v: _idefics_kwargs(v, "smolvlm"), _exp_idefics),
    "smolvlm2_256m": (R.idefics3_geometry, lambda v: _idefics_kwargs(v, "smolvlm"), _exp_idefics),
    "internvl_hf": (R.internvl_geometry, _internvl_kwargs, _exp_internvl),
    "minicpmv46_hf": (R.minicpmv46_geometry, _minicpm_kwargs, _exp_minicpm),
}

CASES = [(name, i) for name in SPECS for i in range(len(VECTORS[name]["cases"]))]


def test_every_transformers_variant_is_covered():
    hf_like = {k for k, v in VECTORS.items() if "transformers" in v["reference"] or k.endswith("_hf")}
    assert hf_like - set(SPECS) == set(), hf_like - set(SPECS)


def test_default_params_match_vectors():
    assert VECTORS["llava_next_hf"]["params"]["pinpoints_hw"] == R.LLAVA_NEXT_PINPOINTS
    assert R.ONEVISION_PINPOINTS == [[i * 384, j * 384] for i in range(1, 7) for j in range(1, 7)]
    assert VECTORS["qwen2_vl_hf_checkpoint"]["params"]["max_pixels"] == R.QWEN2_VL_CHECKPOINT_MAX_PIXELS
    assert VECTORS["qwen2_vl_hf_classdefault"]["params"]["max_pixels"] == R.QWEN2_VL_CLASS_DEFAULT_MAX_PIXELS
    for name, preset in (("idefics3", "idefics3"), ("smolvlm_instruct", "smolvlm"), ("smolvlm2_256m", "smolvlm2-256m")):
        p = VECTORS[name]["params"]
        assert R.IDEFICS3_PRESETS[preset] == (p["size_longest_edge"], p["max_image_size"], p["image_seq_len"])
    # the defaults of the geometry functions are the checkpoint values
    assert R.llava_next_geometry(1024, 768)["token_count"] == 2340
    assert R.llava_onevision_geometry(1024, 768)["token_count"] == 4725
    assert R.qwen2_vl_geometry(1024, 768)["token_count"] == 999
    assert R.idefics3_geometry(1024, 768)["token_count"] == 2197
    assert R.internvl_geometry(1024, 768)["token_count"] == 3328
    assert R.minicpmv46_geometry(1024, 768)["token_count"] == 315


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{VECTORS[n]['cases'][i]['size_wh'][0]}x{VECTORS[n]['cases'][i]['size_wh'][1]}" for n, i in CASES])
def test_geometry_reproduces_vector(name, index):
    variant = VECTORS[name]
    case = variant["cases"][index]
    fn, kwargs_of, expectations = SPECS[name]
    w, h = case["size_wh"]
    got = fn(w, h, **kwargs_of(variant))
    _assert_all(f"{name} {w}x{h}", expectations(case, got))


# ------------------------------------------------------------------------------------------------------------
# the real PIL processors (small sizes): vectors and geometry path
# ------------------------------------------------------------------------------------------------------------

RUNS = {
    "llava15_pad": (R.llava15_processor_run, lambda v: _llava15_kwargs(v, "pad")),
    "llava15_crop": (R.llava15_processor_run, lambda v: _llava15_kwargs(v, "crop")),
    "llava_next_hf": (R.llava_next_processor_run, _next_kwargs),
    "llava_onevision_hf": (R.llava_onevision_processor_run, _ov_kwargs),
    "qwen2_vl_hf_checkpoint": (R.qwen2_vl_processor_run, _qwen_kwargs),
    "qwen2_vl_hf_classdefault": (R.qwen2_vl_processor_run, _qwen_kwargs),
    "idefics3": (R.idefics3_processor_run, lambda v: _idefics_kwargs(v, "idefics3")),
    "smolvlm_instruct": (R.idefics3_processor_run, lambda v: _idefics_kwargs(v, "smolvlm")),
    "smolvlm2_256m": (R.idefics3_processor_run, lambda v: _idefics_kwargs(v, "smolvlm")),
    "internvl_hf": (R.internvl_processor_run, lambda v: {k: a for k, a in _internvl_kwargs(v).items() if k != "use_thumbnail"}),
    "minicpmv46_hf": (R.minicpmv46_processor_run, _minicpm_kwargs),
}

SMALL = [(n, i) for n in RUNS for i, c in enumerate(VECTORS[n]["cases"]) if max(c["size_wh"]) < 1000]


def _compare_run_with_geometry(label, run, geo):
    pairs = [("num_views", run["num_views"], geo["num_views"]), ("token_count", run["token_count"], geo["token_count"])]
    if "view_sizes" in run:
        pairs.append(("view_sizes", run["view_sizes"], geo["view_sizes"]))
    for key in ("grid_thw", "resized_hw", "rows_cols", "grid", "image_sizes_hw", "target_sizes_in_patches_hw",
                "tokens_per_view", "grids_rows_cols"):
        if key in run and key in geo:
            pairs.append((key, run[key], geo[key]))
    _assert_all(label, pairs)


@pytest.mark.parametrize("name,index", SMALL, ids=[f"{n}-{VECTORS[n]['cases'][i]['size_wh'][0]}x{VECTORS[n]['cases'][i]['size_wh'][1]}" for n, i in SMALL])
def test_processor_run_reproduces_vector(name, index):
    variant = VECTORS[name]
    case = variant["cases"][index]
    w, h = case["size_wh"]
    run_fn, kwargs_of = RUNS[name]
    run = run_fn(w, h, **kwargs_of(variant))
    geo_fn, geo_kwargs_of, expectations = SPECS[name]
    geo = geo_fn(w, h, **geo_kwargs_of(variant))
    _compare_run_with_geometry(f"{name} {w}x{h} processor vs geometry", run, geo)
    pairs = []
    if "pixel_values_shape" in case:  # llava-1.5: (3, h, w) per view
        pairs.append(("pixel_values_shape", run["pixel_values_shape"][1:], case["pixel_values_shape"]))
    if "grid_thw_from_processor" in case:
        pairs.append(("grid_thw", run["grid_thw"], case["grid_thw_from_processor"]))
    if "num_views_incl_global" in case:
        pairs += [("num_views", run["num_views"], case["num_views_incl_global"]),
                  ("token_count", run["token_count"], case["tokens_processor"])]
    if "num_frames_incl_global" in case:
        pairs += [("num_views", run["num_views"], case["num_frames_incl_global"]),
                  ("rows_cols", run["rows_cols"], case["rows_cols"]), ("token_count", run["token_count"], case["image_tokens"])]
    if "num_tiles_incl_thumbnail" in case:
        pairs += [("num_views", run["num_views"], case["num_tiles_incl_thumbnail"]),
                  ("token_count", run["token_count"], case["image_tokens"])]
    if "target_sizes_in_patches_hw" in case:
        pairs += [("target_sizes", run["target_sizes_in_patches_hw"], case["target_sizes_in_patches_hw"]),
                  ("token_count", run["token_count"], case["image_tokens"])]
    _assert_all(f"{name} {w}x{h} processor vs vector", pairs)


def _random_sizes(seed, n, lo, hi):
    rng = random.Random(seed)
    sizes = []
    while len(sizes) < n:
        w = rng.randint(lo, hi)
        # aspect ratios up to ~1:60, log-uniform, so thin images are exercised too
        h = max(lo, min(hi, round(w * math.exp(rng.uniform(-4.1, 4.1)))))
        if max(w, h) / min(w, h) <= 190:  # Qwen2-VL rejects > 200
            sizes.append((w, h))
    return sizes


@pytest.mark.parametrize("name", sorted(RUNS))
def test_geometry_matches_processor_on_random_small_images(name):
    variant = VECTORS[name]
    run_fn, run_kwargs_of = RUNS[name]
    geo_fn, geo_kwargs_of, _ = SPECS[name]
    count = 2 if name.startswith(("idefics", "smolvlm")) else 5
    for w, h in _random_sizes(zlib.crc32(name.encode()), count, 1, 900):
        run = run_fn(w, h, **run_kwargs_of(variant), seed=w * 7 + h)
        geo = geo_fn(w, h, **geo_kwargs_of(variant))
        _compare_run_with_geometry(f"{name} {w}x{h}", run, geo)


def test_internal_consistency_on_random_sizes():
    """Where transformers computes the same quantity twice (processor formula vs model / processing path),
    the two agree on random sizes — the property the spec relies on."""
    for w, h in _random_sizes(1, 80, 1, 6000):
        nxt = R.llava_next_geometry(w, h)
        assert nxt["tokens_processor"] == nxt["tokens_model"], (w, h, nxt)
        assert nxt["num_views"] == nxt["num_views_from_processor"] == nxt["grid"][0] * nxt["grid"][1] + 1
        ov = R.llava_onevision_geometry(w, h)
        assert ov["tokens_processor"] == ov["tokens_model"], (w, h, ov)
        qw = R.qwen2_vl_geometry(w, h)
        assert qw["resized_hw"] == qw["resized_hw_processor"] and qw["num_patches"] == 4 * qw["token_count"]
        for preset, (le, t, n) in R.IDEFICS3_PRESETS.items():
            idf = R.idefics3_geometry(w, h, le, t, n, family="idefics3" if preset == "idefics3" else "smolvlm")
            assert idf["get_number_of_image_patches"] == (idf["num_views"], *idf["rows_cols"]), (w, h, preset, idf)
            assert idf["token_count"] == n * idf["num_views"]
        iv = R.internvl_geometry(w, h)
        assert iv["num_patches_processor"] == iv["num_views"] and iv["token_count"] == 256 * iv["num_views"]
        mc = R.minicpmv46_geometry(w, h)
        assert sum(mc["tokens_per_view"]) == mc["token_count"] == sum(a * b // 16 for a, b in mc["target_sizes_in_patches_hw"])


def test_spec_examples_outside_the_vectors():
    assert R.qwen2_vl_geometry(1920, 1080, max_pixels=R.QWEN2_VL_CLASS_DEFAULT_MAX_PIXELS)["resized_hw"] == (728, 1316)
    assert R.qwen2_vl_geometry(1920, 1080, max_pixels=R.QWEN2_VL_CLASS_DEFAULT_MAX_PIXELS)["token_count"] == 1222
    assert R.qwen2_vl_geometry(4032, 3024, max_pixels=R.QWEN2_VL_CLASS_DEFAULT_MAX_PIXELS)["token_count"] == 1230
    thin = R.qwen2_vl_geometry(2000, 14)
    assert thin["resized_hw"] == (28, 672) and thin["token_count"] == 24
    with pytest.raises(ValueError):
        R.qwen2_vl_geometry(10, 2010)
    # section 2.4 / 3 / 4.2 / 9 examples
    assert R.llava_next_geometry(1920, 1080)["token_count"] == 1948
    assert R.llava_onevision_geometry(4032, 3024)["final_feature_hw"] == (70, 93)
    assert R.llava_onevision_geometry(4032, 3024)["num_views"] == 31
    assert R.llava_onevision_geometry(1000, 1000)["token_count"] == 7371
    assert R.llava_onevision_geometry(1024, 768, multi_image=True)["token_count"] == 730
    assert R.minicpmv46_geometry(2000, 14)["token_count"] == 94
    assert R.idefics3_geometry(1, 1)["num_views"] == 17
    assert R.internvl_geometry(448, 448)["token_count"] == 256
    assert R.internvl_geometry(672, 672)["token_count"] == 1280

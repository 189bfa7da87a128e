"""Every strategy reproduces every public reference vector: grid, tokens, views, canvas and tile boxes."""

import json
from pathlib import Path

import pytest

import gridvlm

VECTORS = json.loads((Path(__file__).parent / "data" / "vectors-public.json").read_text())["strategies"]
CASES = [(variant, case) for variant, spec in VECTORS.items() for case in spec["cases"]]
# Every public vector file (the families added later have their own, checked in test_vectors_2.py).
ALL_VARIANTS = {variant: spec for path in sorted((Path(__file__).parent / "data").glob("vectors-public*.json"))
                for variant, spec in json.loads(path.read_text())["strategies"].items()}


def make_plan(variant, case):
    spec = VECTORS[variant]
    return gridvlm.plan(tuple(case["size_wh"]), spec["gridvlm_strategy"], **spec["gridvlm_params"])


def expected_tokens(case):
    for key in ("tokens_model", "tokens_total", "tokens", "image_tokens"):
        if key in case:
            return case[key]
    raise KeyError("no token field")


def expected_grid(case):
    if case.get("grid_rows_cols") is not None:
        rows, cols = case["grid_rows_cols"]
    elif case.get("rows_cols") is not None:
        rows, cols = case["rows_cols"]
    elif case.get("grid_cols_rows") is not None:
        cols, rows = case["grid_cols_rows"]
    else:
        return (1, 1)
    return (rows, cols) if rows * cols else (1, 1)  # [0, 0] = unsplit: one view, grid 1×1 by our contract


def expected_views(case):
    for key in ("num_views_incl_global", "num_frames_incl_global", "num_tiles_incl_thumbnail", "num_views"):
        if key in case:
            return case[key]
    if "num_slices" in case:
        return case["num_slices"] + 1
    if "tokens_per_view" in case:
        return len(case["tokens_per_view"])
    return None  # this variant's vectors do not record the view count


def close_boxes(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a == pytest.approx(e, abs=0.006), (a, e)


@pytest.mark.parametrize("variant,case", CASES, ids=[f"{v}-{c['size_wh'][0]}x{c['size_wh'][1]}" for v, c in CASES])
def test_vector(variant, case):
    plan = make_plan(variant, case)
    assert plan.token_count == expected_tokens(case)
    assert plan.grid == expected_grid(case)
    if expected_views(case) is not None:
        assert plan.num_views == expected_views(case)
    assert sum(plan.tokens.values()) == plan.token_count

    if "tile_boxes_original" in case:
        close_boxes([t.box for t in plan.tiles], case["tile_boxes_original"])
    if "slice_boxes" in case:  # LLaVA-UHD release: integer slice boxes of the original image
        assert [list(t.box) for t in plan.tiles] == case["slice_boxes"]
    if "visible_box_in_original" in case:
        close_boxes([plan.tiles[0].box], [case["visible_box_in_original"]])
    canvas_boxes = case.get("tile_boxes_canvas") or case.get("tile_boxes") or case.get("slice_boxes_refined")
    if canvas_boxes:
        assert [list(t.canvas_box) for t in plan.tiles] == canvas_boxes
    for key in ("best_resolution_wh", "resized_wh", "refine_wh"):
        if case.get(key) is not None:
            assert plan.canvas_size == tuple(case[key])
    if "best_resolution_hw" in case:
        assert plan.canvas_size == tuple(case["best_resolution_hw"][::-1])
    if "after_vision_encoder_resize_hw" in case and plan.thumbnail is not None:
        assert plan.canvas_size == tuple(case["after_vision_encoder_resize_hw"][::-1])
    if "resized_hw" in case and plan.strategy == "qwen2-vl":
        assert plan.tiles[0].input_size == tuple(case["resized_hw"][::-1])
        if "merged_grid_hw" in case:
            assert plan.tiles[0].token_grid == tuple(case["merged_grid_hw"])
    if "pad_top_bottom_left_right" in case:
        top, bottom, left, right = case["pad_top_bottom_left_right"]
        cw, ch = plan.canvas_size
        assert plan.content_box == (left, top, cw - right, ch - bottom)
    if "paste_offset_xy" in case and plan.content_box is not None:
        assert plan.content_box[:2] == tuple(case["paste_offset_xy"])
    if "local_canvas_content_box" in case:
        assert plan.content_box == tuple(case["local_canvas_content_box"])
    if "global_view_content_box_in_384" in case:
        assert plan.thumbnail.content_box == tuple(float(v) for v in case["global_view_content_box_in_384"])
    if "image_box_in_336" in case:
        close_boxes([plan.tiles[0].content_box], [case["image_box_in_336"]])
    if case.get("source_wh") is not None:
        source = plan.thumbnail or plan.tiles[0]
        assert source.input_size == tuple(case["source_wh"])
    if case.get("slice_wh") is not None:
        assert {t.input_size for t in plan.tiles} == {tuple(case["slice_wh"])}
    if "target_sizes_in_patches_hw" in case:  # MiniCPM-V 4.6: every view's size in 14-px patches
        assert [(v.input_size[1] // 14, v.input_size[0] // 14) for v in plan.views] == [
            tuple(s) for s in case["target_sizes_in_patches_hw"]]
        assert [v.token_count for v in plan.views] == case["tokens_per_view"]
    if "resize_hw_as_executed_by_process_image" in case:
        assert [v.input_size[::-1] for v in plan.views] == [
            tuple(s) for s in case["resize_hw_as_executed_by_process_image"]]
    if "placeholder_tokens_total" in case:  # the prompt's wrapper/marker tokens around the image features
        assert plan.text_tokens == case["placeholder_tokens_total"] - case["image_tokens"]
    if "separator_tokens" in case:
        assert plan.tokens.get("separators", 0) == case["separator_tokens"]
    if "token_breakdown" in case and "newlines" in case["token_breakdown"]:
        assert plan.tokens["newlines"] == case["token_breakdown"]["newlines"]
    if "unpadded_feature_hw" in case and plan.strategy == "llava-next":
        rows, cols = case["unpadded_feature_hw"]
        assert sum(t.token_count for t in plan.tiles) == rows * cols
    if "patch_grid_hw" in case:
        assert plan.tiles[0].token_grid == tuple(case["patch_grid_hw"])


def test_every_vector_variant_is_claimed_by_its_strategy():
    for variant, spec in VECTORS.items():
        assert variant in gridvlm.strategy_info(spec["gridvlm_strategy"]).vectors, variant


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_the_vectors_a_strategy_names_exist_and_check_it(strategy):
    """A strategy with no vectors has no runnable reference: its rule is the specification itself."""
    for variant in gridvlm.strategy_info(strategy).vectors:
        assert variant in ALL_VARIANTS, f"{strategy} names vector variant {variant!r}, which no vector file has"
        assert ALL_VARIANTS[variant]["gridvlm_strategy"] == strategy


def test_default_candidate_lists_equal_the_references():
    """Pinpoints, anchors and DeepSeek-VL2's candidates are the reference configs' lists, in their order."""
    params = {name: spec["params"] for name, spec in VECTORS.items()}
    info = gridvlm.strategy_info
    assert info("llava-next").defaults["grid_pinpoints"] == params["llava_next_hf"]["pinpoints_hw"]
    assert info("ureader").defaults["anchors"] == params["ureader"]["anchors_rows_cols"]
    assert info("docowl-1.5").defaults["anchors"] == params["docowl15"]["anchors_rows_cols"]
    tile = info("deepseek-vl2").defaults["tile_size"]
    assert [[a * tile, b * tile] for a, b in info("deepseek-vl2").defaults["candidate_tiles"]] == \
        params["deepseek_vl2"]["candidates_wh"]

"""The families added for today's models reproduce every public reference vector of `vectors-public-2.json`.

Checked per case, where the case records it: grid, visual tokens, views, text (marker) tokens, where the global
view sits, tile boxes in original pixels (±1 px), tile input sizes, the encoder's attention windows (±1 px), and a
PlanError where the reference refuses the size.
"""

import json
from pathlib import Path

import pytest

import gridvlm

VECTORS = json.loads((Path(__file__).parent / "data" / "vectors-public-2.json").read_text())["strategies"]
CASES = [(variant, case) for variant, spec in VECTORS.items() for case in spec["cases"]]


def make_plan(variant, case):
    spec = VECTORS[variant]
    return gridvlm.plan(tuple(case["size_wh"]), spec["gridvlm_strategy"], **spec["gridvlm_params"])


def close_boxes(actual, expected, tolerance=1.0):
    assert len(actual) == len(expected), (actual, expected)
    for a, e in zip(actual, expected):
        assert a == pytest.approx(e, abs=tolerance), (a, e)


@pytest.mark.parametrize("variant,case", CASES, ids=[f"{v}-{c['size_wh'][0]}x{c['size_wh'][1]}" for v, c in CASES])
def test_vector(variant, case):
    if "error" in case:
        with pytest.raises(gridvlm.PlanError):
            make_plan(variant, case)
        return
    plan = make_plan(variant, case)
    assert plan.grid == tuple(case["grid_rows_cols"])
    assert plan.token_count == case["tokens"]
    assert sum(plan.tokens.values()) == plan.token_count
    assert plan.num_views == case["num_views"]
    assert plan.text_tokens == case["text_tokens"]
    assert plan.thumbnail_position == case["thumbnail"]
    assert (plan.thumbnail is None) == (case["thumbnail"] is None)
    close_boxes([t.box for t in plan.tiles], case["tile_boxes_original"])
    assert [list(t.input_size) for t in plan.tiles] == case["tile_input_wh"]
    if "window_boxes_original" in case:
        close_boxes(list(plan.windows), case["window_boxes_original"])
    else:
        assert plan.windows == ()
    if "thumbnail_input_wh" in case:
        assert list(plan.thumbnail.input_size) == case["thumbnail_input_wh"]
    if "view_input_wh" in case:
        assert [list(v.input_size) for v in plan.views] == case["view_input_wh"]


def test_every_variant_is_claimed_by_its_strategy():
    for variant, spec in VECTORS.items():
        assert variant in gridvlm.strategy_info(spec["gridvlm_strategy"]).vectors, variant

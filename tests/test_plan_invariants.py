"""Rules every strategy obeys for any image size from 1 px to 10,000 px and aspect ratios up to 1:200."""

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gridvlm
from gridvlm import Plan, PlanError

STRATEGIES = gridvlm.list_strategies()


@st.composite
def image_sizes(draw):
    long = draw(st.integers(1, 10_000))
    ratio = draw(st.floats(1.0, 200.0))
    short = max(1, min(long, round(long / ratio)))
    return (long, short) if draw(st.booleans()) else (short, long)


def plan_or_refusal(size, strategy, **params):
    """The plan, or None where the reference refuses the size — but only ever through PlanError."""
    try:
        return gridvlm.plan(size, strategy, **params)
    except PlanError as exc:
        assert str(exc), "a PlanError must say what was wrong"
        return None


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=image_sizes())
def test_tiles_lie_inside_the_image(strategy, size):
    plan = plan_or_refusal(size, strategy)
    if plan is None:
        return
    w, h = size
    for view in plan.views:
        x0, y0, x1, y1 = view.box
        assert -1e-9 <= x0 <= x1 <= w + 1e-9 and -1e-9 <= y0 <= y1 <= h + 1e-9
        assert 0.0 <= view.padding <= 1.0


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=150, deadline=None)
@given(size=image_sizes())
def test_token_breakdown_sums_to_token_count(strategy, size):
    plan = plan_or_refusal(size, strategy)
    if plan is None:
        return
    assert sum(plan.tokens.values()) == plan.token_count
    assert all(v >= 0 for v in plan.tokens.values())


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=60, deadline=None)
@given(size=image_sizes())
def test_view_tokens_never_exceed_the_plan(strategy, size):
    plan = plan_or_refusal(size, strategy)
    if plan is None:
        return
    assert sum(v.token_count for v in plan.views) <= plan.token_count


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=60, deadline=None)
@given(size=image_sizes())
def test_to_dict_round_trips_through_json(strategy, size):
    plan = plan_or_refusal(size, strategy)
    if plan is None:
        return
    data = json.loads(json.dumps(plan.to_dict()))
    assert Plan.from_dict(data) == plan


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=40, deadline=None)
@given(size=image_sizes())
def test_planning_is_deterministic(strategy, size):
    first, second = plan_or_refusal(size, strategy), plan_or_refusal(size, strategy)
    assert first == second


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=60, deadline=None)
@given(size=image_sizes())
def test_views_are_indexed_in_sequence_order(strategy, size):
    plan = plan_or_refusal(size, strategy)
    if plan is None:
        return
    assert [v.index for v in plan.views] == list(range(plan.num_views))
    rows, cols = plan.grid
    assert len(plan.tiles) == rows * cols
    assert [(t.row, t.col) for t in plan.tiles] == [(r, c) for r in range(rows) for c in range(cols)]
    if plan.thumbnail is not None:
        assert plan.thumbnail_position in ("first", "last")
        assert (plan.thumbnail.row, plan.thumbnail.col) == (-1, -1)


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=40, deadline=None)
@given(size=image_sizes(), budget=st.integers(1, 20_000))
def test_fit_budget_never_exceeds_the_budget(strategy, size, budget):
    try:
        plan = gridvlm.fit_budget(size, strategy, budget)
    except PlanError:
        return
    assert plan.token_count <= budget


def test_only_qwen_refuses_extreme_aspect_ratios():
    with pytest.raises(PlanError, match="200:1"):
        gridvlm.plan((10, 2010), "qwen2-vl")
    for strategy in STRATEGIES:
        if strategy != "qwen2-vl":
            plan_or_refusal((10, 2010), strategy)


def test_importing_gridvlm_loads_no_torch_pil_or_gradio():
    code = (
        "import sys, gridvlm, gridvlm.strategies; gridvlm.plan((640, 480), 'llava-next');"
        "print(sorted(m for m in ('torch', 'PIL', 'gradio', 'numpy', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

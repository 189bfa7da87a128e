"""fit_budget moves each strategy's own knob and returns the largest plan within the budget."""

import pytest

import gridvlm
from gridvlm import PlanError


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_every_strategy_documents_its_knob(strategy):
    info = gridvlm.strategy_info(strategy)
    assert info.budget
    if info.knob is not None:
        assert info.knob.param in info.params


@pytest.mark.parametrize("strategy", gridvlm.list_strategies())
def test_a_budget_at_the_default_plans_size_keeps_at_least_its_tokens(strategy):
    default = gridvlm.plan((1024, 768), strategy)
    fitted = gridvlm.fit_budget((1024, 768), strategy, default.token_count)
    assert fitted.token_count == default.token_count


def test_qwen_budget_sets_max_pixels_in_28_px_cells():
    plan = gridvlm.fit_budget((4032, 3024), "qwen2-vl", 1000)
    assert plan.token_count <= 1000
    assert plan.params["max_pixels"] % (28 * 28) == 0
    bigger = gridvlm.plan((4032, 3024), "qwen2-vl", max_pixels=plan.params["max_pixels"] + 28 * 28)
    assert bigger.token_count > 1000 or bigger.token_count == plan.token_count


def test_internvl_budget_moves_max_tiles():
    plan = gridvlm.fit_budget((1024, 768), "internvl", 2000)
    assert plan.token_count <= 2000
    assert plan.params["max_tiles"] < 12
    assert plan.token_count == max(
        p.token_count for p in (gridvlm.plan((1024, 768), "internvl", max_tiles=k) for k in range(1, 13))
        if p.token_count <= 2000
    )


def test_llava_next_budget_restricts_the_pinpoints():
    plan = gridvlm.fit_budget((1024, 768), "llava-next", 2000)
    assert plan.token_count <= 2000
    assert all(a * b <= 3 * 336 * 336 for a, b in plan.params["grid_pinpoints"])


def test_navit_budget_shrinks_the_patch_grid():
    plan = gridvlm.fit_budget((1024, 768), "navit", 1000)
    assert plan.token_count <= 1000
    rows, cols = plan.tiles[0].token_grid
    assert rows * cols == plan.token_count
    assert abs(cols / rows - 1024 / 768) < 0.1


def test_fixed_cost_strategy_refuses_a_smaller_budget_saying_the_minimum():
    with pytest.raises(PlanError, match="576"):
        gridvlm.fit_budget((1024, 768), "llava-1.5", 100)


def test_too_small_a_budget_says_the_minimum():
    with pytest.raises(PlanError, match="smallest setting needs"):
        gridvlm.fit_budget((1024, 768), "llava-next", 100)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "100", True])
def test_budget_must_be_a_positive_whole_number(bad):
    with pytest.raises(PlanError, match="max_tokens"):
        gridvlm.fit_budget((1024, 768), "internvl", bad)


def test_the_knob_cannot_also_be_given():
    with pytest.raises(PlanError, match="max_tiles"):
        gridvlm.fit_budget((1024, 768), "internvl", 2000, max_tiles=4)


@pytest.mark.parametrize("size", [(1587, 19), (3402, 23), (18, 2580), (1455, 16), (640, 480)])
@pytest.mark.parametrize("budget", [50, 60, 100, 130])
def test_qwen_budget_finds_the_best_plan_where_tokens_dip(size, budget):
    """On thin images max_pixels' token count is not monotone; fit_budget must still find the best plan."""
    plans = [gridvlm.plan(size, "qwen2-vl", max_pixels=k * 28 * 28) for k in range(4, 200)]
    best = max((p.token_count for p in plans if p.token_count <= budget), default=None)
    if best is None:
        with pytest.raises(PlanError):
            gridvlm.fit_budget(size, "qwen2-vl", budget)
    else:
        assert gridvlm.fit_budget(size, "qwen2-vl", budget).token_count == best


@pytest.mark.parametrize("strategy", [s for s in gridvlm.list_strategies() if gridvlm.strategy_info(s).knob])
def test_fit_budget_equals_brute_force_over_the_knob(strategy):
    import random

    info = gridvlm.strategy_info(strategy)
    knob = info.knob
    rng = random.Random(strategy)
    for _ in range(8):
        long = rng.randint(1, 5000)
        short = max(1, round(long / rng.uniform(1, 60)))
        size = (long, short) if rng.random() < 0.5 else (short, long)
        budget = rng.randint(1, 8000)
        values = knob.values(info.defaults, budget)
        runs = knob.segments(info.defaults, budget, size) if knob.segments else [values]
        best = None
        for value in [v for run in runs for v in run]:
            try:
                plan = gridvlm.plan(size, strategy, **{knob.param: value})
            except PlanError:
                continue
            if plan.token_count <= budget and (best is None or plan.token_count > best):
                best = plan.token_count
        if best is None:
            with pytest.raises(PlanError):
                gridvlm.fit_budget(size, strategy, budget)
        else:
            assert gridvlm.fit_budget(size, strategy, budget).token_count == best, (size, budget)

"""`explain`: why each strategy cuts an image as it does. The candidate it names as chosen is the plan's own."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gridvlm
from gridvlm.errors import PlanError

STRATEGIES = gridvlm.list_strategies()
SIZES = [(1, 1), (336, 336), (1024, 768), (768, 1024), (1920, 1080), (4032, 3024), (800, 4000), (5000, 100)]


def plan_or_none(size, name):
    try:
        return gridvlm.plan(size, name)
    except PlanError:
        return None


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("size", SIZES)
def test_exactly_one_candidate_wins_and_it_is_the_plans(name, size):
    plan = plan_or_none(size, name)
    if plan is None:
        with pytest.raises(PlanError):
            gridvlm.explain(size, name)
        return
    e = gridvlm.explain(size, name)
    assert e.strategy == name and e.image_size == size
    assert sum(c.chosen for c in e.candidates) == 1
    assert e.rule and e.decision and all(c.label for c in e.candidates)
    if e.chosen.grid is not None:
        assert e.chosen.grid == plan.grid


@pytest.mark.parametrize("name", STRATEGIES)
@settings(max_examples=25, deadline=None)
@given(w=st.integers(1, 10_000), h=st.integers(1, 10_000))
def test_the_winner_is_the_plans_grid_on_any_size(name, w, h):
    plan = plan_or_none((w, h), name)
    if plan is None:
        return
    chosen = gridvlm.explain((w, h), name).chosen
    assert chosen.grid is None or chosen.grid == plan.grid


def test_the_cli_marks_the_winner(capsys):
    from gridvlm.cli import run

    assert run(["explain", "1024x768", "--strategy", "llava-next"]) == 0
    out = capsys.readouterr().out
    assert "rule:" in out and "decision:" in out and "→" in out

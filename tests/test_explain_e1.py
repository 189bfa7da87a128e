"""`explain` for the AnyRes canvases (llava-next, llava-onevision, llava-1.5-hd, deepseek-vl2) and the variable
slices (minicpm-v, llava-uhd): the tie-breaks and boundaries of strategies.md §2–4, §7, §12.2 and pitfalls
5–7."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gridvlm
from gridvlm.errors import PlanError
from gridvlm.strategies.anyres import LLAVA_HD_GRIDS, ONEVISION_PINPOINTS, deepseek_candidates


def by_grid(e, grid):
    found = [c for c in e.candidates if c.grid == grid]
    assert len(found) == 1, (grid, [c.label for c in e.candidates])
    return found[0]


# ---------------------------------------------------------------------------------------------
# AnyRes: effective resolution, then waste, then the first in the list


def test_llava_next_small_image_exact_tie_keeps_the_first_pinpoint_hf():
    # §2.1 / pitfall 5: every image ≤ 336² ties between the two 2-tile canvases; transformers reads (h, w).
    e = gridvlm.explain((336, 336), "llava-next")
    assert e.chosen.grid == (1, 2)
    assert e.chosen.scores == {"effective resolution": 336 * 336, "wasted pixels": 336 * 336}
    assert "exact tie" in e.chosen.note and "first" in e.chosen.note
    other = by_grid(e, (2, 1))
    assert not other.chosen and other.scores == e.chosen.scores and "exact tie" in other.note
    assert "first one found" in e.decision and "capped" in e.decision
    # the bigger canvases carry as much but waste more
    assert "more wasted pixels" in by_grid(e, (2, 2)).note


def test_llava_next_small_image_original_order_keeps_the_other_first():
    e = gridvlm.explain((336, 336), "llava-next", pinpoint_order="wh")
    assert e.chosen.grid == (2, 1) and "exact tie" in e.chosen.note
    assert "(width, height)" in e.rule


def test_llava_next_lists_every_pinpoint_in_order_with_the_reference_scores():
    e = gridvlm.explain((1024, 768), "llava-next")
    assert [c.grid for c in e.candidates] == [(1, 2), (2, 1), (2, 2), (3, 1), (1, 3)]
    assert e.chosen.grid == (2, 2)
    # scale = min(672/1024, 672/768) → 672 × 504 real pixels on a 672×672 canvas
    assert e.chosen.scores == {"effective resolution": 672 * 504, "wasted pixels": 672 * 672 - 672 * 504}
    assert e.chosen.note == "" and "most of the image" in e.decision


def test_llava_hd_effective_resolution_tie_goes_to_less_waste():
    # 300×300 fits whole in every canvas (capped at 90,000): 2×2 comes first but wastes more than 1×2.
    e = gridvlm.explain((300, 300), "llava-1.5-hd")
    assert [c.grid for c in e.candidates] == [tuple(g) for g in LLAVA_HD_GRIDS]
    assert e.chosen.grid == (1, 2) == gridvlm.plan((300, 300), "llava-1.5-hd").grid
    assert e.chosen.scores == {"effective resolution": 90_000, "wasted pixels": 672 * 336 - 90_000}
    first = e.candidates[0]
    assert first.grid == (2, 2) and not first.chosen
    assert first.scores["effective resolution"] == 90_000 and "more wasted pixels" in first.note
    assert "wastes fewer pixels" in e.chosen.note and "fewer pixels" in e.decision
    # 2×1 (a 336×672 canvas) ties it exactly and comes later
    assert "exact tie" in by_grid(e, (2, 1)).note and "first one found" in e.decision


def test_onevision_36_pinpoints_and_the_waste_tie_break():
    e = gridvlm.explain((1024, 768), "llava-onevision")
    assert len(e.candidates) == len(ONEVISION_PINPOINTS) == 36
    assert [c.grid for c in e.candidates] == [(a // 384, b // 384) for a, b in ONEVISION_PINPOINTS]
    assert e.chosen.grid == (2, 3)
    assert e.chosen.scores == {"effective resolution": 1024 * 768, "wasted pixels": 1152 * 768 - 1024 * 768}
    tied = [c for c in e.candidates if c.scores["effective resolution"] == 1024 * 768 and not c.chosen]
    assert len(tied) == 19 and all("more wasted pixels" in c.note for c in tied)
    assert "and 17 more" in e.decision and "fewer pixels" in e.decision


def test_onevision_multi_image_has_nothing_to_choose():
    e = gridvlm.explain((1024, 768), "llava-onevision", multi_image=True)
    assert len(e.candidates) == 1 and e.chosen.grid == (1, 1) and "multi-image" in e.chosen.note


def test_deepseek_vl2_candidates_in_config_order_and_the_cropping_refusal():
    e = gridvlm.explain((1024, 768), "deepseek-vl2")
    assert [c.grid for c in e.candidates] == [(b, a) for a, b in deepseek_candidates(9)]
    assert e.chosen.grid == (2, 3) == gridvlm.plan((1024, 768), "deepseek-vl2").grid
    assert "wastes fewer pixels" in e.chosen.note
    assert by_grid(e, (3, 3)).scores["effective resolution"] == 1024 * 768
    off = gridvlm.explain((1024, 768), "deepseek-vl2", cropping=False)
    assert len(off.candidates) == 1 and off.chosen.grid == (1, 1) and "cropping" in off.chosen.note


def test_deepseek_vl2_thin_image():
    e = gridvlm.explain((100, 5000), "deepseek-vl2")
    assert e.chosen.grid == (9, 1) == gridvlm.plan((100, 5000), "deepseek-vl2").grid


# ---------------------------------------------------------------------------------------------
# MiniCPM-V / LLaVA-UHD: log-ratio error among multiple−1 … multiple+1 slices


def test_minicpm_26_square_tie_keeps_the_first_minimum():
    # 500² / 448² → multiple 2: 1 col × 2 rows and 2 cols × 1 row tie at |log 2|;
    # 2.6 keeps the first (cols ascending)
    e = gridvlm.explain((500, 500), "minicpm-v")
    assert [c.grid for c in e.candidates] == [(2, 1), (1, 2), (3, 1), (1, 3)]
    assert e.chosen.grid == (2, 1) == gridvlm.plan((500, 500), "minicpm-v").grid
    assert e.chosen.scores == {"log-ratio error": math.log(2), "slices": 2}
    assert "first minimum" in e.chosen.note and "first minimum" in e.decision
    assert "the winner came first" in by_grid(e, (1, 2)).note
    assert "1 is never sliced" in e.decision


def test_minicpm_46_tie_goes_to_more_rows():
    e = gridvlm.explain((500, 500), "minicpm-v", version="4.6")
    # 4.6 walks rows ascending: 2 cols × 1 row first, then 1 col × 2 rows wins the tie by having more rows
    assert [c.grid for c in e.candidates] == [(1, 2), (2, 1), (1, 3), (3, 1)]
    assert e.chosen.grid == (2, 1) == gridvlm.plan((500, 500), "minicpm-v", version="4.6").grid
    assert "more rows" in e.chosen.note and "more rows" in e.decision
    assert "fewer rows" in by_grid(e, (1, 2)).note


def test_minicpm_unsliced_below_one_view():
    e = gridvlm.explain((2000, 14), "minicpm-v")
    assert len(e.candidates) == 1 and e.chosen.grid == (1, 1)
    assert "5292×42" in e.chosen.label and "multiple = 1" in e.chosen.note


def test_minicpm_slice_counts_capped_by_max_slice_nums():
    e = gridvlm.explain((1920, 1080), "minicpm-v")
    assert e.chosen.grid == (2, 4) and "420×476" in e.chosen.label
    assert e.chosen.scores["log-ratio error"] == pytest.approx(abs(math.log(1920 / 1080) - math.log(2)))
    assert {c.scores["slices"] for c in e.candidates} == {8, 9}
    assert "10 exceeds max_slice_nums 9" in e.decision and "1680×952" in e.decision
    small = gridvlm.explain((1920, 1080), "minicpm-v", max_slice_nums=2)
    assert {c.scores["slices"] for c in small.candidates} == {2} and "3 exceeds max_slice_nums 2" in small.decision
    assert small.chosen.grid == gridvlm.plan((1920, 1080), "minicpm-v", max_slice_nums=2).grid


def test_uhd_release_337_square_ties_on_two_slices():
    # §4.4: 337² already gives s = 2 (f(2) has no 1×1); 1×2 and 2×1 tie and the first found wins
    e = gridvlm.explain((337, 337), "llava-uhd")
    assert [c.grid for c in e.candidates] == [(2, 1), (1, 2), (3, 1), (1, 3)]
    assert e.chosen.grid == (2, 1) == gridvlm.plan((337, 337), "llava-uhd").grid
    assert "first minimum" in e.chosen.note and "s = 2" in e.decision


def test_uhd_release_small_image_is_its_own_view():
    e = gridvlm.explain((300, 300), "llava-uhd")
    assert e.chosen.grid == (1, 1) and e.chosen.scores["log-ratio error"] == 0
    assert "only view" in e.decision


def test_uhd_v1_branch_uses_the_minicpm_rule_with_its_own_limits():
    e = gridvlm.explain((448, 448), "llava-uhd", variant="v1-branch")
    assert e.chosen.grid == (2, 1) == gridvlm.plan((448, 448), "llava-uhd", variant="v1-branch").grid
    assert "first minimum" in e.chosen.note and "336²" in e.rule
    e = gridvlm.explain((1024, 768), "llava-uhd", variant="v1-branch")
    assert e.chosen.grid == (2, 3) and "8 exceeds max_slices 7" in e.decision


# ---------------------------------------------------------------------------------------------
# The winner is the plan's, for the non-default readings too

VARIANTS = [
    ("llava-next", {"pinpoint_order": "wh"}),
    ("llava-onevision", {"pinpoint_order": "wh"}),
    ("deepseek-vl2", {"candidate_tiles": [[1, 1], [2, 1], [1, 2], [2, 2]]}),
    ("llava-1.5-hd", {"grids": [[1, 2], [2, 1], [2, 2]]}),
    ("minicpm-v", {"version": "4.6"}),
    ("minicpm-v", {"max_slice_nums": 4}),
    ("llava-uhd", {"variant": "v1-branch"}),
    ("llava-uhd", {"max_slices": 3}),
]


@pytest.mark.parametrize("name, params", VARIANTS, ids=[f"{n}-{list(p)[0]}" for n, p in VARIANTS])
@settings(max_examples=40, deadline=None)
@given(w=st.integers(1, 6000), h=st.integers(1, 6000))
def test_the_winner_is_the_plans_with_other_params(name, params, w, h):
    try:
        plan = gridvlm.plan((w, h), name, **params)
    except PlanError:
        return
    e = gridvlm.explain((w, h), name, **params)
    assert sum(c.chosen for c in e.candidates) == 1
    assert e.chosen.grid == plan.grid
    if "effective resolution" in e.chosen.scores:  # nothing beats the winner's score
        best = max(c.scores["effective resolution"] for c in e.candidates)
        assert e.chosen.scores["effective resolution"] == best
    if "log-ratio error" in e.chosen.scores:
        assert e.chosen.scores["log-ratio error"] == min(c.scores["log-ratio error"] for c in e.candidates)

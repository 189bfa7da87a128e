"""`explain` for the resize-and-tile grids (UReader, DocOwl 1.5, InternVL, Idefics3, SmolVLM, fixed-grid) and the
single views (LLaVA-1.5, NaViT): the tie-breaks and boundaries the spec names, the winner and its scores."""


import pytest

import gridvlm
from gridvlm.errors import PlanError
from gridvlm.strategies.grids import UREADER_ANCHORS


def chosen(size, name, **params):
    e = gridvlm.explain(size, name, **params)
    assert sum(c.chosen for c in e.candidates) == 1
    return e, e.chosen


# --- UReader / DocOwl 1.5: 100·shape IoU + IoU, first argmax on ties


@pytest.mark.parametrize("name, size, grid, views", [("ureader", (1024, 768), (3, 4), 13),
                                                     ("docowl-1.5", (1024, 768), (2, 3), 7)])
def test_shape_adaptive_winner_has_the_top_score(name, size, grid, views):
    e, win = chosen(size, name)
    assert win.grid == grid and gridvlm.plan(size, name).num_views == views
    key = "score (100·shape IoU + IoU)"
    assert win.scores[key] == max(c.scores[key] for c in e.candidates)
    assert win.scores[key] == pytest.approx(100 * win.scores["shape IoU"] + win.scores["resolution IoU"], rel=1e-6)
    anchors = gridvlm.strategy_info(name).defaults["anchors"]
    assert [c.grid for c in e.candidates] == [tuple(a) for a in anchors]  # every anchor, in the reference's order


def test_ureader_score_tie_keeps_the_first_anchor():
    # a square image against 1×2 and 2×1: shape IoU 0.5 and IoU 0.5 for both; argmax keeps the first listed
    e, win = chosen((448, 448), "ureader", anchors=[[1, 2], [2, 1]])
    assert win.grid == (1, 2) and gridvlm.plan((448, 448), "ureader", anchors=[[1, 2], [2, 1]]).grid == (1, 2)
    loser = e.candidates[1]
    assert loser.scores == win.scores
    assert "first" in win.note and "first" in loser.note and "first" in e.decision and "tie" in e.decision
    e, win = chosen((448, 448), "ureader", anchors=[[2, 1], [1, 2]])
    assert win.grid == (2, 1)


def test_ureader_without_a_tie_says_nothing_of_one():
    e, win = chosen((1024, 768), "ureader")
    assert win.note == "" and "tie" not in e.decision
    assert len(e.candidates) == len(UREADER_ANCHORS) == 48


# --- InternVL: closest aspect, the area rule on ties (pitfall 6)


def test_internvl_448_square_keeps_1x1_the_area_rule_refuses_bigger_squares():
    e, win = chosen((448, 448), "internvl")
    assert win.grid == (1, 1) and win.scores["aspect distance"] == 0
    refused = [c for c in e.candidates if c.grid in ((2, 2), (3, 3))]
    assert len(refused) == 2 and all("area rule" in c.note and "lacks the pixels" in c.note for c in refused)
    assert refused[0].scores["aspect distance"] == 0 and refused[0].scores["area rule (0.5·T²·tiles)"] == 401408
    assert "area rule refuses" in e.decision and "2×2, 3×3" in e.decision
    assert gridvlm.plan((448, 448), "internvl").token_count == 256


def test_internvl_672_square_the_area_rule_takes_2x2():
    e, win = chosen((672, 672), "internvl")
    assert win.grid == (2, 2) and "so the bigger grid is taken" in win.note
    assert "ties 1×1" in e.decision and "area rule takes the bigger grid" in e.decision
    assert "451,584 > 0.5·T²·4 = 401,408" in e.decision
    three = next(c for c in e.candidates if c.grid == (3, 3))
    assert "lacks the pixels" in three.note and "3×3" in e.decision
    assert gridvlm.plan((672, 672), "internvl").token_count == 1280


def test_internvl_candidates_in_tile_count_order_with_distances():
    e, win = chosen((1024, 768), "internvl")
    assert win.grid == (3, 4) and win.scores["aspect distance"] == 0 and win.scores["tiles"] == 12
    tiles = [c.scores["tiles"] for c in e.candidates]
    assert tiles == sorted(tiles) and len(e.candidates) == sum(1 for c in range(1, 13) for r in range(1, 13)
                                                               if c * r <= 12)
    assert "no other grid ties it" in e.decision
    e, win = chosen((100, 5000), "internvl")  # pitfall 18: 12 rows × 1 column
    assert win.grid == (12, 1)


def test_internvl_min_tiles_limits_the_candidates():
    e, win = chosen((448, 448), "internvl", min_tiles=2, max_tiles=6)
    assert all(2 <= c.scores["tiles"] <= 6 for c in e.candidates)
    assert win.grid == gridvlm.plan((448, 448), "internvl", min_tiles=2, max_tiles=6).grid == (2, 2)


# --- Idefics3 / SmolVLM: longest edge, rounded up to tiles, split only when larger than one tile


def test_idefics3_upscales_a_1x1_image_to_4x4_tiles():
    e, win = chosen((1, 1), "idefics3")  # pitfall 14: 17 views, 2873 tokens
    assert win.grid == (4, 4) and win.label.startswith("split")
    assert win.scores["views"] == 17 and win.scores["visual tokens"] == 2873
    assert "upscal" in e.decision and "1456×1456" in e.decision
    assert "larger than one" in e.candidates[1].note


def test_idefics3_spec_examples():
    e, win = chosen((1024, 768), "idefics3")
    assert win.grid == (3, 4) and win.scores["visual tokens"] == 2197
    e, win = chosen((100, 5000), "idefics3")
    assert win.grid == (4, 1) and win.scores["visual tokens"] == 845 and "30×1456" in e.decision


def test_smolvlm_no_split_when_the_rounded_image_fits_one_tile():
    e, win = chosen((1000, 700), "smolvlm", longest_edge=384)
    assert win.grid == (1, 1) and win.label.startswith("no split") and win.scores["visual tokens"] == 81
    assert "fits one" in e.candidates[0].note and "fits one 384×384 tile" in e.decision


def test_idefics3_no_split_when_splitting_is_off():
    e, win = chosen((1024, 768), "idefics3", do_image_splitting=False)
    assert win.label.startswith("no split") and "do_image_splitting is False" in e.candidates[0].note


# --- fixed-grid: ceil per side, clamped to ⌊√max_tiles⌋


def test_fixed_grid_clamp_and_coverage():
    e, win = chosen((4032, 3024), "fixed-grid")
    need = e.candidates[0]
    assert need.grid == (9, 12) and not need.chosen and "clamped" in need.note
    assert win.grid == (4, 4) and win.scores["image covered"] == pytest.approx(1344 * 1344 / (4032 * 3024))
    assert "clamped" in e.decision and "14.8%" in e.decision
    e, win = chosen((4032, 3024), "fixed-grid", resize=True)
    assert win.scores["image covered"] == 1


def test_fixed_grid_unclamped_and_given():
    e, win = chosen((1024, 768), "fixed-grid")
    assert len(e.candidates) == 1 and win.grid == (3, 4)
    e, win = chosen((1000, 700), "fixed-grid", rows=2, resize=True)
    assert win.grid == (2, 3) and "given" in e.decision and not e.candidates[0].chosen
    with pytest.raises(PlanError):
        gridvlm.explain((1000, 700), "fixed-grid", rows=5, cols=5)  # over max_tiles, refused as the planner does


def test_llava_mini_is_a_fixed_rule():
    e, win = chosen((1024, 768), "llava-mini")
    assert len(e.candidates) == 1 and win.grid == (2, 2) and "no choice" in e.rule


# --- LLaVA-1.5: pad vs crop, picked by the mode


@pytest.mark.parametrize("mode, kept", [("pad", 1.0), ("crop", 0.75)])
def test_llava15_modes(mode, kept):
    e, win = chosen((1024, 768), "llava-1.5", mode=mode)
    assert win.label.startswith(mode) and win.scores["image kept"] == pytest.approx(kept) and win.grid == (1, 1)
    other = next(c for c in e.candidates if not c.chosen)
    assert f"mode is '{mode}'" in other.note
    if mode == "crop":
        assert "x 128–896" in e.decision  # pitfall 13
    else:
        assert win.scores["padding share of the view"] == pytest.approx(0.25)


# --- NaViT: the unresized patch grid, then gridvlm's shrink steps


def test_navit_unresized():
    e, win = chosen((1000, 700), "navit")
    assert len(e.candidates) == 1 and win.scores["tokens"] == 43 * 62 and "never resizes" in e.decision
    assert "dropped" in e.decision


def test_navit_shrinks_step_by_step_to_max_tokens():
    e, win = chosen((4800, 16), "navit", max_tokens=100)  # 1×300 patches: scaled to 1×173, then columns off
    assert e.candidates[0].scores["tokens"] == 300 and e.candidates[1].scores["patch cols"] == 173
    assert len(e.candidates) == 2 + 73 and all("column" in c.label for c in e.candidates[2:])
    assert win.scores["tokens"] == 100 and win is e.candidates[-1]
    assert gridvlm.plan((4800, 16), "navit", max_tokens=100).token_count == 100

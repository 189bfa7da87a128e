"""`explain` for the tiled-canvas strategies (canvas_tiling, phi, lfm2, molmo, ovis, deepseek_ocr): the tie-breaks
and boundaries the spec names (families-2.md §3-6, 12-20, 24; strategies.md §6's InternVL rule)."""

import pytest

import gridvlm
from gridvlm.errors import PlanError


def explain(size, name, **params):
    e = gridvlm.explain(size, name, **params)
    plan = gridvlm.plan(size, name, **params)
    assert sum(c.chosen for c in e.candidates) == 1
    assert e.chosen.grid == plan.grid
    return e


def by_grid(e, grid):
    found = [c for c in e.candidates if c.grid == grid]
    assert len(found) >= 1, f"no candidate with grid {grid}"
    return found[-1]


# InternVL's closest-aspect rule (Aya Vision, DeepSeek-OCR-2, LFM2-VL, Phi-4-MM, DeepSeek-OCR Gundam)


def test_aspect_tie_goes_to_the_bigger_grid_only_when_the_image_has_the_pixels():
    # a square image: 1×1, 2×2 and 3×3 tie at distance 0; 600² = 360 000 > 0.5·364²·4 but ≤ 0.5·364²·9
    e = explain((600, 600), "aya-vision")
    assert e.chosen.grid == (2, 2) and e.chosen.scores["aspect distance"] == 0
    assert "replaces" in e.chosen.note
    assert "is kept" in by_grid(e, (3, 3)).note
    assert "tie" in e.decision and "first one found" in e.decision
    big = explain((1000, 1000), "aya-vision")  # 10⁶ > 0.5·364²·9 = 596 232
    assert big.chosen.grid == (3, 3) and "replaces" in big.chosen.note


def test_aya_vision_lists_every_grid_in_got_ocr2_order():
    e = explain((1024, 768), "aya-vision")
    assert len(e.candidates) == sum(1 for c in range(1, 13) for r in range(1, 13) if c * r <= 12)
    assert [c.grid for c in e.candidates[:3]] == [(1, 1), (2, 1), (1, 2)]  # cols outer, then rows, by tile count
    assert e.chosen.grid == (3, 4) and e.chosen.scores == {"aspect distance": 0.0, "tiles": 12}


def test_deepseek_ocr2_tiles_only_above_768():
    e = explain((768, 768), "deepseek-ocr-2")
    assert len(e.candidates) == 1 and e.chosen.grid == (1, 1) and "not tiled" in e.chosen.note
    e = explain((769, 768), "deepseek-ocr-2")
    assert not e.candidates[0].chosen and "tiled" in e.candidates[0].note
    assert e.chosen.scores["tiles"] >= 2 and "exceeds 768" in e.decision


def test_lfm2_too_large_gate_and_its_tie():
    small = explain((720, 720), "lfm2-vl")  # round(22.5) = 22 → 704² = 495 616 ≤ 524 288
    assert len(small.candidates) == 1 and small.chosen.scores == {"rounded pixels": 495616, "limit": 524288}
    assert "not too large" in small.chosen.note
    big = explain((730, 730), "lfm2-vl")  # 23² cells · 32² = 541 696 > 524 288
    assert not big.candidates[0].chosen and big.candidates[0].scores["rounded pixels"] == 541696
    assert big.chosen.grid == (2, 2) and big.chosen.scores["aspect distance"] == 0
    assert "2×2 is kept" in by_grid(big, (3, 3)).note  # 532 900 ≤ 0.5·512²·9
    off = explain((1024, 768), "lfm2-vl", do_image_splitting=False)
    assert len(off.candidates) == 1 and "splitting is off" in off.chosen.note


def test_phi4_ceil_grid_within_the_limit_needs_no_search():
    e = explain((1024, 768), "phi-4-multimodal")
    assert len(e.candidates) == 1 and e.chosen.grid == (2, 3)
    assert e.chosen.scores == {"crops": 6, "most crops (dynamic_hd)": 36} and "never runs" in e.decision


def test_phi4_over_36_crops_falls_back_to_the_aspect_rule():
    e = explain((4032, 3024), "phi-4-multimodal")  # ceil: 9 × 7 = 63 > 36
    assert not e.candidates[0].chosen and "exceed dynamic_hd=36" in e.candidates[0].note
    assert e.chosen.grid == (3, 4) and e.chosen.scores["aspect distance"] == 0
    square = explain((5000, 5000), "phi-4-multimodal")  # 1×1 … 6×6 tie; the biggest with the pixels wins
    assert square.chosen.grid == (6, 6) and "ties 5×5" in square.chosen.note and "tie" in square.decision


def test_deepseek_ocr_gundam_gate_and_fixed_modes():
    e = explain((640, 640), "deepseek-ocr")
    assert len(e.candidates) == 1 and "not tiled" in e.chosen.note
    e = explain((1024, 768), "deepseek-ocr")
    assert e.chosen.grid == (2, 3) and e.chosen.scores["tiles"] == 6
    for mode in ("tiny", "small", "base", "large"):
        fixed = explain((1024, 768), "deepseek-ocr", mode=mode)
        assert len(fixed.candidates) == 1 and "never tiles" in fixed.chosen.note


# Best fit without distortion (Mllama, Llama 4)


def test_mllama_picks_the_least_upscaling_canvas():
    e = explain((1024, 768), "mllama")
    assert e.chosen.grid == (2, 2) and e.chosen.scores == {"scale": 1.09375, "canvas area": 1120 * 1120}
    assert "1 canvas holds" in e.decision
    assert "only upscaling canvases compete" in by_grid(e, (1, 2)).note


def test_mllama_equal_scales_go_to_the_smallest_canvas():
    e = explain((100, 100), "mllama")  # every canvas gives 5.6; 1×1 has the smallest area
    assert e.chosen.grid == (1, 1) and e.chosen.scores["scale"] == 5.6
    assert "smallest canvas area" in e.chosen.note and "share it" in e.decision
    assert "larger" in by_grid(e, (1, 2)).note


def test_llama4_scale_tie_between_three_canvases():
    e = explain((1024, 768), "llama4")  # 4×4, 3×5 and 3×4 all give 1.3125; 3×4 is the smallest
    assert e.chosen.grid == (3, 4) and e.chosen.scores["scale"] == 1.3125
    assert "among the 3 canvases" in e.chosen.note
    assert "4×4, 3×5, 3×4 share it" in e.decision and "float32" in e.rule


def test_llama4_resize_to_max_canvas_takes_the_largest_upscale():
    e = explain((1024, 768), "llama4", resize_to_max_canvas=True)
    assert e.chosen.scores["scale"] == max(c.scores["scale"] for c in e.candidates) and "largest" in e.decision


# Least upscaling, first on ties (Cohere2-Vision, Molmo2)


def test_cohere2_least_upscale_first_on_ties():
    e = explain((1024, 768), "cohere2-vision")
    assert e.chosen.grid == (2, 2) and e.chosen.scores == {"scale": 1.0, "tiles": 4}
    assert "first of the 5 grids" in e.chosen.note
    assert "which comes first" in by_grid(e, (3, 2)).note and "the first in the list is kept" in e.decision


def test_cohere2_when_every_grid_shrinks():
    e = explain((20000, 20000), "cohere2-vision")
    assert "every grid would shrink" in e.decision
    assert e.chosen.scores["scale"] == max(c.scores["scale"] for c in e.candidates)


def test_molmo2_every_grid_shrinks_and_the_first_of_a_tie_wins():
    e = explain((1024, 768), "molmo2")
    assert e.chosen.grid == (2, 3) and e.chosen.scores["scale"] == pytest.approx(0.810976, abs=1e-6)
    assert "which comes first" in by_grid(e, (2, 4)).note and "2×3, 2×4 tie" in e.decision
    assert "every grid would shrink" in e.decision


def test_molmo2_images_inside_the_margins():
    e = explain((50, 50), "molmo2")
    assert e.chosen.grid == (1, 1) and "margins" in e.decision


# Perception-LM


def test_perception_lm_largest_short_side_with_the_later_tie():
    e = explain((1024, 768), "perception-lm")
    assert e.chosen.grid == (5, 7) and e.chosen.scores["resized short side"] == 2240
    e = explain((896, 448), "perception-lm")
    assert e.chosen.grid == (4, 8) and "later" in e.chosen.note and "keeps the later one" in e.decision
    tied = [c for c in e.candidates if not c.chosen and c.scores.get("resized short side") == 1792]
    assert tied and all("later arrangement" in c.note for c in tied)


def test_perception_lm_falls_back_to_the_ratio_key():
    e = explain((30000, 20), "perception-lm")
    assert e.chosen.grid == (1, 36) and "ratio distance" in e.chosen.scores and "no canvas" in e.decision
    one = explain((1024, 768), "perception-lm", max_num_tiles=1)
    assert len(one.candidates) == 1 and one.chosen.grid == (1, 1)


# Ovis2's covering grid


@pytest.mark.parametrize("variant, grid", [("original", (2, 3)), ("transformers", (3, 2))])
def test_ovis2_fewest_pieces_that_cover_enough(variant, grid):
    e = explain((1024, 768), "ovis2", variant=variant)
    assert e.chosen.grid == grid and e.chosen.scores == {"covered share": 1.0, "pieces": 6}
    assert "more pieces than the winner" in by_grid(e, (3, 3)).note and "fewest pieces" in e.decision
    assert ("transposed" in e.rule) == (variant == "transformers")


def test_ovis2_when_nothing_covers_the_largest_share_wins():
    e = explain((5000, 100), "ovis2", variant="original")
    assert e.chosen.grid == (1, 9) and "largest share" in e.chosen.note and "no grid keeps" in e.decision


# Phi-3.5-vision's HD scale search


def test_phi35_the_largest_scale_within_num_crops():
    e = explain((1024, 768), "phi-3.5-vision")
    assert [c.scores["crops (scale · ceil(scale / ratio))"] for c in e.candidates] == [1, 4, 9]
    assert e.chosen.label.startswith("scale 2") and e.chosen.grid == (2, 2)
    assert "exceed num_crops=4" in e.candidates[-1].note and e.candidates[-1].grid is None
    e = explain((768, 1024), "phi-3.5-vision", num_crops=16)  # portrait: transposed, 4 rows × 3 cols
    assert e.chosen.grid == (4, 3) and "transposed" in e.rule


def test_phi35_short_side_padding_can_need_fewer_crops_than_counted():
    e = explain((644, 1285), "phi-3.5-vision")  # scale 2 counts 2·ceil(2/1.995) = 4, but int(672/1.995) = 336 px
    assert e.chosen.grid == (2, 1) and "pads to 1 crop" in e.chosen.note


def test_refusals_are_the_planners():
    with pytest.raises(PlanError):
        gridvlm.explain((20000, 1), "phi-4-multimodal")

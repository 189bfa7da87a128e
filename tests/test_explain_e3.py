"""`explain` for the resize-rule strategies (Qwen family, Kimi-VL, Fuyu, Gemma 3/4, Pixtral/Mistral 3, Idefics2):
the branch each reference takes at the boundaries and tie-breaks the specs name (strategies.md §8, families-2.md
§1, §2, §5, §15, pitfalls.md 8 and 10), with the scores it decides by. The chosen candidate is the plan's own."""


import pytest

import gridvlm
from gridvlm.errors import PlanError


def chosen(size, name, **params):
    e = gridvlm.explain(size, name, **params)
    assert sum(c.chosen for c in e.candidates) == 1
    assert e.chosen.grid == gridvlm.plan(size, name, **params).grid
    return e, e.chosen


# ---------------------------------------------------------------------------------------------
# Qwen family (smart_resize)


def test_qwen_rounded_size_within_bounds_is_kept():
    e, c = chosen((1024, 768), "qwen2-vl")
    assert [x.chosen for x in e.candidates] == [True, False, False]
    assert "1036×756" in c.label and c.scores["pixels counted"] == 1036 * 756 and c.scores["tokens"] == 999
    assert "kept" in e.decision


def test_qwen_half_to_even_rounding_sends_a_thin_image_to_the_min_pixels_branch():
    # pitfalls.md 10: transformers rounds 14/28 = 0.5 to 0, so 0 px < min_pixels → enlarged to 28×672, 24 tokens
    e, c = chosen((2000, 14), "qwen2-vl")
    assert e.candidates[2] is c and "672×28" in c.label and c.scores["tokens"] == 24
    assert e.candidates[0].scores["pixels counted"] == 0
    assert "half to even" in e.candidates[0].note and "half to even" in e.decision
    assert "not taken" in e.candidates[1].note


def test_qwen_vl_utils_clamps_first_and_keeps_the_rounded_size():
    e, c = chosen((2000, 14), "qwen2-vl", rounding="qwen-vl-utils")
    assert e.candidates[0] is c and "1988×28" in c.label and c.scores["tokens"] == 71
    assert "clamps" in c.note


def test_qwen_class_default_max_pixels_shrinks():
    # strategies.md §8: 4032×3024 at the class default 1,003,520 → 1230 tokens through the max_pixels branch
    e, c = chosen((4032, 3024), "qwen2-vl", max_pixels=1003520)
    assert e.candidates[1] is c and c.scores["tokens"] == 1230 and c.scores["beta"] > 1
    assert c.scores["pixels counted"] <= 1003520 < e.candidates[0].scores["pixels counted"]
    assert "max_pixels branch is tested first" in e.candidates[2].note
    assert "shrinks" in e.decision


def test_qwen_checkpoint_bounds_keep_the_large_photo():
    _, c = chosen((4032, 3024), "qwen2-vl")
    assert c.scores["tokens"] == 15552 and "kept" in c.note


def test_glm_counts_two_frames_and_scales_small_sides_first():
    e, c = chosen((10, 500), "glm-4.1v")
    assert "first scaled" in e.decision and "10×500 → 28×1400" in e.decision
    assert c.scores["pixels counted"] == 2 * 28 * 1400 and "2·h·w" in e.rule


def test_paddleocr_stretches_the_thin_side_then_enlarges():
    e, c = chosen((10, 500), "paddleocr-vl")
    assert "stretched" in e.decision and e.candidates[2] is c and c.scores["tokens"] == 194


@pytest.mark.parametrize("name", ["qwen2-vl", "qwen3-vl", "paddleocr-vl"])
def test_qwen_aspect_above_200_is_refused_like_the_plan(name):
    with pytest.raises(PlanError, match="200:1"):
        gridvlm.explain((10, 2010), name)


# ---------------------------------------------------------------------------------------------
# Kimi-VL (navit_resize: the smallest of four scales)


def test_kimi_keeps_an_image_inside_every_limit():
    e, c = chosen((1024, 768), "kimi-vl")
    assert e.candidates[0] is c and c.scores["scale"] == 1 and c.scores["tokens"] == 1036
    assert all(x.scores["scale"] > 1 for x in e.candidates[1:])


def test_kimi_side_cap_binds_on_a_long_strip():
    # families-2.md §15: 7200×100 → the 512-patch side cap binds
    e, c = chosen((7200, 100), "kimi-vl")
    assert e.candidates[3] is c and c.scores["scale"] == pytest.approx(7168 / 7200)
    assert "width cap binds" in e.decision


def test_kimi_patch_budget_binds_on_a_big_photo():
    e, c = chosen((20000, 20000), "kimi-vl")
    assert e.candidates[1] is c and c.scores["tokens"] == 4096


def test_kimi_equal_scales_keep_the_first():
    # 14336×14336 with max_patches = 512²: budget √(512²/1024²) = 0.5 = the side caps 7168/14336; min() keeps the first
    e, c = chosen((14336, 14336), "kimi-vl", max_patches=512 * 512)
    assert [x.scores["scale"] for x in e.candidates[1:]] == [0.5, 0.5, 0.5]
    assert e.candidates[1] is c and "min() keeps the first" in c.note and "min() keeps the first" in e.decision
    assert all("tied" in x.note for x in e.candidates[2:])


# ---------------------------------------------------------------------------------------------
# Fuyu


def test_fuyu_keeps_an_image_that_fits():
    e, c = chosen((1024, 768), "fuyu")
    assert e.candidates[0] is c and c.scores["tokens"] == 910 and "fits" in e.decision


def test_fuyu_the_smaller_scale_binds():
    e, c = chosen((4000, 1000), "fuyu")
    assert e.candidates[2] is c and c.scores["scale"] == 0.48 and e.candidates[1].scores["scale"] == 1.08


def test_fuyu_equal_scales_keep_the_height():
    e, c = chosen((3840, 2160), "fuyu")
    assert e.candidates[1] is c and e.candidates[1].scores["scale"] == e.candidates[2].scores["scale"] == 0.5
    assert "min() keeps the first" in c.note and "tie" in e.decision


# ---------------------------------------------------------------------------------------------
# Gemma 3 (Pan & Scan) and Gemma 4


def test_gemma3_without_pan_and_scan_has_nothing_to_choose():
    e, c = chosen((1024, 768), "gemma3")
    assert len(e.candidates) == 1 and "off" in c.note


def test_gemma3_ratio_exactly_at_the_threshold_activates():
    # families-2.md §1: 1200×1000 activates (1.2 is not < 1.2); the count 1 is raised to 2
    e, c = chosen((1200, 1000), "gemma3", pan_and_scan=True)
    assert e.candidates[1] is c and c.scores["crops"] == 2 and c.scores["floor(ratio + 0.5)"] == 1
    assert "raised to the minimum of 2" in c.note and "not taken" in e.candidates[0].note


def test_gemma3_ratio_just_below_the_threshold_does_not():
    e, c = chosen((1199, 1000), "gemma3", pan_and_scan=True)
    assert e.candidates[0] is c and c.scores["aspect ratio"] < c.scores["threshold"] == 1.2
    assert len(e.candidates) == 1 and "below 1.2" in e.decision


def test_gemma3_count_rounds_half_up_not_to_even():
    # 2500×1000: floor(2.5 + 0.5) = 3 crops, where Python's round(2.5) would give 2
    e, c = chosen((2500, 1000), "gemma3", pan_and_scan=True)
    assert c.scores["crops"] == 3 and c.scores["tokens"] == 1024 and "Python's round would give 2" in c.note


def test_gemma3_crop_side_below_min_refuses():
    # 600×250: 2 crops of 300×250, 250 < 256 → no crops
    e, c = chosen((600, 250), "gemma3", pan_and_scan=True)
    assert e.candidates[2] is c and c.scores["smallest crop side"] == 250 and c.scores["tokens"] == 256
    assert "refused" in c.note and "falls back" in e.decision


def test_gemma3_max_crops_caps_the_count():
    e, c = chosen((8000, 1000), "gemma3", pan_and_scan=True)
    assert c.scores["floor(ratio + 0.5)"] == 8 and c.scores["crops"] == 4 and "capped at max 4" in c.note


def test_gemma4_scales_both_sides():
    e, c = chosen((1024, 768), "gemma4")
    assert e.candidates[0] is c and c.scores["tokens"] == 266 and "912×672" in c.label


def test_gemma4_one_row_branch_only_at_small_budgets():
    # families-2.md §2: 8000×30 takes the h == 0 branch at 70 (48 × 3360) but not at 280 (48 × 13104, 273 tokens)
    e, c = chosen((8000, 30), "gemma4", max_soft_tokens=70)
    assert e.candidates[1] is c and "3360×48" in c.label and "floored to 0" in e.decision
    e, c = chosen((8000, 30), "gemma4")
    assert e.candidates[0] is c and c.scores["tokens"] == 273


def test_gemma4_one_column_for_a_tall_strip():
    e, c = chosen((30, 8000), "gemma4", max_soft_tokens=70)
    assert e.candidates[2] is c and "48×3360" in c.label


def test_gemma4_upscales_a_tiny_image():
    e, c = chosen((1, 1), "gemma4")
    assert c.scores["scale f"] > 1 and "upscaled" in e.decision and "768×768" in c.label


def test_paligemma_is_a_fixed_rule():
    e, c = chosen((1024, 768), "paligemma")
    assert len(e.candidates) == 1 and "no choice" in e.rule


# ---------------------------------------------------------------------------------------------
# Pixtral and Mistral 3


def test_pixtral_at_longest_edge_is_kept():
    e, c = chosen((1024, 768), "pixtral")
    assert e.candidates[0] is c and c.scores["tokens"] == 3072 and c.scores["max(W, H) / longest_edge"] == 1


def test_pixtral_one_pixel_over_shrinks_then_rounds_up():
    e, c = chosen((1025, 700), "pixtral")
    assert e.candidates[1] is c and "1024×704" in c.label and "1024×699" in e.decision


def test_mistral3_merger_drops_the_odd_row():
    # families-2.md §5: 1024×768 → 1036×770 → 27 × 37 = 999; the 2×2 merger drops 14 px of height
    e, c = chosen((1024, 768), "mistral3")
    assert c.scores["tokens"] == 999 and "1036×770" in c.label and "drops" in e.decision


# ---------------------------------------------------------------------------------------------
# Idefics2


def test_idefics2_square_takes_the_width_branch():
    e, c = chosen((2000, 2000), "idefics2")
    assert e.candidates[1] is c and "width test comes first" in e.candidates[2].note


def test_idefics2_short_side_raised_after_the_cap():
    e, c = chosen((500, 3000), "idefics2")
    assert e.candidates[2] is c and "378×980" in c.label and "raised to shortest_edge 378" in c.note


def test_idefics2_small_image_kept_then_raised():
    e, c = chosen((300, 300), "idefics2")
    assert e.candidates[0] is c and "378×378" in c.label


def test_idefics2_split_names_the_quadrants():
    e, c = chosen((2000, 1500), "idefics2", do_image_splitting=True)
    assert c.grid == (2, 2) and c.scores["tokens"] == 320 and "4 quadrants" in e.decision


"""gridvlm.metrics: hand-checked numbers on known plans, invariants over every strategy, and seams through content."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gridvlm
from gridvlm.metrics import (
    TransformerSpec,
    plan_metrics,
    seam_energy,
    seam_lines,
    union_area,
)

SIZES = [(1, 1), (1, 200), (200, 1), (1024, 768), (4032, 3024)]


# ---------------------------------------------------------------------------------------------------------------
# Hand-checked plans


def test_llava_next_padding_fraction_from_the_canvas():
    # 1024×768 on the 672×672 canvas: content 672×504, so each of the 4 tiles is 168·336/336² = 25 % padding,
    # the squashed global view none: (4 · 0.25 · 336²) / (5 · 336²) = 0.2.
    m = plan_metrics(gridvlm.plan((1024, 768), "llava-next"))
    assert m["views"] == 5
    assert m["padding_fraction"] == pytest.approx(0.2)


def test_llava_1_5_crop_loses_the_sides():
    m = plan_metrics(gridvlm.plan((1024, 768), "llava-1.5", mode="crop"))
    assert m["coverage"] == pytest.approx(768 * 768 / (1024 * 768))
    assert m["tile_coverage"] == pytest.approx(0.75)


def test_llava_1_5_pad_keeps_everything_and_pads_a_quarter():
    m = plan_metrics(gridvlm.plan((1024, 768), "llava-1.5", mode="pad"))
    assert m["coverage"] == 1.0
    assert m["padding_fraction"] == pytest.approx(1 - 768 / 1024)
    assert m["max_downscale"] == pytest.approx(1024 / 336)  # the 1024 px side becomes 336
    assert m["max_upscale"] == 1.0
    assert m["aspect_distortion"] == pytest.approx(0.0, abs=1e-9)


def test_squashed_global_view_is_the_worst_aspect_distortion():
    # llava-next's global view squashes 4:3 into 1:1: r = 1 / (4/3), distortion 4/3 − 1.
    assert plan_metrics(gridvlm.plan((1024, 768), "llava-next"))["aspect_distortion"] == pytest.approx(1 / 3)


def test_qwen2_vl_pixels_per_token():
    # smart_resize: 1024×768 → 1036×756 = 37 × 27 merged 28-px cells = 999 tokens.
    m = plan_metrics(gridvlm.plan((1024, 768), "qwen2-vl"))
    assert m["tokens"] == 37 * 27
    assert m["pixels_per_token"] == pytest.approx(1024 * 768 / 999)


def test_flops_formula_by_hand():
    spec = TransformerSpec("toy", layers=2, hidden=2, mlp=4, gated=False)
    # per layer 2·n·(4·d² + 2·d·mlp) + 4·n²·d with n=3, d=2, mlp=4: 2·3·(16+16) + 4·9·2 = 264
    assert spec.gflops(3) == pytest.approx(2 * 264 / 1e9)
    gated = TransformerSpec("toy", layers=1, hidden=2, mlp=4, gated=True)
    assert gated.gflops(3) == pytest.approx((2 * 3 * (16 + 24) + 72) / 1e9)


def test_flops_positive_and_increasing_with_tokens():
    rows = [plan_metrics(gridvlm.plan((4032, 3024), "internvl", max_tiles=k)) for k in (1, 2, 4, 6, 12)]
    rows.sort(key=lambda m: m["tokens"])
    for key in ("vision_gflops", "llm_prefill_gflops"):
        values = [m[key] for m in rows]
        assert all(v > 0 for v in values)
        assert values == sorted(values) and values[0] < values[-1]


def test_navit_has_no_language_model():
    m = plan_metrics(gridvlm.plan((1024, 768), "navit"))
    assert m["llm_prefill_gflops"] == 0.0 and m["llm_model"] is None
    assert m["vision_gflops"] > 0


# ---------------------------------------------------------------------------------------------------------------
# Every strategy


@pytest.mark.parametrize("name", gridvlm.list_strategies())
def test_every_strategy_has_a_reference_model(name):
    assert gridvlm.strategy_info(name).reference_model is not None, \
        f"give {name!r} a reference_model where it registers"


@pytest.mark.parametrize("name", gridvlm.list_strategies())
@pytest.mark.parametrize("size", SIZES)
def test_plan_metrics_are_finite_and_in_range(name, size):
    try:
        plan = gridvlm.plan(size, name)
    except gridvlm.PlanError as exc:  # a size its reference refuses (Mistral 3 at 1×1): no plan, no metrics
        assert str(exc), "a PlanError must say what was wrong"
        return
    m = plan_metrics(plan)
    json.dumps(m)
    numbers = {k: v for k, v in m.items() if not isinstance(v, str) and v is not None}
    assert all(math.isfinite(v) for v in numbers.values()), m
    assert 0.0 <= m["padding_fraction"] <= 1.0
    assert 0.0 <= m["tile_coverage"] <= m["coverage"] + 1e-12 <= 1.0 + 1e-12
    assert m["max_upscale"] >= 1.0 and m["max_downscale"] >= 1.0 and m["aspect_distortion"] >= 0.0
    assert (m["pixels_per_token"] is None) == (m["tokens"] == 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(0, 12), st.integers(0, 12)),
                min_size=0, max_size=6))
def test_union_area_matches_a_raster(raw):
    boxes = [(min(a, c), min(b, d), max(a, c), max(b, d)) for a, b, c, d in raw]
    grid = np.zeros((10, 10), dtype=bool)  # clip to a 10×10 image
    for x0, y0, x1, y1 in boxes:
        grid[y0:y1, x0:x1] = True
    assert union_area([tuple(map(float, b)) for b in boxes], (0.0, 0.0, 10.0, 10.0)) == grid.sum()


# ---------------------------------------------------------------------------------------------------------------
# Seams


def _edge_image(x: int, size=(1024, 768)) -> np.ndarray:
    img = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    img[:, x:] = 255
    return img


def _text_like(size=(1024, 768), seed=0) -> np.ndarray:
    """White page with rows of random dark 'glyphs': dense, evenly spread edges."""
    rng = np.random.default_rng(seed)
    img = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
    for y in range(8, size[1] - 16, 24):
        ink = rng.random((1, size[0] // 4)) < 0.5
        img[y:y + 12] = np.where(np.repeat(ink, 4, axis=1)[..., None], 0, 255)
    return img


def test_fixed_grid_seam_positions():
    lines = seam_lines(gridvlm.plan((1024, 768), "fixed-grid"))  # 336-px tiles, no resize
    assert sorted(c for a, c, *_ in lines if a == "v") == [336, 672, 1008]
    assert sorted(c for a, c, *_ in lines if a == "h") == [336, 672]
    assert all(p == 0 for *_, p in lines)


def test_edge_on_a_tile_boundary_scores_higher_than_inside_a_tile():
    plan = gridvlm.plan((1024, 768), "fixed-grid")
    on_seam = seam_energy(_edge_image(336), plan).score
    inside = seam_energy(_edge_image(168), plan).score
    assert on_seam > 1.0 > inside
    assert on_seam > 5 * inside


def test_overlap_hides_seams():
    img = _text_like()
    plain = seam_energy(img, gridvlm.plan((1024, 768), "fixed-grid", overlap=0))
    overlapped = seam_energy(img, gridvlm.plan((1024, 768), "fixed-grid", overlap=112))
    assert plain.score > 0.3
    assert overlapped.score < plain.score


@pytest.mark.parametrize("name,params", [("qwen2-vl", {}), ("navit", {}), ("llava-1.5", {"mode": "crop"})])
def test_no_internal_seams_scores_zero(name, params):
    report = seam_energy(_text_like(), gridvlm.plan((1024, 768), name, **params))
    assert report.segments == () and report.score == 0.0


def test_a_preview_gives_the_same_seams_in_original_coordinates():
    plan = gridvlm.plan((2048, 1536), "internvl")
    full = seam_energy(_edge_image(512, (2048, 1536)), plan)
    half = seam_energy(_edge_image(256, (1024, 768)), plan)
    assert [s[:4] for s in half.segments] == [s[:4] for s in full.segments]
    assert half.score == pytest.approx(full.score, rel=0.25)


def test_a_preview_of_an_extreme_aspect_ratio_is_accepted():
    plan = gridvlm.plan((4033, 3), "internvl")  # its preview is 1024×1 after rounding
    assert seam_energy(np.zeros((1, 1024, 3), np.uint8), plan).score == 0.0


def test_a_flat_image_has_no_seam_energy():
    report = seam_energy(np.full((768, 1024, 3), 128, np.uint8), gridvlm.plan((1024, 768), "internvl"))
    assert report.segments and report.score == 0.0


def test_an_image_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="1024×768"):
        seam_energy(np.zeros((500, 500, 3), np.uint8), gridvlm.plan((1024, 768), "internvl"))

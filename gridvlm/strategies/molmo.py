"""Molmo2: overlapping crops. The whole image is squashed onto a canvas of th × tw windows of 19 patches plus a
4-patch margin on each side, cut into 378-px crops that overlap by 112 px; a 378-px low-resolution view of the
whole image comes first. The overlaps are dropped before 2 × 2 pooling, so the high-resolution tokens form
one ceil(canvas/28) grid, each row closed by an `<im_col>` marker.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, squashed_view, to_float32
from .canvas_tiling import least_scale_explain
from .grids import resized_grid_plan
from .registry import BudgetKnob, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register
from .reference import MOLMO2_VIT, QWEN3_8B, SIGLIP, ReferenceModel


def _scale_f32(numerator: int, denominator: int) -> float:
    """float32 numerator / denominator as torch divides: ±inf for a zero denominator."""
    if denominator == 0:
        return math.inf
    return to_float32(numerator / denominator)


def molmo_select_tiling(height: int, width: int, window: int, max_crops: int) -> tuple[int, int]:
    """`select_tiling`: (rows, cols) with rows·cols ≤ max_crops sorted by (rows·cols, rows); the scale each needs
    is min(rows·window / height, cols·window / width) in float32. If every grid would shrink the image, the one
    shrinking it least; else the smallest upscale (first wins ties)."""
    tilings, _, index, _ = molmo_tiling_search(height, width, window, max_crops)
    return tilings[index]


def molmo_tiling_search(height: int, width: int, window: int, max_crops: int):
    """`select_tiling` with its scores: (tilings (rows, cols), each one's float32 scale, the index taken, whether
    every tiling shrinks the image)."""
    tilings = sorted(((a, b) for a in range(1, max_crops + 1) for b in range(1, max_crops + 1) if a * b <= max_crops),
                     key=lambda x: (x[0] * x[1], x[0]))
    scales = [min(_scale_f32(a * window, height), _scale_f32(b * window, width)) for a, b in tilings]
    if all(s < 1 for s in scales):
        return tilings, scales, scales.index(max(scales)), True
    kept = [1e10 if s < 1.0 else s for s in scales]
    return tilings, scales, kept.index(min(kept)), False


def _molmo2_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    _check_molmo2(p)
    crop, patch, m = p["crop_size"], p["patch_size"], p["overlap_margin"]
    window, margin = (crop // patch - 2 * m) * patch, 2 * m * patch
    tilings, scales, index, all_down = molmo_tiling_search(h - margin, w - margin, window, p["max_crops"])
    rule = (f"each grid of rows×cols {window}-px windows (≤ {p['max_crops']} crops, sorted by crops then rows) is "
            f"scored by the float32 scale min(rows·{window} / (H − {margin}), cols·{window} / (W − {margin})) — the "
            f"image less the {margin}-px margins; the smallest scale ≥ 1 wins (first on ties); if every grid is "
            "below 1, the largest")
    e = least_scale_explain("molmo2", w, h, tilings, scales, index, all_down, rule,
                            lambda r, c: f"{r}×{c} crops on a {c * window + margin}×{r * window + margin} canvas")
    if min(w, h) <= margin:
        e = replace(e, decision=e.decision + f" (a side of at most {margin} px leaves nothing after the margins: "
                                              "the reference's float32 division gives infinite or negative scales, "
                                              "ranked as they are)")
    return e


def _owned(tiles: int, window: int, crop: int, left: int, right: int, pool: int) -> list[int]:
    """Pooled cells along one axis that each crop contributes: a pooled cell belongs to the crop that holds its
    first real patch (the index grid is padded with -1 evenly, the extra row/col at the end)."""
    patches = tiles * window + left + right
    cells = math.ceil(patches / pool)
    before = (cells * pool - patches) // 2
    starts = [0 if r == 0 else r * window + left for r in range(tiles)]
    owned = [0] * tiles
    for j in range(cells):
        first = max(0, j * pool - before)
        owned[max(r for r in range(tiles) if starts[r] <= first)] += 1
    return owned


def _molmo2_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    crop, patch, m, pool = p["crop_size"], p["patch_size"], p["overlap_margin"], p["pooling_size"]
    crop_patches = crop // patch
    window_patches = crop_patches - 2 * m
    window, margin = window_patches * patch, 2 * m * patch
    th, tw = molmo_select_tiling(h - margin, w - margin, window, p["max_crops"])
    ch, cw = th * window + margin, tw * window + margin
    rows_hi, cols_hi = math.ceil((ch // patch) / pool), math.ceil((cw // patch) / pool)
    low = math.ceil(crop_patches / pool)
    own_y = _owned(th, window_patches, crop_patches, m, m, pool)
    own_x = _owned(tw, window_patches, crop_patches, m, m, pool)
    plan = resized_grid_plan("molmo2", w, h, p, th, tw, crop, 0, (0, 0), None, stride=window, canvas=(cw, ch))
    tiles = tuple(replace(t, index=t.index + 1, token_count=own_y[t.row] * own_x[t.col],
                          token_grid=(own_y[t.row], own_x[t.col])) for t in plan.tiles)
    thumb = squashed_view(0, (w, h), (crop, crop), low * low, (low, low))
    tokens = {"thumbnail": low * low, "tiles": rows_hi * cols_hi}
    # <low_res_im_start> + low × (low <im_patch> + <im_col>) + <im_end>, <im_start> + rows × (… + <im_col>) + <im_end>
    text = 4 + low + rows_hi
    return Plan("molmo2", p, (w, h), (th, tw), (cw, ch), tiles, thumb, "first", sum(tokens.values()), tokens,
                text_tokens=text, content_box=(0, 0, cw, ch))


def _check_molmo2(p: dict[str, Any]) -> None:
    crop_patches = p["crop_size"] // p["patch_size"]
    if crop_patches - 2 * p["overlap_margin"] < 1:
        raise PlanError(f"molmo2: a {p['crop_size']}-px crop has {crop_patches} patches of {p['patch_size']} px, "
                        f"too few for two overlap margins of {p['overlap_margin']} patches; use a smaller "
                        f"overlap_margin (at most {(crop_patches - 1) // 2})")


register(StrategyInfo(
    name="molmo2",
    family="resize-and-tile",
    summary="Molmo2 overlapping crops: the grid of ≤ 8 windows of 266 px that needs the least upscale (or shrinks "
            "least), image squashed onto it plus 112-px margins, 378-px crops overlapping by 112 px; 378-px "
            "low-resolution view first; overlaps dropped before 2×2 pooling",
    reference="Clark et al. 2025, Molmo2; transformers models/molmo2 image_processing_molmo2.py select_tiling, "
              "compute_crop_geometry, _build_overlapping_crops, get_image_grid_and_crops; processing_molmo2.py "
              "replace_image_token",
    params={
        "max_crops": ParamSpec("int", 8, "most crops", min=1, max=64),
        "crop_size": ParamSpec("int", 378, "crop side (size)", min=14, max=4096),
        "overlap_margin": ParamSpec("int", 4, "patches of overlap on each side of a crop (overlap_margins = [m, m])",
                                    min=0, max=64),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
        "pooling_size": ParamSpec("int", 2, "pooling window per side (pooling_size = [k, k])", min=1, max=8),
    },
    budget="max_crops (most crops), 1…8",
    planner=_molmo2_plan,
    explainer=_molmo2_explain,
    knob=BudgetKnob("max_crops", "most crops", lambda p, n: range(1, 9), monotone=False),
    check=_check_molmo2,
    pixels=PixelRecipe(SIGLIP, resample="bilinear"),  # IMAGENET_STANDARD mean/std 0.5, BILINEAR
    reference_model=ReferenceModel(MOLMO2_VIT, QWEN3_8B),  # allenai/Molmo2-8B
    vectors=("molmo2",),
    order=370,
))

"""LFM2-VL: a small image is one smart-resized view; a large one is squashed onto 512-px tiles plus a thumbnail.

"Large" is LFM2-VL's own test (`_is_image_too_large`): the image, rounded to 32-px cells, has more pixels than
max_image_tokens · (16·2)² · max_pixels_tolerance. The grid is InternVL's closest aspect ratio over 2…10 tiles;
the thumbnail (and the single view) is the image smart-resized to 32-px cells within 64…256 tokens.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, make_tile, whole
from .grids import aspect_ratio_search, resized_grid_plan
from .phi import ASPECT_RULE, aspect_candidates, target_ratios
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register
from .reference import LFM2_1_2B, SIGLIP, SIGLIP2_NAFLEX_400M, ReferenceModel


def lfm2_smart_resize(w: int, h: int, p: dict[str, Any]) -> tuple[int, int]:
    """(w̄, h̄): `Lfm2VlImageProcessor.smart_resize`, sides in multiples of patch·downsample, within the token range."""
    f = p["encoder_patch_size"] * p["downsample_factor"]
    lo = p["min_image_tokens"] * p["encoder_patch_size"] ** 2 * p["downsample_factor"] ** 2
    hi = p["max_image_tokens"] * p["encoder_patch_size"] ** 2 * p["downsample_factor"] ** 2
    h_bar = max(f, round(h / f) * f)
    w_bar = max(f, round(w / f) * f)
    if h_bar * w_bar > hi:
        beta = math.sqrt((h * w) / hi)
        h_bar = max(f, math.floor(h / beta / f) * f)
        w_bar = max(f, math.floor(w / beta / f) * f)
    elif h_bar * w_bar < lo:
        beta = math.sqrt(lo / (h * w))
        h_bar = math.ceil(h * beta / f) * f
        w_bar = math.ceil(w * beta / f) * f
    return w_bar, h_bar


def lfm2_too_large(w: int, h: int, p: dict[str, Any]) -> bool:
    """`_is_image_too_large` (note its floor of one patch, not one cell)."""
    pixels, limit = lfm2_size_test(w, h, p)
    return pixels > limit


def lfm2_size_test(w: int, h: int, p: dict[str, Any]) -> tuple[int, float]:
    """The two sides of `_is_image_too_large`: (the image's pixels rounded to cells, the split threshold)."""
    ps, f = p["encoder_patch_size"], p["encoder_patch_size"] * p["downsample_factor"]
    h_bar = max(ps, round(h / f) * f)
    w_bar = max(ps, round(w / f) * f)
    return h_bar * w_bar, p["max_image_tokens"] * ps ** 2 * p["downsample_factor"] ** 2 * p["max_pixels_tolerance"]


def _lfm2_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    min_tiles, max_tiles = (p["min_tiles"], p["max_tiles"]) if p["do_image_splitting"] else (1, 1)
    t = p["tile_size"]
    new_w, new_h = lfm2_smart_resize(w, h, p)
    pixels, limit = lfm2_size_test(w, h, p)
    too_large = pixels > limit
    split = too_large and not min_tiles == max_tiles == 1
    rule = (f"an image whose size rounded to {p['encoder_patch_size'] * p['downsample_factor']}-px cells exceeds "
            f"{limit:g} px (max_image_tokens · cell² · max_pixels_tolerance) is split by InternVL's rule over "
            f"{min_tiles}…{max_tiles} tiles of {t} px; otherwise it is one smart-resized view. " + ASPECT_RULE[0].upper() + ASPECT_RULE[1:])
    if not too_large:
        note = f"rounded size {pixels} ≤ {limit:g} px: not too large, one view"
    elif not split:
        note = f"rounded size {pixels} > {limit:g} px, but splitting is off (min_tiles = max_tiles = 1): one view"
    else:
        note = f"rounded size {pixels} > {limit:g} px: too large, the image is split"
    gate = Candidate(f"one view smart-resized to {new_w}×{new_h}", {"rounded pixels": pixels, "limit": limit},
                     not split, (1, 1), note)
    if not split:
        return Explanation("lfm2-vl", (w, h), rule, (gate,), f"{note[0].upper()}{note[1:]} ({new_w}×{new_h}).")
    candidates, decision = aspect_candidates(w, h, t, aspect_ratio_search(w, h, target_ratios(min_tiles, max_tiles),
                                                                          t))
    return Explanation("lfm2-vl", (w, h), rule, (gate, *candidates),
                       f"the rounded size {pixels} exceeds {limit:g} px, so the image is split; " + decision)


def _view_tokens(side_px: int, p: dict[str, Any]) -> int:
    """Feature cells along one side: ceil((side // patch) / downsample)."""
    return math.ceil((side_px // p["encoder_patch_size"]) / p["downsample_factor"])


def _lfm2_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    min_tiles, max_tiles = (p["min_tiles"], p["max_tiles"]) if p["do_image_splitting"] else (1, 1)
    new_w, new_h = lfm2_smart_resize(w, h, p)
    rows_i, cols_i = _view_tokens(new_h, p), _view_tokens(new_w, p)
    image_tokens = rows_i * cols_i
    if lfm2_too_large(w, h, p) and not min_tiles == max_tiles == 1:
        t = p["tile_size"]
        cols, rows = aspect_ratio_search(w, h, target_ratios(min_tiles, max_tiles), t)[0]
        g = _view_tokens(t, p)
        if rows * cols == 1:
            # one 512-px tile, no thumbnail, but the prompt gets the smart-resized size's count (processor quirk)
            plan = resized_grid_plan("lfm2-vl", w, h, p, 1, 1, t, g * g, (g, g), None, text_tokens=2)
            note = (f"a 1×1 grid (min_tiles=1): the encoder sees one {t}-px tile ({g * g} features) but the "
                    f"processor writes {image_tokens} <image> tokens for the smart-resized {new_w}×{new_h} size",)
            return _with_tokens(plan, {"tiles": image_tokens}, note)
        thumb = "last" if p["use_thumbnail"] else None
        plan = resized_grid_plan("lfm2-vl", w, h, p, rows, cols, t, g * g, (g, g), None,
                                 text_tokens=2 + rows * cols + (1 if thumb else 0))
        if not thumb:
            return plan
        view = make_tile(rows * cols, -1, -1, whole((w, h)), (new_w, new_h), image_tokens, (rows_i, cols_i))
        tokens = {**plan.tokens, "thumbnail": image_tokens}
        return Plan("lfm2-vl", p, (w, h), plan.grid, plan.canvas_size, plan.tiles, view, "last",
                    sum(tokens.values()), tokens, text_tokens=plan.text_tokens, content_box=plan.content_box)
    tile = make_tile(0, 0, 0, whole((w, h)), (new_w, new_h), image_tokens, (rows_i, cols_i))
    return Plan("lfm2-vl", p, (w, h), (1, 1), None, (tile,), None, None, image_tokens, {"tiles": image_tokens},
                text_tokens=2)


def _with_tokens(plan: Plan, tokens: dict[str, int], notes: tuple[str, ...]) -> Plan:
    return replace(plan, tokens=tokens, token_count=sum(tokens.values()), notes=notes)


def _check_lfm2(p: dict[str, Any]) -> None:
    if p["do_image_splitting"] and p["min_tiles"] > p["max_tiles"]:
        raise PlanError(f"lfm2-vl: min_tiles ({p['min_tiles']}) must not exceed max_tiles ({p['max_tiles']}) "
                        f"('min_tiles must be less than or equal to max_tiles')")
    if p["min_image_tokens"] > p["max_image_tokens"]:
        raise PlanError(f"lfm2-vl: min_image_tokens ({p['min_image_tokens']}) must not exceed max_image_tokens "
                        f"({p['max_image_tokens']})")


def _lfm2_knob_values(p: dict[str, Any], _n: int) -> list[int]:
    return list(range(p["min_tiles"], 11)) if p["do_image_splitting"] else [p["max_tiles"]]


register(StrategyInfo(
    name="lfm2-vl",
    family="resize-and-tile",
    summary="LFM2-VL: images under 2× the 256-token budget are one view smart-resized to 32-px cells (64…256 "
            "tokens); larger ones are squashed onto InternVL's closest grid of 2…10 tiles of 512 px, thumbnail "
            "last; 256 tokens per tile, row/col marker tokens",
    reference="Liquid AI 2025, LFM2-VL; transformers models/lfm2_vl image_processing_lfm2_vl.py resize_and_split "
              "(_is_image_too_large, smart_resize, crop_image_to_patches), processing_lfm2_vl.py "
              "_build_image_tokens",
    params={
        "tile_size": ParamSpec("int", 512, "tile side", min=32, max=4096),
        "min_tiles": ParamSpec("int", 2, "fewest tiles of a split image", min=1, max=64),
        "max_tiles": ParamSpec("int", 10, "most tiles of a split image", min=1, max=64),
        "use_thumbnail": ParamSpec("bool", True, "append the smart-resized whole image after the tiles"),
        "min_image_tokens": ParamSpec("int", 64, "fewest tokens of a single view / thumbnail", min=1, max=10**5),
        "max_image_tokens": ParamSpec("int", 256, "most tokens of a single view / thumbnail", min=1, max=10**5),
        "encoder_patch_size": ParamSpec("int", 16, "ViT patch side", min=1, max=64),
        "downsample_factor": ParamSpec("int", 2, "pixel-unshuffle factor per side", min=1, max=8),
        "max_pixels_tolerance": ParamSpec("float", 2.0, "split when the image exceeds this many times the "
                                                        "max_image_tokens pixel budget", min=0.01, max=100.0),
        "do_image_splitting": ParamSpec("bool", True, "split large images into tiles; False = always one view"),
    },
    budget="max_tiles (min_tiles…10); a single view is fixed by max_image_tokens",
    planner=_lfm2_plan,
    explainer=_lfm2_explain,
    knob=BudgetKnob("max_tiles", "most tiles", _lfm2_knob_values, monotone=False),
    check=_check_lfm2,
    pixels=PixelRecipe(SIGLIP, resample="bilinear"),  # IMAGENET_STANDARD mean/std 0.5, BILINEAR
    reference_model=ReferenceModel(SIGLIP2_NAFLEX_400M, LFM2_1_2B),  # LiquidAI/LFM2-VL-1.6B
    vectors=("lfm2_vl", "lfm2_vl_no_split"),
    order=360,
))

"""Phi vision: Phi-4-multimodal's dynamic HD grid and Phi-3.5-vision's HD transform.

Both cut a padded HD canvas into square crops, append a global view of the whole padded canvas *last* in the
LLM sequence (their pixel tensors put it first), and join the crops' 2×2-merged features with learned newline
embeddings (`sub_GN`) and one separator (`glb_GN`) the model inserts — all counted in `token_count`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, cut_canvas, make_tile, whole
from .grids import aspect_ratio_search
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register
from .reference import CLIP, CLIP_L_336, PHI35_MINI, PHI4_MINI, SIGLIP, SIGLIP_SO400M, ReferenceModel


@functools.lru_cache(maxsize=64)
def target_ratios(min_num: int, max_num: int) -> tuple[tuple[int, int], ...]:
    """InternVL-style candidate grids (w, h) with min_num ≤ w·h ≤ max_num, in the references' own order:
    built as a Python set, then stably sorted by w·h (the set's iteration order decides equal products)."""
    ratios = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    return tuple(sorted(ratios, key=lambda x: x[0] * x[1]))


ASPECT_RULE = ("each grid is scored by |image w/h − cols/rows| and the smallest distance wins; on an exact tie the "
               "later (bigger) grid replaces the one found first only when the image has more than half its pixels "
               "(w·h > 0.5 · tile² · tiles)")


def _rc(ratio: tuple[int, int]) -> str:
    return f"{ratio[1]}×{ratio[0]}"


def aspect_candidates(w: int, h: int, tile: int, found) -> tuple[list[Candidate], str]:
    """The candidates and decision of an `aspect_ratio_search` result `found` = (best, steps), grids as rows×cols."""
    best, steps = found
    area = w * h
    candidates = []
    for ratio, diff, outcome, before in steps:
        c, r = ratio
        half = 0.5 * tile * tile * c * r
        note = ""
        if outcome == "tie-taken":
            note = (f"ties {_rc(before)} on aspect distance; image area {area} > half this grid's pixels "
                    f"({half:g}), so this later grid replaces it")
        elif outcome == "tie-kept":
            note = (f"ties {_rc(before)} on aspect distance; image area {area} ≤ half this grid's pixels "
                    f"({half:g}), so {_rc(before)} is kept")
        candidates.append(Candidate(f"{r}×{c} tiles ({c * tile}×{r * tile} canvas)",
                                    {"aspect distance": diff, "tiles": c * r}, ratio == best, (r, c), note))
    best_diff = next(d for ratio, d, _, _ in steps if ratio == best)
    tied = [ratio for ratio, d, _, _ in steps if d == best_diff]
    decision = (f"{_rc(best)} ({best[0] * best[1]} tiles) is closest to the image's aspect ratio {w / h:.4g} "
                f"(distance {best_diff:.4g})")
    if len(tied) > 1:
        decision += (f"; {', '.join(map(_rc, tied))} tie at that distance: the reference keeps the first one found "
                     f"({_rc(tied[0])}) and lets a later grid replace it only while the image has more than half "
                     f"that grid's pixels (area {area} > 0.5 · {tile}² · tiles), which leaves {_rc(best)}")
    return candidates, decision + "."


def _hd_token_grid(p: int) -> int:
    """Side of a view's feature grid after the 2×2 merge: ceil(p / 2) (the mask's 0::2 subsampling)."""
    return p // 2 + p % 2


# ---------------------------------------------------------------------------------------------
# Phi-4-multimodal


def _kept(cells: int, tiles: int, masked: int) -> list[int]:
    """Per tile along one axis: mask cells kept by the 0::2 subsampling that lie before the masked tail."""
    limit = cells * tiles - masked
    return [sum(1 for k in range(0, cells, 2) if t * cells + k < limit) for t in range(tiles)]


def _phi4_grid(w: int, h: int, p: dict[str, Any]):
    """((cols, rows), aspect search or None): ceil(W/crop) × ceil(H/crop), or InternVL's closest ratio over it."""
    t, max_num = p["crop_size"], p["dynamic_hd"]
    cols, rows = math.ceil(w / float(t)), math.ceil(h / float(t))
    if cols * rows > max_num:
        found = aspect_ratio_search(w, h, target_ratios(1, max_num), t)
        return found[0], found
    return (cols, rows), None


def _phi4_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    _phi4_plan(w, h, p)  # the reference's refusals
    t, max_num = p["crop_size"], p["dynamic_hd"]
    cols, rows = math.ceil(w / float(t)), math.ceil(h / float(t))
    (bc, br), found = _phi4_grid(w, h, p)
    first = Candidate(f"{rows}×{cols} crops: ceil({h}/{t}) rows × ceil({w}/{t}) cols ({cols * t}×{rows * t} canvas)",
                      {"crops": cols * rows, "most crops (dynamic_hd)": max_num}, found is None, (rows, cols),
                      "" if found is None else f"{cols * rows} crops exceed dynamic_hd={max_num}: the closest-aspect "
                                               "rule below decides instead")
    rule = (f"the image gets ceil(W/{t}) × ceil(H/{t}) crops of {t} px; only when that exceeds dynamic_hd "
            f"({max_num}) is the grid chosen by InternVL's rule over 1…{max_num} crops: " + ASPECT_RULE)
    if found is None:
        return Explanation("phi-4-multimodal", (w, h), rule, (first,),
                           f"{rows}×{cols} = {cols * rows} crops is within dynamic_hd={max_num}, so it is kept; "
                           "the closest-aspect search never runs.")
    candidates, decision = aspect_candidates(w, h, t, found)
    return Explanation("phi-4-multimodal", (w, h), rule, (first, *candidates),
                       f"ceil gives {rows}×{cols} = {cols * rows} crops, over dynamic_hd={max_num}; " + decision)


def _phi4_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t, patch = p["crop_size"], p["patch_size"]
    (cols, rows), _ = _phi4_grid(w, h, p)
    cw, ch = t * cols, t * rows
    rw, rh = cw / w, ch / h
    if rw < rh:
        new_w, new_h = cw, int(h * rw)
    else:
        new_w, new_h = int(w * rh), ch
    pad_w, pad_h = cw - new_w, ch - new_h
    if min(new_h, ch) < 10 or min(new_w, cw) < 10:
        raise PlanError(f"phi-4-multimodal refuses a {w}×{h} image: on its {cols}×{rows} grid the image would be "
                        f"resized to {new_w}×{new_h} px (under 10 px a side: 'the aspect ratio is very extreme'); "
                        f"use an aspect ratio closer to 1:{max(cols, rows) * t // 10} or a larger dynamic_hd")
    mask = t // patch  # mask cells per tile side
    g = _hd_token_grid(mask)
    kept_x = _kept(mask, cols, pad_w // patch if pad_w >= patch else 0)
    kept_y = _kept(mask, rows, pad_h // patch if pad_h >= patch else 0)
    useful_w, useful_h = sum(kept_x), sum(kept_y)
    tiles = cut_canvas((cw, ch), (0, 0, new_w, new_h), (w, h), rows, cols, (t, t), 0, 0, (g, g),
                       tokens_of=lambda r, c: kept_y[r] * kept_x[c])
    tiles = [replace(tile, token_grid=(kept_y[tile.row], kept_x[tile.col])) for tile in tiles]
    # the processor hard-codes the global view's 256 + 16 (= g² + g at 448 / 14)
    glb = make_tile(len(tiles), -1, -1, whole((w, h)), (t, t), g * g, (g, g),
                    content_box=(0.0, 0.0, new_w * t / cw, new_h * t / ch))
    tokens = {"tiles": useful_w * useful_h, "newlines": useful_h, "separator": 1, "thumbnail": g * g,
              "thumbnail_newlines": g}
    return Plan("phi-4-multimodal", p, (w, h), (rows, cols), (cw, ch), tuple(tiles), glb, "last",
                sum(tokens.values()), tokens, text_tokens=0, content_box=(0, 0, new_w, new_h))


register(StrategyInfo(
    name="phi-4-multimodal",
    family="resize-and-tile",
    summary="Phi-4-multimodal dynamic HD: ceil(W/448) × ceil(H/448) crops of 448 px (InternVL's closest ratio "
            "when over 36), image fitted and padded white right/bottom, padded cells masked; global view of "
            "the canvas last; 2×2-merged features with newlines and a separator",
    reference="Microsoft 2025, Phi-4-Mini technical report; transformers models/phi4_multimodal "
              "image_processing_phi4_multimodal.py dynamic_preprocess / _preprocess (num_img_tokens), "
              "modeling_phi4_multimodal.py (sub_GN / glb_GN, sub then global)",
    params={
        "crop_size": ParamSpec("int", 448, "crop side (size)", min=28, max=4096),
        "patch_size": ParamSpec("int", 14, "ViT patch side; the attention mask has crop_size / patch_size cells",
                                min=1, max=64),
        "dynamic_hd": ParamSpec("int", 36, "most crops (max_num); grids over it use InternVL's closest ratio",
                                min=1, max=64),
    },
    budget="dynamic_hd (most crops), 1…36",
    planner=_phi4_plan,
    explainer=_phi4_explain,
    knob=BudgetKnob("dynamic_hd", "most crops", lambda p, n: range(1, 37), monotone=False),
    # SigLIP mean/std 0.5, bicubic resize, white padding; the global view resizes the padded canvas
    pixels=PixelRecipe(SIGLIP, resample="bicubic", pad_colour=(255, 255, 255), thumbnail_from_canvas=True),
    reference_model=ReferenceModel(SIGLIP_SO400M, PHI4_MINI),  # microsoft/Phi-4-multimodal-instruct
    vectors=("phi4_multimodal",),
    order=350,
))


# ---------------------------------------------------------------------------------------------
# Phi-3.5-vision (remote code)
#
# Re-read from microsoft/Phi-3.5-vision-instruct `image_processing_phi3_v.py` (as vendored in
# VarunGumma/VLM2Vec src/model/baseline_backbone/phi3_v/): `HD_transform` transposes portrait images, finds the
# largest scale with scale·ceil(scale / ratio) ≤ num_crops, resizes to (int(336·scale), int(new_w / ratio)),
# `padding_336` pads the height to a multiple of 336 (top = int(pad / 2), white) and transposes back;
# `calc_num_image_tokens_from_image_size` counts (h//336 · w//336 + 1)·144 + 1 + (h//336 + 1)·12, and
# `image_embedding_phi3_v.py` `hd_feature_transform` orders them [sub + newlines, glb_GN, global + newlines]
# (hd_transform_order "sub_glb", as the checkpoint sets it).


def phi35_scales(ratio: float, num_crops: int) -> list[tuple[int, int]]:
    """HD_transform's search: (scale, scale·ceil(scale / ratio)) for scale = 1, 2, … up to the first over
    num_crops (the last entry); the scale before it is taken."""
    tried, scale = [], 1
    while True:
        crops = scale * math.ceil(scale / ratio)
        tried.append((scale, crops))
        if crops > num_crops:
            return tried
        scale += 1


def phi35_fit(scale: int, ratio: float, unit: int = 336) -> tuple[int, int, int]:
    """(long side, short side, padded short side) of HD_transform at `scale` (in the landscape frame)."""
    new_w = int(scale * unit)
    new_h = int(new_w / ratio)
    return new_w, new_h, math.ceil(new_h / unit) * unit


def _phi35_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    plan = _phi35_plan(w, h, p)  # the reference's refusals
    num_crops, unit = p["num_crops"], 336
    transposed = w < h
    width, height = (h, w) if transposed else (w, h)
    ratio = width / height
    tried = phi35_scales(ratio, num_crops)
    candidates = []
    for scale, crops in tried:
        new_w, new_h, tar = phi35_fit(scale, ratio, unit)
        short = tar // unit
        grid = (scale, short) if transposed else (short, scale)
        fits = crops <= num_crops
        label = (f"scale {scale}: {grid[0]}×{grid[1]} crops, {'height' if transposed else 'width'} {new_w} px")
        note = "" if fits else f"{crops} crops exceed num_crops={num_crops}: the search stops"
        if fits and short * scale != crops:
            note = (f"the count allows {crops} crops, but the short side int({new_w} / {ratio:.6g}) = {new_h} px "
                    f"pads to {short} crop{'s' * (short != 1)}")
        candidates.append(Candidate(label, {"crops (scale · ceil(scale / ratio))": crops, "num_crops": num_crops},
                                    scale == tried[-1][0] - 1, grid if fits else None, note))
    chosen = tried[-2]
    side = "height" if transposed else "width"
    return Explanation(
        "phi-3.5-vision", (w, h),
        f"the long side (the {side}; portrait images are transposed) is scaled to scale·{unit} px for scale = 1, 2, "
        f"… while scale · ceil(scale / aspect) ≤ num_crops ({num_crops}); the largest such scale wins and the short "
        f"side is padded (white, centred) to whole {unit}-px crops",
        tuple(candidates),
        f"scale {chosen[0]} uses {chosen[1]} crops ≤ {num_crops} and scale {tried[-1][0]} would need "
        f"{tried[-1][1]}, so the long side becomes {chosen[0] * unit} px: {plan.grid[0]}×{plan.grid[1]} crops "
        f"on a {plan.canvas_size[0]}×{plan.canvas_size[1]} canvas.")


def phi35_hd_size(w: int, h: int, num_crops: int, unit: int = 336) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """((canvas w, h), content box) of Phi-3.5-vision's HD transform, in canvas pixels."""
    transposed = w < h
    width, height = (h, w) if transposed else (w, h)
    ratio = width / height
    scale = phi35_scales(ratio, num_crops)[-1][0] - 1
    new_w, new_h, tar = phi35_fit(scale, ratio, unit)
    if new_h < 1:
        raise PlanError(f"phi-3.5-vision cannot take a {w}×{h} image with num_crops={num_crops}: its HD transform "
                        f"resizes the short side to int({new_w} / {ratio:g}) = 0 px (the resize refuses); use an "
                        f"aspect ratio below {new_w}:1")
    top = int((tar - new_h) / 2)
    if transposed:
        return (tar, new_w), (top, 0, top + new_h, new_w)
    return (new_w, tar), (0, top, new_w, top + new_h)


def _phi35_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    unit, g = 336, 12
    (cw, ch), content = phi35_hd_size(w, h, p["num_crops"], unit)
    rows, cols = ch // unit, cw // unit
    tiles = cut_canvas((cw, ch), content, (w, h), rows, cols, (unit, unit), 0, g * g, (g, g))
    x0, y0, x1, y1 = content
    glb = make_tile(len(tiles), -1, -1, whole((w, h)), (unit, unit), g * g, (g, g),
                    content_box=(x0 * unit / cw, y0 * unit / ch, x1 * unit / cw, y1 * unit / ch))
    tokens = {"tiles": g * g * rows * cols, "newlines": g * rows, "separator": 1, "thumbnail": g * g,
              "thumbnail_newlines": g}
    return Plan("phi-3.5-vision", p, (w, h), (rows, cols), (cw, ch), tuple(tiles), glb, "last",
                sum(tokens.values()), tokens, text_tokens=0, content_box=content)


register(StrategyInfo(
    name="phi-3.5-vision",
    family="resize-and-tile",
    summary="Phi-3.5-vision HD transform: the largest 336-px grid with scale·ceil(scale/ratio) ≤ num_crops, "
            "short side padded white (centred) to whole crops; global view of the canvas last; 12×12 per crop "
            "with newlines and a separator",
    reference="Abdin et al. 2024, Phi-3 technical report; microsoft/Phi-3.5-vision-instruct "
              "image_processing_phi3_v.py HD_transform / calc_num_image_tokens_from_image_size, "
              "image_embedding_phi3_v.py hd_feature_transform (remote code)",
    params={
        "num_crops": ParamSpec("int", 4, "most 336-px crops (model card: 4 for multi-frame, 16 for single "
                                         "images; the class default is 1)", min=1, max=64),
    },
    budget="num_crops, 1…16",
    planner=_phi35_plan,
    explainer=_phi35_explain,
    knob=BudgetKnob("num_crops", "most crops", lambda p, n: range(1, 17), monotone=False),
    # CLIP mean/std; torchvision's PIL resize (bilinear); white padding; global view from the padded canvas
    pixels=PixelRecipe(CLIP, resample="bilinear", pad_colour=(255, 255, 255), thumbnail_from_canvas=True),
    reference_model=ReferenceModel(CLIP_L_336, PHI35_MINI),  # microsoft/Phi-3.5-vision-instruct
    vectors=("phi35_vision_4", "phi35_vision_16"),
    order=351,
))

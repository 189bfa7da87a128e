"""One native-resolution view padded up to the patch grid: Kimi-VL's MoonViT (`navit_resize`) and Fuyu.

Neither resizes to a multiple of its patch: each shrinks the image only when it is too big, then pads right and
bottom so whole patches cover it. Kimi-VL pads with zeros to multiples of patch·merge; Fuyu pads to its fixed
1920×1080 canvas and keeps the rows and columns of 30-px patches that hold the image, ending each row with a
`|NEWLINE|` token.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, make_tile, whole
from .native import single_view_plan
from .reference import FUYU_PATCH_PROJECTION, MOONLIGHT_A3B, MOONVIT, PERSIMMON_8B, SIGLIP, ReferenceModel
from .registry import (
    BudgetKnob, Candidate, Explanation, ParamSpec, PatchLayout, PixelRecipe, StrategyInfo, register,
)


def _padded_view(name: str, w: int, h: int, p: dict, new: tuple[int, int], padded: tuple[int, int], cell: int,
                 **extra) -> Plan:
    """The one view: the image resized to `new` (w, h) at the top-left of a `padded` input, `cell`-px tokens."""
    grid = (padded[1] // cell, padded[0] // cell)
    tile = make_tile(0, 0, 0, whole((w, h)), padded, grid[0] * grid[1], grid,
                     content_box=(0.0, 0.0, float(new[0]), float(new[1])))
    return single_view_plan(name, w, h, p, tile, {"tiles": grid[0] * grid[1]}, **extra)


# ---------------------------------------------------------------------------------------------
# Kimi-VL (MoonViT navit_resize)


def navit_scales(height: int, width: int, patch_size: int, max_patches: int,
                 max_side_patches: int) -> tuple[float, float, float, float]:
    """The four scales MoonViT takes the smallest of (`min` keeps the first of equals): 1 (never upscale), the
    patch budget √(max_patches / patches), and the side caps for the height and the width."""
    patches_h, patches_w = max(1.0, height // patch_size), max(1.0, width // patch_size)
    return (1.0, math.sqrt(max_patches / (patches_h * patches_w)),
            (max_side_patches * patch_size) / height, (max_side_patches * patch_size) / width)


def navit_resize(height: int, width: int, patch_size: int, merge_size: int, max_patches: int,
                 max_side_patches: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """MoonViT's ((h, w) resized, (h, w) padded): never upscales; at most `max_patches` patches and
    `max_side_patches` a side; zero-padded to multiples of patch·merge (`kimi_k25 navit_resize` L50-83)."""
    scale = min(navit_scales(height, width, patch_size, max_patches, max_side_patches))
    new_h, new_w = max(1, int(height * scale)), max(1, int(width * scale))
    new_h, new_w = min(new_h, max_side_patches * patch_size), min(new_w, max_side_patches * patch_size)
    factor = merge_size * patch_size
    return (new_h, new_w), (new_h + (factor - new_h % factor) % factor, new_w + (factor - new_w % factor) % factor)


def _kimi_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    (nh, nw), (ph, pw) = navit_resize(h, w, p["patch_size"], p["merge_size"], p["max_patches"],
                                      p["max_side_patches"])
    return _padded_view("kimi-vl", w, h, p, (nw, nh), (pw, ph), p["patch_size"] * p["merge_size"], text_tokens=3)


def _kimi_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    found = _kimi_plan(w, h, p)
    patch, side = p["patch_size"], p["max_side_patches"]
    scales = navit_scales(h, w, patch, p["max_patches"], side)
    best = scales.index(min(scales))  # min() keeps the first of equal scales
    (nh, nw), (ph, pw) = navit_resize(h, w, patch, p["merge_size"], p["max_patches"], side)
    cell = patch * p["merge_size"]
    patches = max(1, h // patch) * max(1, w // patch)
    labels = ("keep the native size (never upscale)",
              f"patch budget: √({p['max_patches']:,} / {patches:,} patches)",
              f"height cap: {side} patches = {side * patch} px / {h} px",
              f"width cap: {side} patches = {side * patch} px / {w} px")
    ties = [labels[i].split(":")[0] for i, v in enumerate(scales) if v == scales[best] and i != best]
    candidates = []
    for i, (label, value) in enumerate(zip(labels, scales)):
        chosen = i == best
        note = ""
        if chosen and ties:
            note = f"ties with {', '.join(ties)}; min() keeps the first"
        elif not chosen:
            note = ("tied, listed later: min() keeps the first" if value == scales[best] else
                    "a larger scale: not the binding limit")
        scores = {"scale": value}
        if chosen:
            scores.update({"resized width": nw, "resized height": nh, "tokens": found.token_count})
        candidates.append(Candidate(label + (f" → {nw}×{nh}, padded to {pw}×{ph}" if chosen else ""), scores,
                                    chosen=chosen, grid=found.grid if chosen else None, note=note))
    rule = ("MoonViT's navit_resize scales the image by the smallest of 1 (it never upscales), the patch budget "
            f"√(max_patches/patches) and the {side}-patch caps on each side (equal scales: the first listed), "
            f"floors each side, then zero-pads right and bottom to multiples of {cell}.")
    reason = ["the image fits every limit, so it keeps its size", "the patch budget binds",
              "the height cap binds", "the width cap binds"][best]
    decision = (f"{reason} (scale {scales[best]:.4f}){' — ' + candidates[best].note if ties else ''}: resized to "
                f"{nw}×{nh}, padded to {pw}×{ph} = {ph // cell}×{pw // cell} tokens of {cell} px = "
                f"{found.token_count}")
    return Explanation("kimi-vl", (w, h), rule, tuple(candidates), decision)


register(StrategyInfo(
    name="kimi-vl",
    family="native resolution",
    summary="Kimi-VL (MoonViT): native resolution, shrunk only to ≤ 16,384 patches and ≤ 512 a side, zero-padded "
            "to multiples of 28; one token per 28×28 cell",
    reference="Kimi Team 2025, Kimi-VL; transformers models/kimi_k25/image_processing_kimi_k25.py : navit_resize L50, "
              "pad L188; processing_kimi_k25.py L61 (Kimi-K2.5's copy of MoonViT's resize; Kimi-VL's remote code "
              "was not checked)",
    params={
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
        "merge_size": ParamSpec("int", 2, "spatial merge (merge × merge patches → 1 token)", min=1, max=8),
        "max_patches": ParamSpec("int", 16384, "most patches before the image is shrunk", min=1, max=10**8),
        "max_side_patches": ParamSpec("int", 512, "most patches a side [size.max_height]", min=1, max=10**5),
    },
    budget="max_patches: the image is shrunk (never enlarged) until it has at most that many patches",
    planner=_kimi_plan,
    # Kimi_K25ImageProcessor (torchvision only): bicubic, zero padding before normalising, mean = std = 0.5;
    # pixel_values are the padded view's patches row-major, (N, 3, 14, 14)
    pixels=PixelRecipe(SIGLIP, patches=PatchLayout(14, 1, 1)),
    pixels_for=lambda base, plan: replace(base, patches=PatchLayout(plan.params["patch_size"], 1, 1)),
    reference_model=ReferenceModel(MOONVIT, MOONLIGHT_A3B),  # moonshotai/Kimi-VL-A3B-Instruct
    vectors=("kimi_vl",),
    order=210,
    knob=BudgetKnob("max_patches", "patch budget", lambda p, n: range(1, 4 * n + 64), monotone=True),
    explainer=_kimi_explain,
))


# ---------------------------------------------------------------------------------------------
# Fuyu


def fuyu_resize(w: int, h: int, max_width: int, max_height: int) -> tuple[int, int, tuple[float, float] | None]:
    """(w, h) after Fuyu's resize and the two scales it took the smaller of (None when the image fits and is kept):
    shrunk only when a side exceeds the canvas, by min(max_height / h, max_width / w), sides floored."""
    if w <= max_width and h <= max_height:
        return w, h, None
    scales = (max_height / h, max_width / w)
    s = min(scales)
    return int(w * s), int(h * s), scales


def _fuyu_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    mw, mh, patch = p["max_width"], p["max_height"], p["patch_size"]
    nw, nh, _ = fuyu_resize(w, h, mw, mh)
    if nw < 1 or nh < 1:
        raise PlanError(f"fuyu shrinks a {w}×{h} image to fit {mw}×{mh}, which leaves {nw}×{nh} px (empty); "
                        f"its processor fails on it — crop the image to a less extreme aspect ratio")
    vw, vh = min(mw, -(-nw // patch) * patch), min(mh, -(-nh // patch) * patch)
    if vw % patch or vh % patch:
        raise PlanError(f"fuyu: the kept canvas {vw}×{vh} is not a multiple of patch_size {patch} (its "
                        f"get_num_patches raises); use max_width/max_height that are multiples of {patch}")
    return _padded_view("fuyu", w, h, p, (nw, nh), (vw, vh), patch, text_tokens=vh // patch + 1)


def _fuyu_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    found = _fuyu_plan(w, h, p)
    mw, mh, patch = p["max_width"], p["max_height"], p["patch_size"]
    nw, nh, scales = fuyu_resize(w, h, mw, mh)
    vw, vh = found.tiles[0].input_size
    rows, cols = vh // patch, vw // patch
    kept_view = f" → {nw}×{nh} padded to {vw}×{vh}: {rows}×{cols} patches"
    tokens = {"tokens": float(found.token_count), "|NEWLINE| tokens": float(rows)}
    fits = scales is None
    keep = Candidate(f"keep the size (fits {mw}×{mh})" + (kept_view if fits else ""),
                     {"width": float(w), "height": float(h), "max width": float(mw), "max height": float(mh),
                      **(tokens if fits else {})},
                     chosen=fits, grid=found.grid if fits else None,
                     note="" if fits else f"{w}×{h} does not fit {mw}×{mh}")
    candidates = [keep]
    if fits:
        candidates += [Candidate(f"shrink to the height: {mh}/{h}", {"scale": mh / h},
                                 note="not needed: the image fits"),
                       Candidate(f"shrink to the width: {mw}/{w}", {"scale": mw / w},
                                 note="not needed: the image fits")]
        decision = (f"{w}×{h} fits the {mw}×{mh} canvas, so Fuyu keeps its size (it never upscales) and pads it to "
                    f"whole {patch}-px patches: {rows}×{cols} = {found.token_count} tokens + {rows} |NEWLINE|")
    else:
        best = 0 if scales[0] <= scales[1] else 1  # min(height scale, width scale): the first of equals
        tie = scales[0] == scales[1]
        for i, label in enumerate((f"shrink to the height: {mh}/{h}", f"shrink to the width: {mw}/{w}")):
            chosen = i == best
            candidates.append(Candidate(label + (kept_view if chosen else ""),
                                        {"scale": scales[i], **(tokens if chosen else {})}, chosen=chosen,
                                        grid=found.grid if chosen else None,
                                        note=("equal scales: min() keeps the first (height)" if tie else
                                              "the smaller scale: this side binds" if chosen else
                                              "a larger scale would overflow the other side")))
        decision = (f"{w}×{h} exceeds the {mw}×{mh} canvas; the {'height' if best == 0 else 'width'} scale "
                    f"{scales[best]:.4f} is the smaller{' (a tie: min() keeps the height)' if tie else ''}, so it "
                    f"shrinks to {nw}×{nh} (floored) and pads to {vw}×{vh}: {rows}×{cols} = {found.token_count} "
                    f"tokens + {rows} |NEWLINE|")
    rule = (f"Fuyu keeps an image that fits {mw}×{mh}; a larger one is shrunk by the smaller of {mh}/h and {mw}/w "
            f"(aspect kept, sides floored). The result is padded right and bottom to whole {patch}-px patches.")
    return Explanation("fuyu", (w, h), rule, tuple(candidates), decision)


register(StrategyInfo(
    name="fuyu",
    family="native resolution",
    summary="Fuyu: no vision encoder; the image (shrunk only to fit 1920×1080) is cut into 30-px patches, each "
            "patch row ending in a |NEWLINE| token",
    reference="Bavishi et al. 2023, Fuyu-8B; transformers models/fuyu/image_processing_pil_fuyu.py : resize L104, "
              "get_num_patches L217; processing_fuyu.py : _process_images L394, replace_image_token L436",
    params={
        "max_width": ParamSpec("int", 1920, "canvas width the image is shrunk to fit and padded to [size.width]",
                               min=1, max=100_000),
        "max_height": ParamSpec("int", 1080, "canvas height [size.height]", min=1, max=100_000),
        "patch_size": ParamSpec("int", 30, "patch side: one token per patch", min=1, max=256),
    },
    budget="none: Fuyu's tokens are fixed by the image size",
    planner=_fuyu_plan,
    # FuyuImageProcessorPil: bilinear, mean = std = 0.5; it pads with padding_value 1.0 BEFORE rescaling, so the
    # padding is pixel value 1 (almost black), not white
    pixels=PixelRecipe(SIGLIP, resample="bilinear", pad_colour=(1, 1, 1)),
    reference_model=ReferenceModel(FUYU_PATCH_PROJECTION, PERSIMMON_8B),  # adept/fuyu-8b
    vectors=("fuyu",),
    order=211,
    row_break_token="|NEWLINE|",
    explainer=_fuyu_explain,
))

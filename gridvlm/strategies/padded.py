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
from .registry import BudgetKnob, ParamSpec, PatchLayout, PixelRecipe, StrategyInfo, register


def _padded_view(name: str, w: int, h: int, p: dict, new: tuple[int, int], padded: tuple[int, int], cell: int,
                 **extra) -> Plan:
    """The one view: the image resized to `new` (w, h) at the top-left of a `padded` input, `cell`-px tokens."""
    grid = (padded[1] // cell, padded[0] // cell)
    tile = make_tile(0, 0, 0, whole((w, h)), padded, grid[0] * grid[1], grid,
                     content_box=(0.0, 0.0, float(new[0]), float(new[1])))
    return single_view_plan(name, w, h, p, tile, {"tiles": grid[0] * grid[1]}, **extra)


# ---------------------------------------------------------------------------------------------
# Kimi-VL (MoonViT navit_resize)


def navit_resize(height: int, width: int, patch_size: int, merge_size: int, max_patches: int,
                 max_side_patches: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """MoonViT's ((h, w) resized, (h, w) padded): never upscales; at most `max_patches` patches and
    `max_side_patches` a side; zero-padded to multiples of patch·merge (`kimi_k25 navit_resize` L50-83)."""
    patches_h, patches_w = max(1.0, height // patch_size), max(1.0, width // patch_size)
    scale = min(1.0, math.sqrt(max_patches / (patches_h * patches_w)),
                (max_side_patches * patch_size) / height, (max_side_patches * patch_size) / width)
    new_h, new_w = max(1, int(height * scale)), max(1, int(width * scale))
    new_h, new_w = min(new_h, max_side_patches * patch_size), min(new_w, max_side_patches * patch_size)
    factor = merge_size * patch_size
    return (new_h, new_w), (new_h + (factor - new_h % factor) % factor, new_w + (factor - new_w % factor) % factor)


def _kimi_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    (nh, nw), (ph, pw) = navit_resize(h, w, p["patch_size"], p["merge_size"], p["max_patches"],
                                      p["max_side_patches"])
    return _padded_view("kimi-vl", w, h, p, (nw, nh), (pw, ph), p["patch_size"] * p["merge_size"], text_tokens=3)


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
))


# ---------------------------------------------------------------------------------------------
# Fuyu


def _fuyu_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    mw, mh, patch = p["max_width"], p["max_height"], p["patch_size"]
    if w <= mw and h <= mh:
        nw, nh = w, h
    else:
        s = min(mh / h, mw / w)
        nw, nh = int(w * s), int(h * s)
    if nw < 1 or nh < 1:
        raise PlanError(f"fuyu shrinks a {w}×{h} image to fit {mw}×{mh}, which leaves {nw}×{nh} px (empty); "
                        f"its processor fails on it — crop the image to a less extreme aspect ratio")
    vw, vh = min(mw, -(-nw // patch) * patch), min(mh, -(-nh // patch) * patch)
    if vw % patch or vh % patch:
        raise PlanError(f"fuyu: the kept canvas {vw}×{vh} is not a multiple of patch_size {patch} (its "
                        f"get_num_patches raises); use max_width/max_height that are multiples of {patch}")
    return _padded_view("fuyu", w, h, p, (nw, nh), (vw, vh), patch, text_tokens=vh // patch + 1)


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
))

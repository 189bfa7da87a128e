"""One view per image: LLaVA-1.5's fixed square, Qwen2-VL's native resolution, NaViT's unresized patches."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, make_tile, square_pad_content, whole
from .registry import BudgetKnob, ParamSpec, PatchLayout, PixelRecipe, StrategyInfo, register
from .reference import CLIP, CLIP_L_336, QWEN2_7B, QWEN2_VL_VIT, SIGLIP, VICUNA_7B, VIT_B_16, ReferenceModel

CLIP_MEAN_RGB = (122, 116, 104)  # round(255 · CLIP mean): LLaVA-1.5's pad colour


def _single_view_plan(name: str, w: int, h: int, p: dict, tile, tokens: dict, **extra) -> Plan:
    return Plan(
        strategy=name,
        params=p,
        image_size=(w, h),
        grid=(1, 1),
        canvas_size=extra.pop("canvas_size", None),
        tiles=(tile,),
        thumbnail=None,
        thumbnail_position=None,
        token_count=sum(tokens.values()),
        tokens=tokens,
        **extra,
    )


# ---------------------------------------------------------------------------------------------
# LLaVA-1.5


def _llava15_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t, g = p["image_size"], p["image_size"] // p["patch_size"]
    if p["mode"] == "pad":
        # expand2square: paste on a max(w, h) square of the CLIP mean colour, then resize to t × t
        content = square_pad_content(w, h, t)
        tile = make_tile(0, 0, 0, whole((w, h)), (t, t), g * g, (g, g), content_box=content)
        return _single_view_plan("llava-1.5", w, h, p, tile, {"tiles": g * g})
    # crop: shortest edge to t, then a centred t × t crop (transformers' llava-hf default)
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(t * long / short)
    new_w, new_h = (t, new_long) if w <= h else (new_long, t)
    left, top = (new_w - t) // 2, (new_h - t) // 2
    box = (left * w / new_w, top * h / new_h, (left + t) * w / new_w, (top + t) * h / new_h)
    tile = make_tile(0, 0, 0, box, (t, t), g * g, (g, g), canvas_box=(left, top, left + t, top + t))
    notes = ()
    if new_w > t or new_h > t:
        notes = (f"centre crop: only x {box[0]:.0f}–{box[2]:.0f}, y {box[1]:.0f}–{box[3]:.0f} of the image reach "
                 "the encoder",)
    return _single_view_plan("llava-1.5", w, h, p, tile, {"tiles": g * g}, canvas_size=(new_w, new_h),
                             content_box=(0, 0, new_w, new_h), notes=notes)


register(StrategyInfo(
    name="llava-1.5",
    family="single view",
    summary="LLaVA-1.5: one 336-px view, padded to a square with the CLIP mean ('pad') or centre-cropped ('crop'); "
            "576 tokens",
    reference="Liu et al. 2023, LLaVA-1.5; haotian-liu/LLaVA mm_utils.py expand2square, transformers models/llava",
    params={
        "mode": ParamSpec("str", "pad", "'pad' = square canvas in the CLIP mean colour (original training), "
                                        "'crop' = shortest edge to 336 then centre crop (llava-hf processors)",
                          choices=("pad", "crop")),
        "image_size": ParamSpec("int", 336, "vision encoder input side", min=14, max=2048),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
    },
    budget="none: LLaVA-1.5 always uses (image_size / patch_size)² tokens",
    planner=_llava15_plan,
    # 'pad' is expand2square: the square is padded first, then resized, so the edge blends with the pad colour
    pixels=PixelRecipe(CLIP, pad_colour=CLIP_MEAN_RGB),
    pixels_for=lambda base, plan: replace(base, pad_to_square_first=plan.params["mode"] == "pad"),
    reference_model=ReferenceModel(CLIP_L_336, VICUNA_7B),  # liuhaotian/llava-v1.5-7b
    vectors=("llava15_pad", "llava15_crop"),
    order=10,
))


# ---------------------------------------------------------------------------------------------
# Qwen2-VL / Qwen2.5-VL


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int,
                 clamp_first: bool) -> tuple[int, int]:
    """Qwen2-VL's resize target (h, w): multiples of `factor`, pixel count within [min_pixels, max_pixels].

    `clamp_first` is qwen-vl-utils' form (every side at least `factor` before the bounds are checked);
    transformers lets a side round to 0 and relies on the min-pixels branch instead.
    """
    if max(height, width) / min(height, width) > 200:
        raise PlanError(
            f"Qwen2-VL refuses images with an aspect ratio above 200:1; {width}×{height} is "
            f"{max(height, width) / min(height, width):.0f}:1"
        )
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if clamp_first:
        h_bar, w_bar = max(factor, h_bar), max(factor, w_bar)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
        if not clamp_first:
            h_bar, w_bar = max(factor, h_bar), max(factor, w_bar)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _qwen_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    factor = p["patch_size"] * p["merge_size"]
    rh, rw = smart_resize(h, w, factor, p["min_pixels"], p["max_pixels"], p["rounding"] == "qwen-vl-utils")
    if rh < factor or rw < factor:
        raise PlanError(f"qwen-vl-utils would resize a {w}×{h} image to {rw}×{rh} pixels (empty); "
                        f"raise max_pixels above {p['max_pixels']}")
    grid = (rh // factor, rw // factor)
    tile = make_tile(0, 0, 0, whole((w, h)), (rw, rh), grid[0] * grid[1], grid)
    return _single_view_plan("qwen2-vl", w, h, p, tile, {"tiles": grid[0] * grid[1]}, text_tokens=2)


def _check_qwen(p: dict[str, Any]) -> None:
    if p["min_pixels"] > p["max_pixels"]:
        raise PlanError(f"qwen2-vl: min_pixels ({p['min_pixels']}) must not exceed max_pixels ({p['max_pixels']})")


def _qwen_budget(p: dict[str, Any], max_tokens: int) -> range:
    cell = (p["patch_size"] * p["merge_size"]) ** 2
    first = max(1, -(-p["min_pixels"] // cell))
    return range(first * cell, max(first, max_tokens) * cell + 1, cell)


def _qwen_budget_runs(p: dict[str, Any], max_tokens: int, size: tuple[int, int]) -> list[range]:
    """Below the rounded image's area max_pixels shrinks the image (tokens grow with it); from that area on the
    image keeps its rounded size. On thin images the shrinking branch can give MORE tokens than the rounded size
    (the thin side is clamped up to 28 px while the long side scales with 1/β), so the two runs are searched apart.
    """
    factor = p["patch_size"] * p["merge_size"]
    cell = factor * factor
    w, h = size
    h_bar, w_bar = round(h / factor) * factor, round(w / factor) * factor
    if p["rounding"] == "qwen-vl-utils":
        h_bar, w_bar = max(factor, h_bar), max(factor, w_bar)
    first = _qwen_budget(p, max_tokens).start
    natural = -(-(h_bar * w_bar) // cell) * cell  # first max_pixels at which the rounded size is kept
    # Flooring makes the shrunk image smaller than max_pixels, so the first run goes up to `natural`, not budget·cell.
    return [range(first, natural, cell), range(max(natural, first), natural + 1, cell)]


register(StrategyInfo(
    name="qwen2-vl",
    family="native resolution",
    summary="Qwen2-VL / Qwen2.5-VL native resolution: resize to multiples of 28 within a pixel budget, no tiles; "
            "one token per 28×28 cell after 2×2 merging",
    reference="Wang et al. 2024, Qwen2-VL; transformers models/qwen2_vl smart_resize, QwenLM qwen-vl-utils",
    params={
        "min_pixels": ParamSpec("int", 3136, "lower pixel bound (checkpoint preprocessor_config)", min=1, max=10**10),
        "max_pixels": ParamSpec("int", 16384 * 28 * 28, "upper pixel bound: 12,845,056 in the Qwen2-VL/2.5-VL "
                                "checkpoints; transformers' class default is 1280·28² = 1,003,520", min=1, max=10**10),
        "rounding": ParamSpec("str", "transformers", "'transformers' or 'qwen-vl-utils' (clamps thin sides to 28 "
                                                     "first)", choices=("transformers", "qwen-vl-utils")),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
        "merge_size": ParamSpec("int", 2, "spatial merge of the projector (2×2 patches → 1 token)", min=1, max=8),
    },
    budget="max_pixels = tokens · 28²",
    planner=_qwen_plan,
    # Qwen2-VL / 2.5-VL preprocessor_config: OpenAI CLIP mean/std; the model takes flat merged patches
    pixels=PixelRecipe(CLIP, patches=PatchLayout(14, 2)),
    pixels_for=lambda base, plan: replace(base, patches=PatchLayout(plan.params["patch_size"],
                                                                    plan.params["merge_size"])),
    reference_model=ReferenceModel(QWEN2_VL_VIT, QWEN2_7B),  # Qwen/Qwen2-VL-7B-Instruct
    vectors=("qwen2_vl_hf_checkpoint", "qwen2_vl_hf_classdefault", "qwen_vl_utils"),
    order=120,
    knob=BudgetKnob("max_pixels", "pixel budget in 28×28 cells", _qwen_budget, monotone=True,
                    segments=_qwen_budget_runs),
    check=_check_qwen,
))


# ---------------------------------------------------------------------------------------------
# NaViT


def navit_grid(w: int, h: int, patch: int, max_tokens: int | None) -> tuple[int, int, bool]:
    """(rows, cols) of NaViT patches, and whether the image had to be resized to fit `max_tokens`.

    NaViT itself never resizes and asserts sides divisible by the patch; gridvlm drops the remainder
    (floor), and shrinks the grid with the aspect ratio kept when `max_tokens` is given.
    """
    rows, cols = h // patch, w // patch
    if max_tokens is None or rows * cols <= max_tokens:
        return rows, cols, False
    s = math.sqrt(max_tokens / (rows * cols))
    rows, cols = max(1, int(rows * s)), max(1, int(cols * s))
    while rows * cols > max_tokens:
        if rows >= cols:
            rows -= 1
        else:
            cols -= 1
    return rows, cols, True


def _navit_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    patch = p["patch_size"]
    rows, cols, resized = navit_grid(w, h, patch, p["max_tokens"])
    notes = []
    if resized:
        box = whole((w, h))
        notes.append(f"resized to {cols * patch}×{rows * patch} to fit max_tokens={p['max_tokens']} (gridvlm's "
                     "budget rule; NaViT itself never resizes)")
    else:
        box = (0.0, 0.0, float(cols * patch), float(rows * patch))
        if w % patch or h % patch:
            notes.append(f"{w}×{h} is not a multiple of {patch}: NaViT's forward asserts; gridvlm drops the last "
                         f"{w % patch} px columns and {h % patch} px rows")
    if rows * cols == 0:
        notes.append(f"the image is smaller than one {patch}-px patch: NaViT gives it no tokens")
    tile = make_tile(0, 0, 0, box, (cols * patch, rows * patch), rows * cols, (rows, cols))
    return _single_view_plan("navit", w, h, p, tile, {"tiles": rows * cols}, notes=tuple(notes))


register(StrategyInfo(
    name="navit",
    family="native resolution",
    summary="NaViT patch-n'-pack: no resizing, one token per patch, images packed into shared sequences",
    reference="Dehghani et al. 2023, Patch n' Pack (NaViT); lucidrains/vit-pytorch na_vit.py",
    params={
        "patch_size": ParamSpec("int", 16, "patch side", min=1, max=256),
        "max_tokens": ParamSpec("int", None, "shrink the image (aspect kept) to at most this many patches; None = "
                                             "never resize, as NaViT", min=1, max=10**8, nullable=True),
    },
    budget="max_tokens: the image is shrunk until its patch grid fits",
    planner=_navit_plan,
    pixels=PixelRecipe(SIGLIP),  # no reference (vit-pytorch takes raw tensors): big_vision's value_range(-1, 1)
    reference_model=ReferenceModel(VIT_B_16, None),  # NaViT B/16: an encoder, no language model
    vectors=("navit_p16", "navit_p32"),
    order=160,
    knob=BudgetKnob("max_tokens", "patch budget", lambda p, n: range(1, n + 1), monotone=True),
))

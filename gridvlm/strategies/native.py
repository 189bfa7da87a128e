"""One view per image: LLaVA-1.5's fixed square and NaViT's unresized patches (the Qwen family is in `qwen`)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..geometry import Plan, make_tile, square_pad_content, whole
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register
from .reference import CLIP, CLIP_L_336, SIGLIP, VICUNA_7B, VIT_B_16, ReferenceModel

CLIP_MEAN_RGB = (122, 116, 104)  # round(255 · CLIP mean): LLaVA-1.5's pad colour


def single_view_plan(name: str, w: int, h: int, p: dict, tile, tokens: dict, **extra) -> Plan:
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


def llava15_crop(w: int, h: int, t: int) -> tuple[tuple[int, int], tuple[int, int], tuple[float, float, float, float]]:
    """'crop' mode: (size after the shortest edge goes to t, the crop's top-left there, the crop in image pixels)."""
    # shortest edge to t, then a centred t × t crop (transformers' llava-hf default)
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(t * long / short)
    new_w, new_h = (t, new_long) if w <= h else (new_long, t)
    left, top = (new_w - t) // 2, (new_h - t) // 2
    box = (left * w / new_w, top * h / new_h, (left + t) * w / new_w, (top + t) * h / new_h)
    return (new_w, new_h), (left, top), box


def _llava15_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t, g = p["image_size"], p["image_size"] // p["patch_size"]
    if p["mode"] == "pad":
        # expand2square: paste on a max(w, h) square of the CLIP mean colour, then resize to t × t
        content = square_pad_content(w, h, t)
        tile = make_tile(0, 0, 0, whole((w, h)), (t, t), g * g, (g, g), content_box=content)
        return single_view_plan("llava-1.5", w, h, p, tile, {"tiles": g * g})
    (new_w, new_h), (left, top), box = llava15_crop(w, h, t)
    tile = make_tile(0, 0, 0, box, (t, t), g * g, (g, g), canvas_box=(left, top, left + t, top + t))
    notes = ()
    if new_w > t or new_h > t:
        notes = (f"centre crop: only x {box[0]:.0f}–{box[2]:.0f}, y {box[1]:.0f}–{box[3]:.0f} of the image reach "
                 "the encoder",)
    return single_view_plan("llava-1.5", w, h, p, tile, {"tiles": g * g}, canvas_size=(new_w, new_h),
                             content_box=(0, 0, new_w, new_h), notes=notes)


def _llava15_explainer(w: int, h: int, p: dict[str, Any]) -> Explanation:
    t = p["image_size"]
    x0, y0, x1, y1 = square_pad_content(w, h, t)
    pad_share = 1 - (x1 - x0) * (y1 - y0) / (t * t)
    (new_w, new_h), _, (bx0, by0, bx1, by1) = llava15_crop(w, h, t)
    kept = (bx1 - bx0) * (by1 - by0) / (w * h)
    side = max(w, h)
    mode = p["mode"]
    candidates = (
        Candidate(f"pad: paste on a {side}×{side} square of the CLIP mean colour, resize to {t}×{t}",
                  {"image kept": 1.0, "padding share of the view": pad_share},
                  chosen=mode == "pad", grid=(1, 1) if mode == "pad" else None,
                  note="" if mode == "pad" else "not taken: mode is 'crop'"),
        Candidate(f"crop: shortest edge to {t} ({new_w}×{new_h}), centre {t}×{t} crop",
                  {"image kept": kept, "padding share of the view": 0.0},
                  chosen=mode == "crop", grid=(1, 1) if mode == "crop" else None,
                  note="" if mode == "crop" else "not taken: mode is 'pad'"),
    )
    if mode == "pad":
        decision = (f"mode='pad' (the original training): the whole image is kept and padding fills "
                    f"{pad_share:.1%} of the {t}×{t} view")
    else:
        decision = (f"mode='crop' (llava-hf processors): only x {bx0:.0f}–{bx1:.0f}, y {by0:.0f}–{by1:.0f} "
                    f"({kept:.1%} of the image) reaches the encoder")
    decision += f"; either way one view of {(t // p['patch_size']) ** 2} tokens."
    rule = ("LLaVA-1.5 weighs nothing per image: the mode parameter picks one of two geometries for its single "
            f"{t}-px view, pad to a square (nothing lost) or centre crop (nothing padded).")
    return Explanation("llava-1.5", (w, h), rule, candidates, decision)


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
    explainer=_llava15_explainer,
    # 'pad' is expand2square: the square is padded first, then resized, so the edge blends with the pad colour
    pixels=PixelRecipe(CLIP, pad_colour=CLIP_MEAN_RGB),
    pixels_for=lambda base, plan: replace(base, pad_to_square_first=plan.params["mode"] == "pad"),
    reference_model=ReferenceModel(CLIP_L_336, VICUNA_7B),  # liuhaotian/llava-v1.5-7b
    vectors=("llava15_pad", "llava15_crop"),
    order=10,
))


# ---------------------------------------------------------------------------------------------
# NaViT


def navit_steps(w: int, h: int, patch: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """The (rows, cols) patch grids gridvlm's NaViT rule passes through, the last one used: the image's own
    floor(H/p)×floor(W/p); when that exceeds `max_tokens`, the grid scaled by √(max_tokens/n), then each step
    that takes one row or column off the longer side until it fits."""
    rows, cols = h // patch, w // patch
    steps = [(rows, cols)]
    if max_tokens is None or rows * cols <= max_tokens:
        return steps
    s = math.sqrt(max_tokens / (rows * cols))
    rows, cols = max(1, int(rows * s)), max(1, int(cols * s))
    steps.append((rows, cols))
    while rows * cols > max_tokens:
        if rows >= cols:
            rows -= 1
        else:
            cols -= 1
        steps.append((rows, cols))
    return steps


def navit_grid(w: int, h: int, patch: int, max_tokens: int | None) -> tuple[int, int, bool]:
    """(rows, cols) of NaViT patches, and whether the image had to be resized to fit `max_tokens`.

    NaViT itself never resizes and asserts sides divisible by the patch; gridvlm drops the remainder
    (floor), and shrinks the grid with the aspect ratio kept when `max_tokens` is given.
    """
    steps = navit_steps(w, h, patch, max_tokens)
    return steps[-1][0], steps[-1][1], len(steps) > 1


def _navit_explainer(w: int, h: int, p: dict[str, Any]) -> Explanation:
    patch, budget = p["patch_size"], p["max_tokens"]
    steps = navit_steps(w, h, patch, budget)
    candidates = []
    for i, (r, c) in enumerate(steps):
        last = i == len(steps) - 1
        if i == 0:
            label = f"no resize: floor({h}/{patch})×floor({w}/{patch}) = {r}×{c} patches"
            note = ("fits max_tokens" if budget is not None and last else
                    "max_tokens is None: never resized" if last else f"over max_tokens = {budget}")
        elif i == 1:
            label = f"scaled by √(max_tokens / patches): {r}×{c} patches ({c * patch}×{r * patch} px)"
            note = "fits" if last else f"still over max_tokens = {budget}"
        else:
            label = f"one {'row' if r < steps[i - 1][0] else 'column'} off the longer side: {r}×{c} patches"
            note = "fits" if last else f"still over max_tokens = {budget}"
        scores = {"patch rows": r, "patch cols": c, "tokens": r * c}
        candidates.append(Candidate(label, scores, chosen=last, grid=(1, 1) if last else None, note=note))
    r, c = steps[-1]
    if len(steps) == 1:
        decision = f"the image's own {r}×{c} patches = {r * c} tokens"
        decision += ("; NaViT never resizes" if budget is None else f", within max_tokens = {budget}")
        if w % patch or h % patch:
            decision += f" (the last {w % patch} px columns and {h % patch} px rows are dropped)"
    else:
        decision = (f"{steps[0][0]}×{steps[0][1]} = {steps[0][0] * steps[0][1]} patches exceed max_tokens = {budget}; "
                    f"the grid is scaled with the aspect kept and trimmed to {r}×{c} = {r * c} tokens (gridvlm's "
                    "budget rule; NaViT itself never resizes)")
    decision += "."
    rule = (f"NaViT gives one token per {patch}-px patch of the unresized image; with max_tokens set, gridvlm shrinks "
            "the patch grid (aspect kept, then one row or column off the longer side at a time) until it fits.")
    return Explanation("navit", (w, h), rule, tuple(candidates), decision)


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
    return single_view_plan("navit", w, h, p, tile, {"tiles": rows * cols}, notes=tuple(notes))


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
    explainer=_navit_explainer,
    pixels=PixelRecipe(SIGLIP),  # no reference (vit-pytorch takes raw tensors): big_vision's value_range(-1, 1)
    reference_model=ReferenceModel(VIT_B_16, None),  # NaViT B/16: an encoder, no language model
    vectors=("navit_p16", "navit_p32"),
    order=160,
    knob=BudgetKnob("max_tokens", "patch budget", lambda p, n: range(1, n + 1), monotone=True),
))

"""Google's SigLIP-fed models: Gemma 3 (squashed 896² views, optional Pan & Scan crops), Gemma 4 (aspect kept
within a soft-token budget) and PaliGemma (one squashed view).

Re-read from transformers 5.23: `models/gemma3/image_processing_pil_gemma3.py` (`pan_and_scan`, `_preprocess`),
`models/gemma3/processing_gemma3.py` (`images_kwargs`, `full_image_sequence`, `replace_image_token`),
`models/gemma4/image_processing_pil_gemma4.py` (`get_aspect_ratio_preserving_size`),
`models/gemma4/processing_gemma4.py` (`replace_image_token`), `models/paligemma/processing_paligemma.py`
(`replace_image_token`) with `models/siglip/image_processing_pil_siglip.py`.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, make_tile, squashed_view, whole
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register
from .reference import GEMMA3_4B, GEMMA4_TEXT, GEMMA4_VISION, GEMMA_2B, SIGLIP, SIGLIP_SO400M, ReferenceModel

# Gemma 4 feeds pixels in 0..1: do_rescale only, do_normalize False (image_mean 0, image_std 1)
UNIT_RANGE = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def square_grid(tokens: int) -> tuple[int, int]:
    """(rows, cols) of a view's token grid: √n × √n when n is a square, else one row."""
    g = math.isqrt(tokens)
    return (g, g) if g * g == tokens else (1, tokens)


def single_view_plan(name: str, w: int, h: int, p: dict, input_size: tuple[int, int], token_grid: tuple[int, int],
                     text_tokens: int, notes: tuple[str, ...] = ()) -> Plan:
    """The whole image as the one view, resized (squashed or not) to `input_size`; tokens = the token grid."""
    tokens = token_grid[0] * token_grid[1]
    tile = make_tile(0, 0, 0, whole((w, h)), input_size, tokens, token_grid)
    return Plan(name, p, (w, h), (1, 1), None, (tile,), None, None, tokens, {"tiles": tokens},
                text_tokens=text_tokens, notes=notes)


# ---------------------------------------------------------------------------------------------
# Gemma 3


def pan_and_scan_trace(w: int, h: int, min_crop: int, max_crops: int,
                       min_ratio: float) -> tuple[int, int, int, int, tuple]:
    """(rows, cols, crop_w, crop_h, (ratio, half_up, side_cap, n, (crop_w, crop_h), outcome)) of Gemma 3's Pan &
    Scan crops; rows = cols = 0 when it does not crop. outcome: "ratio" (long/short below min_ratio), "small" (a
    crop side below min_crop) or "crops"; the other trace fields are None when the ratio test stopped it.

    Gemma3ImageProcessorPil.pan_and_scan: crops along the long side only, n = floor(ratio + 0.5) (half up)
    clamped to floor(long / min_crop), then to [2, max_crops]; refused when a crop side is below min_crop.
    """
    long, short = (w, h) if w >= h else (h, w)
    ratio = long / short
    if ratio < min_ratio:
        return 0, 0, 0, 0, (ratio, None, None, None, None, "ratio")
    half_up = int(math.floor(ratio + 0.5))
    side_cap = int(math.floor(long / min_crop))
    n = min(max_crops, max(2, min(side_cap, half_up)))
    rows, cols = (1, n) if w >= h else (n, 1)
    cw, ch = int(math.ceil(w / cols)), int(math.ceil(h / rows))
    if min(cw, ch) < min_crop:
        return 0, 0, 0, 0, (ratio, half_up, side_cap, n, (cw, ch), "small")
    return rows, cols, cw, ch, (ratio, half_up, side_cap, n, (cw, ch), "crops")


def pan_and_scan_grid(w: int, h: int, min_crop: int, max_crops: int, min_ratio: float) -> tuple[int, int, int, int]:
    """(rows, cols, crop_w, crop_h) of Gemma 3's Pan & Scan crops; rows = cols = 0 when it does not crop."""
    return pan_and_scan_trace(w, h, min_crop, max_crops, min_ratio)[:4]


def _gemma3_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    s, n = p["image_size"], p["tokens_per_view"]
    grid = square_grid(n)
    rows = cols = 0
    if p["pan_and_scan"]:
        rows, cols, cw, ch = pan_and_scan_grid(w, h, p["pan_and_scan_min_crop_size"],
                                               p["pan_and_scan_max_num_crops"],
                                               p["pan_and_scan_min_ratio_to_activate"])
    if not rows:
        # every view is squashed to image_size² (SigLIP p14, 4×4 average pool -> 256 tokens); 2 = <start/end_of_image>
        return single_view_plan("gemma3", w, h, p, (s, s), grid, text_tokens=2)
    tiles = []
    for r in range(rows):
        for c in range(cols):  # numpy slicing clips the last crop at the image edge
            box = (c * cw, r * ch, min((c + 1) * cw, w), min((r + 1) * ch, h))
            tiles.append(make_tile(1 + len(tiles), r, c, box, (s, s), n, grid))
    thumb = squashed_view(0, (w, h), (s, s), n, grid)
    crops = len(tiles)
    note = (f"transformers' Gemma3Processor._get_num_multimodal_tokens reports {n} tokens for this image (it "
            f"ignores Pan & Scan: 'no image cropping supported yet'); the prompt the processor writes holds "
            f"{n * (1 + crops)} image tokens in {1 + crops} <start_of_image>…<end_of_image> blocks",)
    tokens = {"thumbnail": n, "tiles": n * crops}
    return Plan("gemma3", p, (w, h), (rows, cols), None, tuple(tiles), thumb, "first", n * (1 + crops), tokens,
                text_tokens=2 * (1 + crops), notes=note)


def _gemma3_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    found = _gemma3_plan(w, h, p)
    s, n_view = p["image_size"], p["tokens_per_view"]
    tokens = {"tokens": float(found.token_count)}
    if not p["pan_and_scan"]:
        only = Candidate(f"the whole image squashed to {s}×{s}", {**tokens, "views": 1.0}, chosen=True,
                         grid=found.grid, note="Pan & Scan is off (pan_and_scan=False, the checkpoints' setting)")
        return Explanation("gemma3", (w, h), f"With Pan & Scan off, Gemma 3 squashes every image to {s}×{s} "
                           f"({n_view} tokens); there is nothing to choose.", (only,),
                           "Pan & Scan is off, so the one squashed view is the only option")
    lo, most, threshold = (p["pan_and_scan_min_crop_size"], p["pan_and_scan_max_num_crops"],
                           p["pan_and_scan_min_ratio_to_activate"])
    rows, cols, cw, ch, (ratio, half_up, side_cap, n, crop, outcome) = pan_and_scan_trace(w, h, lo, most, threshold)
    long = "width" if w >= h else "height"
    squash = f"no crops: the whole image squashed to {s}×{s}"
    below = Candidate(squash + f" (long/short below {threshold:g})", {"aspect ratio": ratio,
                      "threshold": threshold, **(tokens if outcome == "ratio" else {})}, chosen=outcome == "ratio",
                      grid=found.grid if outcome == "ratio" else None,
                      note=(f"below the {threshold:g} threshold: Pan & Scan does not activate" if outcome == "ratio"
                            else f"not taken: {ratio:.4g} ≥ {threshold:g} activates (the test is ratio < "
                                 f"{threshold:g})"))
    candidates = [below]
    if outcome == "ratio":
        decision = (f"the long/short side ratio {ratio:.4g} is below {threshold:g}, so Pan & Scan does not crop: "
                    f"one {s}² view, {found.token_count} tokens")
        return Explanation("gemma3", (w, h), _gemma3_rule(p), tuple(candidates), decision)
    steps = [f"floor({ratio:.4g} + 0.5) = {half_up} (half up"
             + (f"; Python's round would give {round(ratio)})" if round(ratio) != half_up else ")")]
    if side_cap < half_up:
        steps.append(f"capped at floor({long} / {lo}) = {side_cap}")
    if max(2, min(side_cap, half_up)) != min(side_cap, half_up):
        steps.append("raised to the minimum of 2")
    if n < max(2, min(side_cap, half_up)):
        steps.append(f"capped at max {most}")
    grid_label = f"1×{n}" if w >= h else f"{n}×1"
    crops = Candidate(f"{n} crops of {crop[0]}×{crop[1]} along the {long} ({grid_label}), each squashed to {s}², "
                      "after the whole image",
                      {"aspect ratio": ratio, "floor(ratio + 0.5)": float(half_up), f"floor({long} / {lo})":
                       float(side_cap), "crops": float(n), "crop width": float(crop[0]), "crop height": float(crop[1]),
                       **(tokens if outcome == "crops" else {})},
                      chosen=outcome == "crops", grid=found.grid if outcome == "crops" else None,
                      note=" → ".join(steps) + ("" if outcome == "crops" else " (refused: see below)"))
    small = Candidate(squash + f" (a crop side below {lo})", {"smallest crop side": float(min(crop)),
                      "min crop size": float(lo), **(tokens if outcome == "small" else {})},
                      chosen=outcome == "small", grid=found.grid if outcome == "small" else None,
                      note=(f"the {crop[0]}×{crop[1]} crops are below min_crop_size {lo}: Pan & Scan is refused"
                            if outcome == "small" else f"not taken: both crop sides ≥ {lo}"))
    candidates += [crops, small]
    if outcome == "crops":
        decision = (f"{ratio:.4g} ≥ {threshold:g} activates Pan & Scan; " + " → ".join(steps) + f": {n} crops of "
                    f"{crop[0]}×{crop[1]} plus the whole image first = {1 + n} views, {found.token_count} tokens")
    else:
        decision = (f"{ratio:.4g} ≥ {threshold:g} activates Pan & Scan, but its {n} crops of {crop[0]}×{crop[1]} "
                    f"have a side below {lo}, so it falls back to the one squashed view ({found.token_count} tokens)")
    return Explanation("gemma3", (w, h), _gemma3_rule(p), tuple(candidates), decision)


def _gemma3_rule(p: dict[str, Any]) -> str:
    return (f"Pan & Scan crops only when long/short ≥ {p['pan_and_scan_min_ratio_to_activate']:g}; the crop count is "
            f"floor(ratio + 0.5) (half up), capped at floor(long side / {p['pan_and_scan_min_crop_size']}), then "
            f"clamped to 2…{p['pan_and_scan_max_num_crops']}; crops with a side below "
            f"{p['pan_and_scan_min_crop_size']} px refuse it, leaving the one squashed view.")


def _gemma3_knob_values(p: dict[str, Any], _max_tokens: int) -> list[int]:
    return [2, 3, 4] if p["pan_and_scan"] else [p["pan_and_scan_max_num_crops"]]


register(StrategyInfo(
    name="gemma3",
    family="single view",
    summary="Gemma 3: the image squashed to 896² (256 tokens); optional Pan & Scan adds up to 4 crops along the "
            "long side, each squashed to 896², after the whole image",
    reference="Gemma Team 2025, Gemma 3 technical report; transformers models/gemma3 image_processing_pil_gemma3.py "
              ": pan_and_scan, processing_gemma3.py : replace_image_token",
    params={
        "pan_and_scan": ParamSpec("bool", False, "Pan & Scan crops (do_pan_and_scan; null = off in the checkpoints)"),
        "image_size": ParamSpec("int", 896, "side every view is squashed to (size; the class default is 224)",
                                min=14, max=4096),
        "tokens_per_view": ParamSpec("int", 256, "tokens per view after the 4×4 average pool (mm_tokens_per_image)",
                                     min=1, max=10**5),
        "pan_and_scan_min_crop_size": ParamSpec("int", 256, "smallest crop side; smaller crops turn P&S off",
                                                min=1, max=10**5),
        "pan_and_scan_max_num_crops": ParamSpec("int", 4, "most crops", min=1, max=64),
        "pan_and_scan_min_ratio_to_activate": ParamSpec("float", 1.2, "long/short side ratio from which P&S crops",
                                                        min=0.0, max=1000.0),
    },
    budget="pan_and_scan_max_num_crops (2…4) when pan_and_scan; otherwise fixed at 256 tokens",
    planner=_gemma3_plan,
    knob=BudgetKnob("pan_and_scan_max_num_crops", "most Pan & Scan crops", _gemma3_knob_values),
    # Gemma3ImageProcessorPil: BILINEAR, IMAGENET_STANDARD mean/std (0.5) — the checkpoints' values too
    pixels=PixelRecipe(SIGLIP, resample="bilinear", crop_first=True),
    reference_model=ReferenceModel(SIGLIP_SO400M, GEMMA3_4B),  # google/gemma-3-4b-it (SigLIP so400m at 896)
    vectors=("gemma3", "gemma3_pan_and_scan"),
    order=300,
    explainer=_gemma3_explain,
))


# ---------------------------------------------------------------------------------------------
# Gemma 4

GEMMA4_SOFT_TOKENS = (70, 140, 280, 560, 1120)  # _SUPPORTED_SOFT_TOKENS


def gemma4_size_trace(w: int, h: int, max_soft_tokens: int, patch: int, pool: int) -> tuple[int, int, tuple]:
    """`gemma4_size` with the branch it took: (w, h, (factor, floored (w, h), branch)); branch is "scaled" (both
    floored sides non-zero), "one row" (the height floored to 0) or "one column" (the width floored to 0)."""
    max_patches = max_soft_tokens * pool * pool
    target_px = max_patches * patch * patch
    factor = math.sqrt(target_px / (h * w))
    side = pool * patch
    th = int(math.floor(factor * h / side)) * side
    tw = int(math.floor(factor * w / side)) * side
    floored, branch = (tw, th), "scaled"
    if th == 0 and tw == 0:
        raise PlanError(f"gemma4 would resize a {w}×{h} image to 0×0 (sides must be multiples of {side})")
    longest = (max_patches // (pool * pool)) * side
    if th == 0:
        th, tw, branch = side, min(int(math.floor(w / h)) * side, longest), "one row"
    elif tw == 0:
        tw, th, branch = side, min(int(math.floor(h / w)) * side, longest), "one column"
    if th * tw > target_px:
        raise PlanError(f"gemma4 would resize a {w}×{h} image to {tw}×{th}, more than {max_patches} patches of "
                        f"{patch} px; raise max_soft_tokens")
    return tw, th, (factor, floored, branch)


def gemma4_size(w: int, h: int, max_soft_tokens: int, patch: int, pool: int) -> tuple[int, int]:
    """(w, h) of Gemma 4's resize: aspect kept, sides multiples of pool·patch, at most max_soft_tokens·pool² patches
    (get_aspect_ratio_preserving_size; small images are upscaled too)."""
    tw, th, _ = gemma4_size_trace(w, h, max_soft_tokens, patch, pool)
    return tw, th


def _gemma4_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    found = _gemma4_plan(w, h, p)  # refuses what the planner refuses
    patch, pool, budget = p["patch_size"], p["pooling_kernel_size"], p["max_soft_tokens"]
    tw, th, (factor, (fw, fh), branch) = gemma4_size_trace(w, h, budget, patch, pool)
    side, max_patches = patch * pool, budget * pool * pool
    tokens = {"tokens": float(found.token_count), "patches": float(tw * th // (patch * patch)),
              "max patches": float(max_patches)}
    cap = budget * side

    def pick(name: str, label: str, note: str) -> Candidate:
        chosen = branch == name
        return Candidate(label + (f": {tw}×{th}" if chosen else ""),
                         {"scale f": factor, **(tokens if chosen else {})}, chosen=chosen,
                         grid=found.grid if chosen else None, note=note)

    scaled_note = (f"f·W = {factor * w:.1f}, f·H = {factor * h:.1f} floored to multiples of {side}: {fw}×{fh}"
                   + ("" if branch == "scaled" else " — a side is 0, so not this branch"))
    candidates = (
        pick("scaled", f"scale by f = √({max_patches}·{patch}² / (W·H)), floor each side to a multiple of {side}",
             scaled_note),
        pick("one row", f"one {side}-px row: width floor(W/H)·{side}, at most {cap}",
             "the height floored to 0" if branch == "one row" else "not taken: the height did not floor to 0"),
        pick("one column", f"one {side}-px column: height floor(H/W)·{side}, at most {cap}",
             "the width floored to 0" if branch == "one column" else "not taken: the width did not floor to 0"),
    )
    rule = (f"Gemma 4 scales the image (up or down) by f = √(target pixels / (W·H)) for {max_patches} patches of "
            f"{patch} px and floors each side to a multiple of {side}; a side that floors to 0 becomes one "
            f"{side}-px row or column (the other side floor(aspect)·{side}, at most {cap}).")
    why = {"scaled": f"both floored sides are non-zero ({fw}×{fh})",
           "one row": f"the height floored to 0 ({fw}×{fh}), so it is one {side}-px row",
           "one column": f"the width floored to 0 ({fw}×{fh}), so it is one {side}-px column"}[branch]
    scaled = "upscaled" if factor > 1 else "downscaled" if factor < 1 else "scaled"
    decision = (f"{scaled} by f = {factor:.4f}; {why}: {tw}×{th} = "
                f"{th // side}×{tw // side} soft tokens = {found.token_count} (of {budget})")
    return Explanation("gemma4", (w, h), rule, candidates, decision)


def _gemma4_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    patch, pool = p["patch_size"], p["pooling_kernel_size"]
    tw, th = gemma4_size(w, h, p["max_soft_tokens"], patch, pool)
    cell = patch * pool
    return single_view_plan("gemma4", w, h, p, (tw, th), (th // cell, tw // cell), text_tokens=2)  # <|image>, <image|>


register(StrategyInfo(
    name="gemma4",
    family="native resolution",
    summary="Gemma 4: aspect kept, resized (up or down) to multiples of 48 px within max_soft_tokens·9 patches of "
            "16 px; one token per 3×3 patches (≤ 280 by default)",
    reference="Google 2026, Gemma 4; transformers models/gemma4 image_processing_pil_gemma4.py : "
              "get_aspect_ratio_preserving_size, processing_gemma4.py : replace_image_token",
    params={
        "max_soft_tokens": ParamSpec("int", 280, "soft-token budget per image (one of 70, 140, 280, 560, 1120)",
                                     choices=GEMMA4_SOFT_TOKENS),
        "patch_size": ParamSpec("int", 16, "ViT patch side", min=1, max=64),
        "pooling_kernel_size": ParamSpec("int", 3, "k × k patches pooled into one soft token", min=1, max=8),
    },
    budget="max_soft_tokens over 70, 140, 280, 560, 1120",
    planner=_gemma4_plan,
    knob=BudgetKnob("max_soft_tokens", "soft-token budget", lambda p, n: list(GEMMA4_SOFT_TOKENS), monotone=False),
    # Gemma4ImageProcessorPil: BICUBIC, pixels rescaled to 0..1 and not normalised; the model reads them as
    # 16-px patches padded to max_soft_tokens·9 rows (pixel_values here keep the (3, h, w) view)
    pixels=PixelRecipe(UNIT_RANGE, resample="bicubic"),
    reference_model=ReferenceModel(GEMMA4_VISION, GEMMA4_TEXT),  # transformers class defaults
    vectors=tuple(f"gemma4_{n}" for n in GEMMA4_SOFT_TOKENS),
    order=301,
    explainer=_gemma4_explain,
))


# ---------------------------------------------------------------------------------------------
# PaliGemma


def _paligemma_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    s, g = p["image_size"], p["image_size"] // p["patch_size"]
    # image_seq_length <image> tokens; the <bos> after them is the prompt's own, so no marker text
    return single_view_plan("paligemma", w, h, p, (s, s), (g, g), text_tokens=0)


register(StrategyInfo(
    name="paligemma",
    family="single view",
    summary="PaliGemma: the image squashed to 224² / 448² / 896², SigLIP p14: (S/14)² = 256 / 1024 / 4096 tokens",
    reference="Beyer et al. 2024, PaliGemma; transformers models/paligemma processing_paligemma.py : "
              "replace_image_token, models/siglip image_processing_pil_siglip.py",
    params={
        "image_size": ParamSpec("int", 224, "square input side of the checkpoint (224, 448 or 896)",
                                choices=(224, 448, 896)),
        "patch_size": ParamSpec("int", 14, "SigLIP patch side", min=1, max=64),
    },
    budget="image_size over 224, 448, 896",
    planner=_paligemma_plan,
    knob=BudgetKnob("image_size", "checkpoint resolution", lambda p, n: [224, 448, 896], monotone=True),
    pixels=PixelRecipe(SIGLIP, resample="bicubic"),  # SiglipImageProcessorPil: BICUBIC, mean/std 0.5
    reference_model=ReferenceModel(SIGLIP_SO400M, GEMMA_2B),  # google/paligemma-3b-pt-224
    vectors=("paligemma_224", "paligemma_448", "paligemma_896"),
    order=302,
))

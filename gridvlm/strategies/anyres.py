"""AnyRes canvases: pick the best canvas from a candidate list, fit the image in it, cut it into tiles.

LLaVA-NeXT, LLaVA-OneVision, LLaVA-1.5-HD and DeepSeek-VL2 share the canvas choice
(``select_best_resolution``); they differ in how the image is placed on the canvas and in how the
tile features become LLM tokens (unpadding, bilinear pooling, newlines, 2×2 space-to-depth).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, cut_canvas, make_tile, py_round, square_pad_content, squashed_view, whole
from .registry import Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register, subset_knob
from .reference import (
    CLIP, CLIP_L_336, DEEPSEEK_VL2_MOE, MISTRAL_7B, QWEN2_7B, SIGLIP, SIGLIP_SO400M, VICUNA_7B, ReferenceModel,
)

_ONEVISION_PAD = tuple(int(m * 255) for m in SIGLIP[0])  # pad_to_square's int(255 · image_mean)

LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
ONEVISION_PINPOINTS = [[i * 384, j * 384] for i in range(1, 7) for j in range(1, 7)]
LLAVA_HD_GRIDS = [[2, 2], [1, 2], [1, 3], [1, 4], [2, 1], [3, 1], [4, 1]]  # rows × cols, in the paper's order


def deepseek_candidates(max_tiles: int) -> list[list[int]]:
    """DeepSeek-VL2's candidate canvases in tiles (w, h): all m×n ≤ max_tiles, in its config's order."""
    pairs = [(w, h) for w in range(1, max_tiles + 1) for h in range(1, max_tiles + 1) if w * h <= max_tiles]
    pairs.sort(key=lambda p: (p[0] * p[1], min(p), p[0]))
    return [[w, h] for w, h in pairs]


def rank_resolutions(width: int, height: int,
                     candidates_wh: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], int]:
    """`select_best_resolution`'s scores: (effective resolution, wasted pixels) of each candidate canvas (w, h), in
    list order, and the index of the winner: the most real pixels kept, then the fewest wasted; first wins ties."""
    scores, best, best_eff, best_waste = [], -1, -1, math.inf
    for i, (cw, ch) in enumerate(candidates_wh):
        scale = min(cw / width, ch / height)
        eff = min(int(width * scale) * int(height * scale), width * height)
        waste = cw * ch - eff
        scores.append((eff, waste))
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = i, eff, waste
    return scores, best


def select_best_resolution(width: int, height: int, candidates_wh: list[tuple[int, int]]) -> tuple[int, int]:
    """The candidate canvas (w, h) that keeps the most real pixels, then wastes the fewest; first wins ties."""
    return candidates_wh[rank_resolutions(width, height, candidates_wh)[1]]


def fit_in_canvas(width: int, height: int, cw: int, ch: int) -> tuple[int, int]:
    """LLaVA-NeXT's resize inside the canvas (note the ceil), aspect ratio kept."""
    scale_w, scale_h = cw / width, ch / height
    if scale_w < scale_h:
        return cw, min(math.ceil(height * scale_w), ch)
    return min(math.ceil(width * scale_h), cw), ch


def centred(canvas: tuple[int, int], content: tuple[int, int]) -> tuple[int, int, int, int]:
    left = (canvas[0] - content[0]) // 2
    top = (canvas[1] - content[1]) // 2
    return (left, top, left + content[0], top + content[1])


def unpadded_size(width: int, height: int, ch: int, cw: int, round7: bool) -> tuple[int, int, int, int]:
    """Feature map (rows, cols) after LLaVA-NeXT's unpadding, and the rows/cols removed on each side.

    transformers rounds to 7 decimals before truncating; the original repo truncates directly.
    Returns (rows, cols, pad_rows, pad_cols).
    """
    if width / height > cw / ch:
        new = height * (cw / width)
        new = int(round(new, 7)) if round7 else int(new)
        pad = (ch - new) // 2
        return ch - 2 * pad, cw, pad, 0
    new = width * (ch / height)
    new = int(round(new, 7)) if round7 else int(new)
    pad = (cw - new) // 2
    return ch, cw - 2 * pad, 0, pad


def pooled_size(rows: int, cols: int, g: int, max_features_tiles: int | None) -> tuple[int, int]:
    """LLaVA-OneVision's anyres_max_N: the (rows, cols) an unpadded feature map is resized to (bilinearly).

    A map holding more than 1.1² × N tiles' worth of g × g features shrinks by the same factor on both axes
    (truncated); a smaller map, or max_features_tiles None (LLaVA-NeXT), keeps its size.
    """
    if max_features_tiles is None:
        return rows, cols
    ratio = math.sqrt(rows * cols / (max_features_tiles * g**2))
    if ratio <= 1.1:
        return rows, cols
    return int(rows // ratio), int(cols // ratio)


def sample_centres(pad: int, kept: int, out: int) -> list[int]:
    """The full-map row (or column) holding the bilinear sample centre of each of `out` resized rows.

    The unpadded map keeps rows [pad, pad + kept) of the tiles' bands·g rows; with out == kept each row is its
    own centre (pad, pad + 1, …).
    """
    return [int(pad + (i + 0.5) * kept / out) for i in range(out)]


def _kept_per_band(bands: int, g: int, pad: int, kept: int, out: int) -> list[int]:
    """How many of `out` output feature rows fall in each tile band, after unpadding (and pooling).

    The unpadded map keeps rows [pad, pad + kept) of bands·g rows; when `out` < `kept` the map was
    resized bilinearly and each output row is assigned to the band holding its sample centre.
    """
    counts = [0] * bands
    for centre in sample_centres(pad, kept, out):
        counts[min(bands - 1, centre // g)] += 1
    return counts


def _anyres_plan(name: str, w: int, h: int, p: dict[str, Any], max_features_tiles: int | None) -> Plan:
    """LLaVA-NeXT (max_features_tiles None) and LLaVA-OneVision (anyres_max_N pooling)."""
    t, g = p["tile_size"], p["tile_size"] // p["patch_size"]
    if p.get("multi_image"):
        # Several images in one prompt: no tiling, the image padded to a square, one view and one newline.
        tile = make_tile(0, 0, 0, whole((w, h)), (t, t), g * g, (g, g), content_box=square_pad_content(w, h, t))
        return Plan(name, p, (w, h), (1, 1), None, (tile,), None, None, g * g + 1,
                    {"tiles": g * g, "newlines": 1},
                    notes=("multi-image prompt: OneVision pads each image to a square and does not tile it",))
    hf = p["pinpoint_order"] == "hw"
    candidates = [(b, a) if hf else (a, b) for a, b in p["grid_pinpoints"]]  # as (w, h)
    cw, ch = select_best_resolution(w, h, candidates)
    rows, cols = ch // t, cw // t
    new_w, new_h = fit_in_canvas(w, h, cw, ch)
    content = centred((cw, ch), (new_w, new_h))

    feat_rows, feat_cols, pad_r, pad_c = unpadded_size(w, h, rows * g, cols * g, round7=hf)
    out_rows, out_cols = pooled_size(feat_rows, feat_cols, g, max_features_tiles)
    notes = []
    if (out_rows, out_cols) != (feat_rows, feat_cols):
        notes.append(
            f"anyres_max_{max_features_tiles}: the {feat_rows}×{feat_cols} unpadded feature map is resized "
            f"bilinearly to {out_rows}×{out_cols}"
        )
    per_row = _kept_per_band(rows, g, pad_r, feat_rows, out_rows)
    per_col = _kept_per_band(cols, g, pad_c, feat_cols, out_cols)

    thumb = squashed_view(0, (w, h), (t, t), g * g, (g, g))
    # Unpadding (and pooling) leaves each tile a different share of its g×g features.
    tiles = cut_canvas((cw, ch), content, (w, h), rows, cols, (t, t), 1, g * g, (g, g),
                       tokens_of=lambda r, c: per_row[r] * per_col[c])
    grid_tokens = out_rows * out_cols
    return Plan(
        strategy=name,
        params=p,
        image_size=(w, h),
        grid=(rows, cols),
        canvas_size=(cw, ch),
        tiles=tuple(tiles),
        thumbnail=thumb,
        thumbnail_position="first",
        token_count=g * g + grid_tokens + out_rows,
        tokens={"thumbnail": g * g, "tiles": grid_tokens, "newlines": out_rows},
        content_box=content,
        notes=tuple(notes),
    )


def _canvas_label(cw: int, ch: int, t: int) -> str:
    return f"{ch // t}×{cw // t} tiles on a {cw}×{ch} canvas"


def _names(labels: list[str]) -> str:
    """"a", "a and b", "a, b and c", or "a, b and 5 more" for long lists."""
    if len(labels) > 3:
        return f"{labels[0]}, {labels[1]} and {len(labels) - 2} more"
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def explain_canvas(name: str, w: int, h: int, candidates_wh: list[tuple[int, int]], t: int, source: str) -> Explanation:
    """Why `select_best_resolution` took its canvas: every candidate (w, h) with the scores `rank_resolutions`
    ranks it by (the planner's own helper), tie-breaks named. `source` says where the candidate list comes from."""
    scores, best = rank_resolutions(w, h, candidates_wh)
    best_eff, best_waste = scores[best]
    labels = [_canvas_label(cw, ch, t) for cw, ch in candidates_wh]
    less_waste = [labels[i] for i, (e, x) in enumerate(scores) if e == best_eff and x > best_waste]
    exact = [labels[i] for i, (e, x) in enumerate(scores) if i != best and (e, x) == (best_eff, best_waste)]
    candidates = []
    for i, ((cw, ch), (eff, waste)) in enumerate(zip(candidates_wh, scores)):
        note = ""
        if i == best:
            parts = []
            if less_waste:
                parts.append(f"ties {_names(less_waste)} on effective resolution and wastes fewer pixels")
            if exact:
                parts.append(f"exact tie with {_names(exact)}: the reference keeps the first one in the list")
            note = "; ".join(parts)
        elif eff == best_eff and waste > best_waste:
            note = f"same effective resolution as the winner but {waste - best_waste:,} more wasted pixels"
        elif (eff, waste) == (best_eff, best_waste):
            note = "exact tie with the winner, which comes first in the list"
        candidates.append(Candidate(labels[i], {"effective resolution": eff, "wasted pixels": waste},
                                    chosen=i == best, grid=(ch // t, cw // t), note=note))
    cap = w * h
    decision = f"{labels[best]} wins: it keeps the most of the image, {best_eff:,} real pixels"
    decision += f" (all {cap:,}: the score is capped at the image's own size)" if best_eff == cap else ""
    if less_waste:
        decision += (f"; {_names(less_waste)} keep{'s' * (len(less_waste) == 1)} as much, so the tie goes to "
                     f"the canvas that wastes fewer pixels ({best_waste:,})")
    if exact:
        decision += (f"; {_names(exact)} tie{'s' * (len(exact) == 1)} with it exactly (same resolution and waste) and "
                     "the reference keeps the first one found")
    rule = (f"Each candidate canvas ({source}) is scored by its effective resolution: the image scaled to fit "
            "inside it (aspect kept), pixels counted but capped at the image's own; the most wins, ties go to the "
            "fewest wasted canvas pixels, and an exact tie to the first in the list. Grids are rows×cols, "
            "canvases width×height.")
    return Explanation(name, (w, h), rule, tuple(candidates), decision)


def _explain_anyres(name: str, w: int, h: int, p: dict[str, Any]) -> Explanation:
    t = p["tile_size"]
    if p.get("multi_image"):
        only = Candidate(f"1×1: the image padded to a square and resized to {t}×{t}", {"tiles": 1}, chosen=True,
                         grid=(1, 1), note="multi-image prompt: OneVision does not tile")
        return Explanation(name, (w, h), "In a multi-image prompt OneVision pads each image to a square and "
                           "does not tile it; there is no canvas to choose.", (only,),
                           "multi_image is set, so the one padded square view is used")
    hf = p["pinpoint_order"] == "hw"
    candidates = [(b, a) if hf else (a, b) for a, b in p["grid_pinpoints"]]
    order = "grid_pinpoints read as (height, width), as transformers" if hf else \
        "grid_pinpoints read as (width, height), as the original repo"
    return explain_canvas(name, w, h, candidates, t, order)


def _check_pinpoints(p: dict[str, Any]) -> None:
    t = p["tile_size"]
    bad = [pp for pp in p["grid_pinpoints"] if pp[0] % t or pp[1] % t]
    if bad:
        raise PlanError(f"grid_pinpoints must be multiples of tile_size {t}; these are not: {bad}")


def _pinpoint_tiles(pinpoint: list[int], p: dict[str, Any]) -> int:
    return (pinpoint[0] // p["tile_size"]) * (pinpoint[1] // p["tile_size"])


_PINPOINT_ORDER = ParamSpec(
    "str", "hw", "how the pinpoint list is read: 'hw' = (height, width) as transformers, 'wh' = (width, height) "
    "as the original LLaVA repos (also truncates instead of rounding when unpadding)", choices=("hw", "wh"))


register(StrategyInfo(
    name="llava-next",
    family="anyres",
    summary="LLaVA-NeXT AnyRes: best canvas from grid pinpoints, 336-px tiles, squashed global view first, "
            "unpadded features with a newline per row",
    reference="Liu et al. 2024, LLaVA-NeXT; transformers models/llava_next, haotian-liu/LLaVA mm_utils.py",
    params={
        "grid_pinpoints": ParamSpec("pairs", LLAVA_NEXT_PINPOINTS, "candidate canvases in pixels (see pinpoint_order)"),
        "pinpoint_order": _PINPOINT_ORDER,
        "tile_size": ParamSpec("int", 336, "vision encoder input side (crop_size)", min=14, max=2048),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
    },
    budget="grid_pinpoints: the pinpoint list restricted to canvases of at most k tiles",
    planner=lambda w, h, p: _anyres_plan("llava-next", w, h, p, None),
    explainer=lambda w, h, p: _explain_anyres("llava-next", w, h, p),
    knob=subset_knob("grid_pinpoints", _pinpoint_tiles),
    check=_check_pinpoints,
    pixels=PixelRecipe(CLIP),  # llava-hf/llava-v1.6-*-hf preprocessor_config
    reference_model=ReferenceModel(CLIP_L_336, MISTRAL_7B),  # llava-hf/llava-v1.6-mistral-7b-hf
    vectors=("llava_next_hf", "llava_next_original"),
    order=40,
))

register(StrategyInfo(
    name="llava-onevision",
    family="anyres",
    summary="LLaVA-OneVision anyres_max_9: up to 6×6 tiles of 384 px, features pooled bilinearly to about "
            "9 tiles' worth, global view first, newline per row",
    reference="Li et al. 2024, LLaVA-OneVision; transformers models/llava_onevision, LLaVA-VL/LLaVA-NeXT llava_arch.py",
    params={
        "grid_pinpoints": ParamSpec("pairs", ONEVISION_PINPOINTS, "candidate canvases in pixels (see pinpoint_order)"),
        "pinpoint_order": _PINPOINT_ORDER,
        "max_features_tiles": ParamSpec("int", 9, "N of anyres_max_N: the feature map is pooled above ~N tiles' worth",
                                        min=1, max=64),
        "multi_image": ParamSpec("bool", False, "the image is one of several in the prompt: no tiling, padded to a "
                                                "square, 729 + 1 tokens"),
        "tile_size": ParamSpec("int", 384, "vision encoder input side", min=14, max=2048),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
    },
    budget="grid_pinpoints: the pinpoint list restricted to canvases of at most k tiles",
    planner=lambda w, h, p: _anyres_plan("llava-onevision", w, h, p, p["max_features_tiles"]),
    explainer=lambda w, h, p: _explain_anyres("llava-onevision", w, h, p),
    knob=subset_knob("grid_pinpoints", _pinpoint_tiles),
    check=_check_pinpoints,
    # llava-hf/llava-onevision-qwen2-*-ov-hf: image_mean/std 0.5 (SigLIP-so400m). multi_image is pad_to_square
    # with int(255 · the processor's mean), then the resize: the same order as LLaVA-1.5 'pad'.
    pixels=PixelRecipe(SIGLIP),
    pixels_for=lambda base, plan: replace(base, pad_colour=_ONEVISION_PAD, pad_to_square_first=True)
    if plan.params["multi_image"] else base,
    reference_model=ReferenceModel(SIGLIP_SO400M, QWEN2_7B),  # llava-hf/llava-onevision-qwen2-7b-ov-hf
    vectors=("llava_onevision_hf", "llava_onevision_original"),
    order=50,
))


# ---------------------------------------------------------------------------------------------
# LLaVA-1.5-HD


def _llava_hd_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t, g = p["tile_size"], p["tile_size"] // p["patch_size"]
    cw, ch = select_best_resolution(w, h, [(c * t, r * t) for r, c in p["grids"]])
    rows, cols = ch // t, cw // t
    content = centred((cw, ch), fit_in_canvas(w, h, cw, ch))
    per_view = g * g
    tiles = cut_canvas((cw, ch), content, (w, h), rows, cols, (t, t), 1, per_view, (g, g))
    return Plan(
        strategy="llava-1.5-hd",
        params=p,
        image_size=(w, h),
        grid=(rows, cols),
        canvas_size=(cw, ch),
        tiles=tuple(tiles),
        thumbnail=squashed_view(0, (w, h), (t, t), per_view, (g, g)),
        thumbnail_position="first",
        token_count=per_view * (1 + rows * cols),
        tokens={"thumbnail": per_view, "tiles": per_view * rows * cols},
        content_box=content,
    )


register(StrategyInfo(
    name="llava-1.5-hd",
    family="anyres",
    summary="LLaVA-1.5-HD: best of a fixed set of 1×2…4×1 grids of 336-px tiles plus a squashed global view "
            "first; 576 tokens per view, no newlines",
    reference="Liu et al. 2023, Improved Baselines with Visual Instruction Tuning (LLaVA-1.5-HD), §3.4",
    params={
        "grids": ParamSpec("pairs", LLAVA_HD_GRIDS, "candidate grids as [rows, cols], in preference order"),
        "tile_size": ParamSpec("int", 336, "vision encoder input side", min=14, max=2048),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
    },
    budget="grids: the grid set restricted to grids of at most k tiles",
    planner=_llava_hd_plan,
    explainer=lambda w, h, p: explain_canvas("llava-1.5-hd", w, h, [(c * p["tile_size"], r * p["tile_size"])
                                                                    for r, c in p["grids"]],
                                             p["tile_size"], "the paper's grids, in its order"),
    knob=subset_knob("grids"),
    pixels=PixelRecipe(CLIP),  # LLaVA-1.5's CLIP ViT-L/14-336
    reference_model=ReferenceModel(CLIP_L_336, VICUNA_7B),  # LLaVA-1.5-HD (LLaVA-1.5 paper §3.3), 7B
    order=30,
))


# ---------------------------------------------------------------------------------------------
# DeepSeek-VL2


def pad_contain(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int, int, int]:
    """Where PIL's ImageOps.pad puts the image inside (box_w, box_h): aspect kept, centred, Python rounding."""
    im_ratio, dest_ratio = width / height, box_w / box_h
    new_w, new_h = box_w, box_h
    if im_ratio != dest_ratio:
        if im_ratio > dest_ratio:
            new_h = py_round(height / width * box_w)
        else:
            new_w = py_round(width / height * box_h)
    if new_w < 1 or new_h < 1:
        raise PlanError(
            f"a {width}×{height} image is too thin to pad into {box_w}×{box_h}: it would be resized to "
            f"{new_w}×{new_h} pixels"
        )
    x = py_round((box_w - new_w) * 0.5)
    y = py_round((box_h - new_h) * 0.5)
    return (x, y, x + new_w, y + new_h)


def _deepseek_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t = p["tile_size"]
    g = math.ceil(t // p["patch_size"] / p["downsample_ratio"])  # 27 -> 14 after padding to 28 and 2×2 merge
    if p["cropping"]:
        bw, bh = select_best_resolution(w, h, [(a * t, b * t) for a, b in p["candidate_tiles"]])
    else:
        bw, bh = t, t
    rows, cols = bh // t, bw // t
    global_content = pad_contain(w, h, t, t)
    thumb = make_tile(0, -1, -1, whole((w, h)), (t, t), g * g, (g, g), content_box=global_content)
    content = pad_contain(w, h, bw, bh)
    tiles = cut_canvas((bw, bh), content, (w, h), rows, cols, (t, t), 1, g * g, (g, g))
    local_newlines = g * rows
    notes = () if p["cropping"] else ("prompts with more than 2 images are not tiled: one 1×1 local view",)
    return Plan(
        strategy="deepseek-vl2",
        params=p,
        image_size=(w, h),
        grid=(rows, cols),
        canvas_size=(bw, bh),
        tiles=tuple(tiles),
        thumbnail=thumb,
        thumbnail_position="first",
        token_count=g * (g + 1) + 1 + (g * rows) * (g * cols + 1),
        tokens={"thumbnail": g * g, "tiles": g * g * rows * cols, "newlines": g + local_newlines, "separators": 1},
        content_box=content,
        notes=notes,
    )


def _explain_deepseek(w: int, h: int, p: dict[str, Any]) -> Explanation:
    t = p["tile_size"]
    if not p["cropping"]:
        only = Candidate(f"1×1 tile on a {t}×{t} canvas", {"tiles": 1}, chosen=True, grid=(1, 1),
                         note="cropping off (a prompt with more than 2 images)")
        return Explanation("deepseek-vl2", (w, h), "With cropping off (prompts with more than 2 images) the "
                           f"reference skips the canvas choice and uses one {t}×{t} local tile.", (only,),
                           "cropping is off, so there is no choice: one 1×1 local tile after the global view")
    return explain_canvas("deepseek-vl2", w, h, [(a * t, b * t) for a, b in p["candidate_tiles"]], t,
                          "candidate_tiles as (w, h) in tiles, in the config's order")


register(StrategyInfo(
    name="deepseek-vl2",
    family="anyres",
    summary="DeepSeek-VL2: best canvas of up to 9 384-px tiles, aspect-preserving grey-padded global view first, "
            "a view separator, 2×2-merged 14×14 features with newlines",
    reference="Wu et al. 2024, DeepSeek-VL2; deepseek-ai/DeepSeek-VL2 processing_deepseek_vl_v2.py",
    params={
        "candidate_tiles": ParamSpec("pairs", deepseek_candidates(9),
                                     "candidate canvases as [w, h] in tiles, in the config's order"),
        "cropping": ParamSpec("bool", True, "tile the image; the reference turns this off for prompts with more "
                                            "than 2 images"),
        "tile_size": ParamSpec("int", 384, "vision encoder input side", min=14, max=2048),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
        "downsample_ratio": ParamSpec("int", 2, "space-to-depth merge factor of the projector", min=1, max=8),
    },
    budget="candidate_tiles: the candidate canvases restricted to at most k tiles",
    planner=_deepseek_plan,
    explainer=_explain_deepseek,
    knob=subset_knob("candidate_tiles"),
    # processing_deepseek_vl_v2.py: image_mean/std 0.5; ImageOps.pad(color=int(255 * 0.5))
    pixels=PixelRecipe(SIGLIP, pad_colour=(127, 127, 127)),
    reference_model=ReferenceModel(SIGLIP_SO400M, DEEPSEEK_VL2_MOE),  # deepseek-ai/deepseek-vl2
    vectors=("deepseek_vl2", "deepseek_vl2_multi_image"),
    order=110,
))

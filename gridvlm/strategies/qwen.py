"""The Qwen2-VL resize family: one native-resolution view resized to multiples of patch·merge within a pixel budget.

Qwen2-VL, Qwen2.5-VL (plus its 112-px attention windows), Qwen3-VL, GLM-4.1V and PaddleOCR-VL all use
Qwen2-VL's `smart_resize`; transformers keeps a drifting copy of it per family. gridvlm writes the rounding once
(`smart_resize`) and names each family's difference as a parameter:

* `small`: what happens to a side below `factor` before the aspect test — nothing (Qwen2-VL), GLM-4.1V's
  `scale = max(f/H, f/W); H, W = int(H·s), int(W·s)` (`models/glm4v/image_processing_pil_glm4v.py` L52-55), or
  PaddleOCR-VL's per-side stretch `W = round(W·f/H); H = f` (`models/paddleocr_vl/image_processing_pil_paddleocr_vl.py`
  L67-73);
* `temporal`: GLM-4.1V multiplies the area by its 2 still frames before comparing with the bounds (L63-71);
* `clamp_first`: qwen-vl-utils clamps every side to ≥ factor before the bounds (transformers clamps only the floor
  branch).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, make_tile, whole
from .native import single_view_plan
from .reference import (
    CLIP, ERNIE_4_5_0_3B, GLM4_9B, GLM4V_VIT, PADDLEOCR_VL_VIT, QWEN2_5_VL_VIT, QWEN2_7B, QWEN2_VL_VIT, QWEN3_8B,
    QWEN3_VL_VIT, SIGLIP, ReferenceModel,
)
from .registry import (
    BudgetKnob, Candidate, Explanation, ParamSpec, PatchLayout, PixelRecipe, StrategyInfo, at_most, register,
)


def prepare_sides(height: int, width: int, factor: int, small: str) -> tuple[int, int]:
    """The (H, W) the rounding starts from once a side below `factor` was enlarged (`small`, see the module)."""
    if small == "scale" and (height < factor or width < factor):
        s = max(factor / height, factor / width)
        return int(height * s), int(width * s)
    if small == "stretch":
        if height < factor:
            width, height = round((width * factor) / height), factor
        if width < factor:
            height, width = round((height * factor) / width), factor
    return height, width


def smart_resize_trace(height: int, width: int, factor: int, min_pixels: int, max_pixels: int,
                       clamp_first: bool = False, temporal: int = 1, small: str = "none",
                       family: str = "Qwen2-VL") -> tuple[int, int, tuple]:
    """`smart_resize` with the path it took: (h, w, (prepared (H, W), rounded (h, w), branch, beta)).

    branch is "kept" (the rounded size is within the bounds), "max" (shrunk to fit max_pixels) or "min" (enlarged
    to reach min_pixels); beta is the scale divisor of that branch (None when kept). Python's `round` (half to
    even) as the references; PlanError where they raise (aspect above 200:1).
    """
    height, width = prepare_sides(height, width, factor, small)
    if min(height, width) < 1 or max(height, width) / min(height, width) > 200:
        ratio = max(height, width) / max(1, min(height, width))
        raise PlanError(f"{family} refuses images with an aspect ratio above 200:1; this one is {ratio:.0f}:1 "
                        f"({width}×{height} after its small-side rule); crop or pad it below 200:1")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if clamp_first:
        h_bar, w_bar = max(factor, h_bar), max(factor, w_bar)
    rounded, branch, beta = (h_bar, w_bar), "kept", None
    if temporal * h_bar * w_bar > max_pixels:
        branch, beta = "max", math.sqrt((temporal * height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
        if not clamp_first:
            h_bar, w_bar = max(factor, h_bar), max(factor, w_bar)
    elif temporal * h_bar * w_bar < min_pixels:
        branch, beta = "min", math.sqrt(min_pixels / (temporal * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar, ((height, width), rounded, branch, beta)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int, clamp_first: bool = False,
                 temporal: int = 1, small: str = "none", family: str = "Qwen2-VL") -> tuple[int, int]:
    """The resize target (h, w): multiples of `factor`, `temporal`·h·w within [min_pixels, max_pixels].

    Python's `round` (half to even) as the references; PlanError where they raise (aspect above 200:1).
    """
    h_bar, w_bar, _ = smart_resize_trace(height, width, factor, min_pixels, max_pixels, clamp_first, temporal,
                                         small, family)
    return h_bar, w_bar


# Per strategy: (small-side rule, temporal factor, display name).
_RULES = {
    "qwen2-vl": ("none", 1, "Qwen2-VL"),
    "qwen2.5-vl": ("none", 1, "Qwen2.5-VL"),
    "qwen3-vl": ("none", 1, "Qwen3-VL"),
    "glm-4.1v": ("scale", 2, "GLM-4.1V"),
    "paddleocr-vl": ("stretch", 1, "PaddleOCR-VL"),
}


def _temporal(name: str, p: dict[str, Any]) -> int:
    return p.get("temporal_patch_size", 1) if _RULES[name][1] > 1 else 1


def _resized_trace(name: str, w: int, h: int, p: dict[str, Any]) -> tuple[int, int, tuple]:
    small, _, family = _RULES[name]
    factor = p["patch_size"] * p["merge_size"]
    return smart_resize_trace(h, w, factor, p["min_pixels"], p["max_pixels"], p.get("rounding") == "qwen-vl-utils",
                              _temporal(name, p), small, family)


def _resized(name: str, w: int, h: int, p: dict[str, Any]) -> tuple[int, int]:
    rh, rw, _ = _resized_trace(name, w, h, p)
    return rh, rw


def window_boxes(w: int, h: int, rw: int, rh: int, p: dict[str, Any]) -> tuple[tuple[float, ...], ...]:
    """Qwen2.5-VL's attention windows (`vision_utils.get_vision_window_index`), original pixels, window order.

    Windows of `window_size // merge // patch` merged tokens a side from the top-left, row-major; the padded
    empty windows the function adds when the grid is a multiple of the window are not windows of the image.
    """
    side = p["window_size"] // p["merge_size"] // p["patch_size"] * p["merge_size"] * p["patch_size"]
    if side <= 0:
        return ()
    sx, sy = w / rw, h / rh
    xs = [(x * sx, min(x + side, rw) * sx) for x in range(0, rw, side)]
    ys = [(y * sy, min(y + side, rh) * sy) for y in range(0, rh, side)]
    return tuple((x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs)


def _planner(name: str):
    def plan_it(w: int, h: int, p: dict[str, Any]) -> Plan:
        factor = p["patch_size"] * p["merge_size"]
        rh, rw = _resized(name, w, h, p)
        if rh < factor or rw < factor:
            raise PlanError(f"qwen-vl-utils would resize a {w}×{h} image to {rw}×{rh} pixels (empty); "
                            f"raise max_pixels above {p['max_pixels']}")
        grid = (rh // factor, rw // factor)
        tile = make_tile(0, 0, 0, whole((w, h)), (rw, rh), grid[0] * grid[1], grid)
        windows = window_boxes(w, h, rw, rh, p) if "window_size" in p else ()
        return single_view_plan(name, w, h, p, tile, {"tiles": grid[0] * grid[1]}, text_tokens=2, windows=windows)
    return plan_it


def _explainer(name: str):
    """Why the resize is what it is: the three branches of `smart_resize`, the one it took chosen."""
    plan_it = _planner(name)

    def explain_it(w: int, h: int, p: dict[str, Any]) -> Explanation:
        found = plan_it(w, h, p)  # refuses what the planner refuses (aspect above 200:1, empty resize)
        small, temporal_rule, family = _RULES[name]
        factor, t = p["patch_size"] * p["merge_size"], _temporal(name, p)
        rh, rw, ((height, width), (h0, w0), branch, beta) = _resized_trace(name, w, h, p)
        lo, hi = p["min_pixels"], p["max_pixels"]
        counted = t * h0 * w0
        area = f"{t}·h·w" if t > 1 else "h·w"
        utils = p.get("rounding") == "qwen-vl-utils"
        tokens = float(found.token_count)
        rounding = []
        for side, v in (("height", height), ("width", width)):
            if (2 * v) % (2 * factor) == factor:  # exactly .5: Python's round goes to the even multiple
                rounding.append(f"{side} {v}/{factor} = {v / factor:g} rounds half to even → {round(v / factor)}")
        if utils and min(round(height / factor), round(width / factor)) == 0:
            rounding.append(f"qwen-vl-utils clamps each side to ≥ {factor} before the bounds")
        kept = Candidate(
            f"rounded to multiples of {factor}: {w0}×{h0}",
            {"pixels counted": float(counted), "min_pixels": float(lo), "max_pixels": float(hi)},
            chosen=branch == "kept", grid=found.grid if branch == "kept" else None,
            note="; ".join(rounding + ["within the bounds, kept" if branch == "kept" else
                                        f"{area} = {counted:,} is {'above max' if branch == 'max' else 'below min'}"
                                        f"_pixels"]))
        if branch == "max":
            shrink = Candidate(f"shrunk to fit max_pixels: {rw}×{rh} (floor of side/β/{factor})",
                               {"beta": beta, "pixels counted": float(t * rh * rw), "max_pixels": float(hi),
                                "tokens": tokens}, chosen=True, grid=found.grid,
                               note="" if utils else f"transformers raises each floored side to ≥ {factor}")
        else:
            shrink = Candidate("shrink to fit max_pixels (floor of side/β)", {"max_pixels": float(hi)},
                               note=f"not taken: {area} = {counted:,} ≤ max_pixels")
        if branch == "min":
            grow = Candidate(f"enlarged to reach min_pixels: {rw}×{rh} (ceil of side·β/{factor})",
                             {"beta": beta, "pixels counted": float(t * rh * rw), "min_pixels": float(lo),
                              "tokens": tokens}, chosen=True, grid=found.grid)
        else:
            grow = Candidate("enlarge to reach min_pixels (ceil of side·β)", {"min_pixels": float(lo)},
                             note="not taken: " + ("the max_pixels branch is tested first" if branch == "max" else
                                                   f"{area} = {counted:,} ≥ min_pixels"))
        if branch == "kept":
            kept = Candidate(kept.label, {**kept.scores, "tokens": tokens}, True, kept.grid, kept.note)
        rule = (f"{family}'s smart_resize rounds each side to the nearest multiple of {factor} (half to even); if "
                f"{area} of that exceeds max_pixels it shrinks by β = √({area}/max_pixels) and floors, else if it "
                f"is below min_pixels it enlarges by β = √(min_pixels/{area}) and ceils. Aspect ratios above 200:1 "
                f"are refused.")
        if t > 1:
            rule += f" The bounds count the {t} still frames ({area})."
        pre = ""
        if (height, width) != (h, w):
            how = ("scaled both sides up until the smaller is ≥ " if small == "scale" else
                   "stretched the thin side to ")
            pre = f"{family} first {how}{factor}: {w}×{h} → {width}×{height}; "
        if branch == "kept":
            taken = f"the rounded {w0}×{h0} is within [{lo:,}, {hi:,}], so it is kept"
        else:
            taken = (f"the rounded {w0}×{h0} counts {counted:,} px "
                     + (f"> max_pixels {hi:,}, so it shrinks" if branch == "max" else
                        f"< min_pixels {lo:,}, so it enlarges") + f" (β = {beta:.4f}) to {rw}×{rh}")
        decision = (f"{pre}{taken}: {rh // factor}×{rw // factor} cells of {factor} px = {found.token_count} tokens"
                    + (f" ({'; '.join(rounding)})" if rounding else ""))
        return Explanation(name, (w, h), rule, (kept, shrink, grow), decision)

    return explain_it


def _knob(name: str) -> BudgetKnob:
    """max_pixels in steps of one token's pixels (factor², times the temporal factor that the bound counts)."""

    def step(p: dict[str, Any]) -> int:
        return (p["patch_size"] * p["merge_size"]) ** 2 * _temporal(name, p)

    def values(p: dict[str, Any], max_tokens: int) -> range:
        cell = step(p)
        first = max(1, -(-p["min_pixels"] // cell))
        return range(first * cell, max(first, max_tokens) * cell + 1, cell)

    def runs(p: dict[str, Any], max_tokens: int, size: tuple[int, int]) -> list[range]:
        """Below the rounded image's area max_pixels shrinks the image (tokens grow with it); from that area on
        the image keeps its rounded size. On thin images the shrinking branch can give MORE tokens than the
        rounded size (the thin side is clamped up to one cell while the long side scales with 1/β), so the two
        runs are searched apart."""
        factor, cell = p["patch_size"] * p["merge_size"], step(p)
        w, h = size
        height, width = prepare_sides(h, w, factor, _RULES[name][0])
        h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
        if p.get("rounding") == "qwen-vl-utils":
            h_bar, w_bar = max(factor, h_bar), max(factor, w_bar)
        first = values(p, max_tokens).start
        natural = -(-(h_bar * w_bar * _temporal(name, p)) // cell) * cell  # first max_pixels keeping the rounded size
        return [range(first, natural, cell), range(max(natural, first), natural + 1, cell)]

    return BudgetKnob("max_pixels", "pixel budget in steps of one token's pixels", values, monotone=True,
                      segments=runs)


def _patches(base: PixelRecipe, plan: Plan) -> PixelRecipe:
    p = plan.params
    if plan.strategy == "paddleocr-vl":  # patches row-major, one frame, returned as (N, 3, 14, 14)
        return replace(base, patches=PatchLayout(p["patch_size"], 1, 1))
    return replace(base, patches=PatchLayout(p["patch_size"], p["merge_size"], p.get("temporal_patch_size", 2)))


def _pixel_params(min_pixels: int, max_pixels: int, patch: int, min_help: str, max_help: str) -> dict[str, ParamSpec]:
    return {
        "min_pixels": ParamSpec("int", min_pixels, min_help, min=1, max=10**10),
        "max_pixels": ParamSpec("int", max_pixels, max_help, min=1, max=10**10),
        "patch_size": ParamSpec("int", patch, "ViT patch side", min=1, max=64),
        "merge_size": ParamSpec("int", 2, "spatial merge of the projector (2×2 patches → 1 token)", min=1, max=8),
    }


def _register(name: str, summary: str, reference: str, params: dict[str, ParamSpec], budget: str, pixels: PixelRecipe,
              model: ReferenceModel, vectors: tuple[str, ...], order: int, family: str = "native resolution") -> None:
    register(StrategyInfo(
        name=name, family=family, summary=summary, reference=reference, params=params, budget=budget,
        planner=_planner(name), pixels=pixels, pixels_for=_patches, reference_model=model, vectors=vectors,
        order=order, knob=_knob(name), check=at_most(name, "min_pixels", "max_pixels"), explainer=_explainer(name),
    ))


_QWEN2_PIXELS = _pixel_params(3136, 16384 * 28 * 28, 14, "lower pixel bound (checkpoint preprocessor_config)",
                              "upper pixel bound: 12,845,056 in the Qwen2-VL/2.5-VL checkpoints; transformers' class "
                              "default is 1280·28² = 1,003,520")

_register(
    "qwen2-vl",
    "Qwen2-VL native resolution: resize to multiples of 28 within a pixel budget, no tiles; one token per 28×28 "
    "cell after 2×2 merging",
    "Wang et al. 2024, Qwen2-VL; transformers models/qwen2_vl smart_resize, QwenLM qwen-vl-utils",
    {**_QWEN2_PIXELS,
     "rounding": ParamSpec("str", "transformers", "'transformers' or 'qwen-vl-utils' (clamps thin sides to 28 first)",
                           choices=("transformers", "qwen-vl-utils"))},
    "max_pixels = tokens · 28²",
    PixelRecipe(CLIP, patches=PatchLayout(14, 2)),  # Qwen2-VL preprocessor_config: OpenAI CLIP mean/std
    ReferenceModel(QWEN2_VL_VIT, QWEN2_7B),  # Qwen/Qwen2-VL-7B-Instruct
    ("qwen2_vl_hf_checkpoint", "qwen2_vl_hf_classdefault", "qwen_vl_utils"),
    120,
)

_register(
    "qwen2.5-vl",
    "Qwen2.5-VL: Qwen2-VL's resize and tokens; its encoder attends within 112-px windows (full attention in "
    "layers 7, 15, 23, 31)",
    "Bai et al. 2025, Qwen2.5-VL; transformers models/qwen2_vl/image_processing_pil_qwen2_vl.py : smart_resize L58, "
    "vision_utils.py : get_vision_window_index L130 (window_size 112: configuration_qwen2_5_vl.py L63-65)",
    {**_QWEN2_PIXELS,
     "window_size": ParamSpec("int", 112, "encoder attention window side in resized pixels "
                                          "(window_size // merge // patch merged tokens a side)", min=1, max=4096)},
    "max_pixels = tokens · 28²",
    PixelRecipe(CLIP, patches=PatchLayout(14, 2)),  # Qwen2.5-VL preprocessor_config: OpenAI CLIP mean/std
    ReferenceModel(QWEN2_5_VL_VIT, QWEN2_7B),  # Qwen/Qwen2.5-VL-7B-Instruct (Qwen2.5-7B has Qwen2-7B's shape)
    ("qwen2_5_vl",),
    200,
)

_register(
    "qwen3-vl",
    "Qwen3-VL: Qwen2-VL's resize with 16-px patches (multiples of 32), 65,536 … 16,777,216 px; one token per "
    "32×32 cell",
    "Qwen3-VL (2025); transformers models/qwen2_vl smart_resize with factor 32 (Qwen3VLProcessor → "
    "Qwen2VLImageProcessor with the checkpoint's patch 16)",
    _pixel_params(65536, 16777216, 16, "lower pixel bound (Qwen3-VL preprocessor_config size.shortest_edge)",
                  "upper pixel bound (Qwen3-VL preprocessor_config size.longest_edge)"),
    "max_pixels = tokens · 32²",
    PixelRecipe(SIGLIP, patches=PatchLayout(16, 2)),  # Qwen3-VL preprocessor_config: mean = std = 0.5
    ReferenceModel(QWEN3_VL_VIT, QWEN3_8B),  # Qwen/Qwen3-VL-8B-Instruct
    ("qwen3_vl",),
    201,
)

_register(
    "glm-4.1v",
    "GLM-4.1V: Qwen2-VL's resize counted over 2 still frames (the pixel bound halves), small sides scaled up to "
    "28 first; one token per 28×28 cell",
    "GLM-V team 2025, GLM-4.1V-Thinking; transformers models/glm4v/image_processing_pil_glm4v.py : smart_resize L37 "
    "(num_frames = temporal_patch_size = 2, L127)",
    {**_pixel_params(12544, 11760000, 14, "lower bound on 2·h·w (size.shortest_edge)",
                     "upper bound on 2·h·w (size.longest_edge): at most 5,880,000 px of image"),
     "temporal_patch_size": ParamSpec("int", 2, "frames a still image is repeated into; the pixel bounds count "
                                                "them", min=1, max=8)},
    "max_pixels = tokens · 2 · 28²",
    PixelRecipe(CLIP, patches=PatchLayout(14, 2)),  # Glm4vImageProcessorPil: OpenAI CLIP mean/std, bicubic
    ReferenceModel(GLM4V_VIT, GLM4_9B),  # THUDM/GLM-4.1V-9B-Thinking (transformers config defaults)
    ("glm4v",),
    202,
)

_register(
    "paddleocr-vl",
    "PaddleOCR-VL: Qwen2-VL's resize within 147,456 … 2,359,296 px, thin sides stretched to 28 first; one token "
    "per 28×28 cell",
    "PaddleOCR-VL (2025); transformers models/paddleocr_vl/image_processing_pil_paddleocr_vl.py : smart_resize L60",
    _pixel_params(147456, 2359296, 14, "lower pixel bound (class: 384²)", "upper pixel bound (class: 1536²)"),
    "max_pixels = tokens · 28²",
    PixelRecipe(CLIP, patches=PatchLayout(14, 1, 1)),  # PaddleOCRVLImageProcessorPil: OpenAI CLIP mean/std
    ReferenceModel(PADDLEOCR_VL_VIT, ERNIE_4_5_0_3B),  # PaddlePaddle/PaddleOCR-VL (transformers config defaults)
    ("paddleocr_vl",),
    203,
)

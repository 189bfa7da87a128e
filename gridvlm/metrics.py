"""What a plan costs and what it loses: padding, distortion, coverage, seams through content, compute.

``plan_metrics`` is pure arithmetic on a ``Plan`` (standard library only). ``seam_energy`` reads pixels and imports
numpy and Pillow when called. No torch, no gradio.

Conventions: boxes are ``(x0, y0, x1, y1)`` in original-image pixels, x right and y down. A view's *content* is
``Tile.content_box`` (where its box lands in the view, input pixels); the rest of the view is padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gridvlm.geometry import Box, Plan, Tile, area, intersect, whole

# ---------------------------------------------------------------------------------------------------------------
# Reference models, for compute estimates


# Each strategy names its reference model when it registers; the shapes are re-exported here for callers.
from gridvlm.strategies import strategy_info  # noqa: E402
from gridvlm.strategies.reference import ReferenceModel, TransformerSpec  # noqa: E402,F401


def _reference_model(plan: Plan) -> ReferenceModel | None:
    return strategy_info(plan.strategy).reference_model


def vision_gflops(plan: Plan, model: ReferenceModel | None = None) -> float | None:
    """Estimated encoder GFLOPs for all of the plan's views, each view a separate sequence.

    A view of ``(w, h)`` input pixels has ``(h // p) · (w // p)`` patch tokens (a stride-p convolution drops the
    remainder; CLS tokens ignored), p = the plan's ``patch_size`` parameter when it has one, else the encoder's.
    None when the strategy names no reference model (``StrategyInfo.reference_model``).
    """
    model = model or _reference_model(plan)
    if model is None:
        return None
    p = plan.params.get("patch_size")
    p = p if isinstance(p, int) and p > 0 else model.encoder.patch
    return sum(model.encoder.gflops((v.input_size[1] // p) * (v.input_size[0] // p)) for v in plan.views)


def llm_prefill_gflops(plan: Plan, model: ReferenceModel | None = None) -> float | None:
    """Estimated LLM prefill GFLOPs for the image alone: ``token_count + text_tokens`` tokens, no prompt text.

    0.0 for an encoder without a language model; None when the strategy names no reference model
    (``StrategyInfo.reference_model``).
    """
    model = model or _reference_model(plan)
    if model is None:
        return None
    if model.llm is None:
        return 0.0
    return model.llm.gflops(plan.token_count + plan.text_tokens)


# ---------------------------------------------------------------------------------------------------------------
# Plan metrics


def view_scale(view: Tile) -> float | None:
    """Linear resize factor of a view: ``sqrt(content area / box area)``; > 1 upscaled. None for an empty box."""
    box_area = area(view.box)
    content_area = area(view.content_box)
    if box_area <= 0 or content_area <= 0:
        return None
    return math.sqrt(content_area / box_area)


def view_aspect_distortion(view: Tile) -> float | None:
    """``max(r, 1/r) − 1`` with ``r = (content w / content h) / (box w / box h)``; 0 = aspect kept.

    None for an empty box or content.
    """
    bw, bh = view.box[2] - view.box[0], view.box[3] - view.box[1]
    cw, ch = view.content_box[2] - view.content_box[0], view.content_box[3] - view.content_box[1]
    if min(bw, bh, cw, ch) <= 0:
        return None
    r = (cw / ch) / (bw / bh)
    return max(r, 1 / r) - 1


def union_area(boxes: list[Box], clip: Box) -> float:
    """Area of the union of `boxes` inside `clip`, exact (coordinate compression; fine for tens of boxes)."""
    boxes = [b for b in (intersect(b, clip) for b in boxes) if area(b) > 0]
    if not boxes:
        return 0.0
    xs = sorted({b[0] for b in boxes} | {b[2] for b in boxes})
    total = 0.0
    for xa, xb in zip(xs, xs[1:]):
        spans = sorted((b[1], b[3]) for b in boxes if b[0] <= xa and b[2] >= xb)
        covered, end = 0.0, -math.inf
        for y0, y1 in spans:
            if y1 > end:
                covered += y1 - max(y0, end)
                end = y1
        total += covered * (xb - xa)
    return total


def plan_metrics(plan: Plan) -> dict[str, Any]:
    """Flat, JSON-friendly numbers that describe a plan. Keys and units:

    - ``views``: views the encoder runs (tiles + global view); ``tokens``: ``plan.token_count``;
      ``text_tokens``: ``plan.text_tokens``.
    - ``padding_fraction``: padded pixels / all input pixels, summed over views (0..1).
    - ``aspect_distortion``: worst view's ``max(r, 1/r) − 1``, r = content aspect / box aspect (0 = kept;
      0.33 = one axis stretched 33 % relative to the other).
    - ``max_upscale``: the largest linear upscale factor of any view (≥ 1; 1.0 = no view upscaled).
      ``max_downscale``: the largest linear *downscale* factor, as ``1 / smallest scale`` (≥ 1; 4.0 = some view
      shrinks its box 4× per side; 1.0 = none shrinks). A view's scale is ``sqrt(content area / box area)``.
    - ``coverage``: share (0..1) of the original image inside the union of all views' boxes (a global view
      covers everything); ``tile_coverage``: the same over the tiles alone.
    - ``pixels_per_token``: original ``W·H / token_count`` (None when the plan has no tokens).
    - ``vision_gflops``, ``llm_prefill_gflops``: compute *estimates* in GFLOPs for the strategy's reference model
      (``StrategyInfo.reference_model``; None for a strategy that names none). ``vision_model`` /
      ``llm_model``: their names.
    """
    w, h = plan.image_size
    image_box = whole(plan.image_size)
    image_area = float(w * h)
    views = plan.views

    input_pixels = sum(v.input_size[0] * v.input_size[1] for v in views)
    padded_pixels = sum(v.padding * v.input_size[0] * v.input_size[1] for v in views)
    scales = [s for s in map(view_scale, views) if s is not None]
    distortions = [d for d in map(view_aspect_distortion, views) if d is not None]
    model = _reference_model(plan)

    def coverage(boxes: list[Box]) -> float:
        return union_area(boxes, image_box) / image_area if image_area > 0 else 0.0

    return {
        "views": len(views),
        "tokens": plan.token_count,
        "text_tokens": plan.text_tokens,
        "padding_fraction": padded_pixels / input_pixels if input_pixels else 0.0,
        "aspect_distortion": max(distortions, default=0.0),
        "max_upscale": max(1.0, max(scales, default=1.0)),
        "max_downscale": 1.0 / min(1.0, min(scales, default=1.0)),
        "coverage": coverage([v.box for v in views]),
        "tile_coverage": coverage([t.box for t in plan.tiles]),
        "pixels_per_token": image_area / plan.token_count if plan.token_count else None,
        "vision_gflops": vision_gflops(plan, model),
        "llm_prefill_gflops": llm_prefill_gflops(plan, model),
        "vision_model": model.encoder.name if model else None,
        "llm_model": (model.llm.name if model.llm else None) if model else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# Seams

CONTEXT_FRACTION = 1 / 8
"""A cut is fully repaired when a neighbouring view sees this share of its own side (perpendicular to the cut) on
both sides of the line: an overlap of ``m`` scales the cut's energy by ``max(0, 1 − m / (side · 1/8))``."""

SEAM_BAND = 2  # half-width, in preview pixels, of the band whose gradient a seam averages
SEAM_MAX_SIDE = 1024  # gradients are computed on a copy at most this long


@dataclass(frozen=True)
class SeamReport:
    """Where tile boundaries cut through the image, and how much content they cut."""

    # (x0, y0, x1, y1, energy) per seam piece, original pixels; a vertical piece has x0 == x1.
    # energy: mean gradient in a thin band on the line / the image's mean gradient (1.0 = average content),
    # already reduced by overlap (see CONTEXT_FRACTION).
    segments: tuple[tuple[float, float, float, float, float], ...]
    score: float  # length-weighted mean energy over all pieces; 0.0 without internal seams

    def to_dict(self) -> dict[str, Any]:
        return {"segments": [list(s) for s in self.segments], "score": self.score}


def seam_lines(plan: Plan) -> list[tuple[str, float, float, float, float]]:
    """Internal seams of a plan's tiles: ``(axis, position, start, stop, protection)`` in original pixels.

    ``axis`` "v" is a vertical line ``x = position`` for ``y ∈ [start, stop]``; "h" a horizontal one. A piece of
    line is a seam when a tile's box ends on it strictly inside the image and tiles cover both sides of it (a crop
    edge with nothing beyond is lost content, not a seam). ``protection`` is what overlap repairs there: the largest
    ``min(distance to its two edges) / (its side · CONTEXT_FRACTION)`` over tiles that strictly span the line,
    i.e. the share of the needed context a neighbour sees around the cut (0 = plain cut). The global view
    defines no seam. Box coordinates are rounded to 1e-6 px so float noise does not split a line in two.
    """
    out = []
    boxes = [tuple(round(v, 6) for v in t.box) for t in plan.tiles if area(t.box) > 0]
    w, h = plan.image_size
    for axis, lo, hi, limit in (("v", 0, 2, w), ("h", 1, 3, h)):
        # along = the coordinate along the line
        a_lo, a_hi = (1, 3) if axis == "v" else (0, 2)
        positions = sorted({b[i] for b in boxes for i in (lo, hi) if 0 < b[i] < limit})
        for c in positions:
            ends = [b for b in boxes if b[lo] == c or b[hi] == c]
            cuts = sorted({b[k] for b in boxes for k in (a_lo, a_hi)})
            pieces = []
            for s0, s1 in zip(cuts, cuts[1:]):
                if not any(b[a_lo] <= s0 and b[a_hi] >= s1 for b in ends):
                    continue
                along = [b for b in boxes if b[a_lo] <= s0 and b[a_hi] >= s1]
                before = any(b[lo] < c <= b[hi] for b in along)
                after = any(b[lo] <= c < b[hi] for b in along)
                if not (before and after):
                    continue
                protection = max(
                    (min(c - b[lo], b[hi] - c) / ((b[hi] - b[lo]) * CONTEXT_FRACTION)
                     for b in along if b[lo] < c < b[hi]),
                    default=0.0,
                )
                if pieces and pieces[-1][1] == s0 and pieces[-1][2] == protection:
                    pieces[-1][1] = s1  # merge with the previous piece
                else:
                    pieces.append([s0, s1, protection])
            out.extend((axis, c, s0, s1, protection) for s0, s1, protection in pieces)
    return out


def seam_energy(image: Any, plan: Plan) -> SeamReport:
    """How much image content the plan's internal tile boundaries cut through.

    `image` is a PIL image or a uint8 array ``(H, W, 3)`` (or ``(H, W)``) of the planned image, or a downscaled
    preview of it with the same aspect ratio: plan coordinates are mapped by the ratio of the sizes.

    Energy of a seam piece = the mean gradient magnitude (grayscale, central differences, on a copy at most
    ``SEAM_MAX_SIDE`` px long) in a band ``±SEAM_BAND`` px around the line, divided by the mean gradient of the
    whole image (1.0 = average content; text and edges > 1; 0 for a flat image). Where a neighbouring tile
    overlaps the line, the content cut here is seen whole there, so the energy is scaled by
    ``max(0, 1 − overlap)`` (see ``seam_lines`` and ``CONTEXT_FRACTION``).
    """
    import numpy as np

    gray = _gray_preview(image, SEAM_MAX_SIDE)  # (h, w) float32
    ph, pw = gray.shape
    w, h = plan.image_size
    sx, sy = pw / w, ph / h
    if abs(sx / sy - 1) > 0.02 + 1 / pw + 1 / ph:  # a preview's sides are rounded: ±1 px each
        raise ValueError(
            f"the image is {pw}×{ph} px but the plan is for {w}×{h}: pass the planned image or a preview of it "
            "with the same aspect ratio"
        )
    # central differences, (h, w) each; a side of one pixel has no gradient along it
    gy = np.gradient(gray, axis=0) if ph > 1 else np.zeros_like(gray)
    gx = np.gradient(gray, axis=1) if pw > 1 else np.zeros_like(gray)
    grad = np.hypot(gx, gy)
    mean = float(grad.mean())

    segments = []
    for axis, c, s0, s1, protection in seam_lines(plan):
        if axis == "v":
            x = c * sx
            band = grad[_span(s0 * sy, s1 * sy, ph), _span(x - SEAM_BAND, x + SEAM_BAND, pw)]
            seg = (c, s0, c, s1)
        else:
            y = c * sy
            band = grad[_span(y - SEAM_BAND, y + SEAM_BAND, ph), _span(s0 * sx, s1 * sx, pw)]
            seg = (s0, c, s1, c)
        raw = float(band.mean()) / mean if mean > 0 and band.size else 0.0
        segments.append((*(float(v) for v in seg), raw * max(0.0, 1.0 - protection)))

    lengths = [abs(s[2] - s[0]) + abs(s[3] - s[1]) for s in segments]
    total = sum(lengths)
    score = sum(n * s[4] for n, s in zip(lengths, segments)) / total if total > 0 else 0.0
    return SeamReport(segments=tuple(segments), score=score)


def _span(a: float, b: float, limit: int) -> slice:
    """Pixel rows/columns covering ``[a, b)``, at least one, inside ``[0, limit)``."""
    i0 = min(max(int(math.floor(a)), 0), limit - 1)
    i1 = min(max(int(math.ceil(b)), i0 + 1), limit)
    return slice(i0, i1)


def _gray_preview(image: Any, max_side: int):
    """Grayscale float32 ``(h, w)`` copy of a PIL image or array, at most `max_side` px long."""
    import numpy as np
    from PIL import Image

    from gridvlm.imaging import as_pil_image

    image = as_pil_image(image).convert("L")
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BOX
        )
    return np.asarray(image, dtype=np.float32)

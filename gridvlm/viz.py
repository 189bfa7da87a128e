"""Plotly figures from plans, packings and seams.

Every figure is a ``plotly.graph_objects.Figure``. Plans are drawn in original-image pixels (x right, y down);
an image is never embedded at full resolution: ``preview`` shrinks it (≤ 1024 px long side, JPEG) and the plan's
coordinates are mapped onto it by the ratio of sizes. Shapes and traces carry ``name``s so the app and the tests
can find them: ``"tile r,c"`` (one rectangle shape and one hover trace per tile), ``"global view"``,
``"padding"``, ``"seam"``.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Mapping, Sequence

from gridvlm.extras import require

require("plotly", "app", what="gridvlm.viz")
import plotly.graph_objects as go
from plotly.colors import make_colorscale, qualitative, sample_colorscale, sequential
from plotly.subplots import make_subplots

from gridvlm.geometry import Box, Plan, Tile, area
from gridvlm.imaging import as_pil_image

PALETTE = qualitative.Dark24 + qualitative.Light24
# Tile outlines: greens, blues and purples only (hues 100°-300°), so that no tile reads as a seam of the warm
# seam scale below (hues 340°-60°).
TILE_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#3949ab", "#00897b", "#8e24aa", "#0277bd",
                "#43a047", "#5e35b1", "#00acc1", "#283593")
PADDING_FILL = "rgba(120, 120, 120, 0.22)"
# pale yellow (cuts nothing) to dark red (cuts text/edges), as explicit stops: plotly.js's *named* "YlOrRd" runs the
# other way round from plotly.py's, so the colour bar would contradict the seam lines coloured here
SEAM_COLORSCALE = make_colorscale(sequential.YlOrRd)
SEAM_CMAX = 3.0  # seam energy at the top of the colour scale (3× the image's mean gradient)


# ---------------------------------------------------------------------------------------------------------------
# Images


def preview(image: Any, max_side: int = 1024):
    """An RGB PIL copy of `image` (PIL image or uint8 array ``(H, W, 3)``/``(H, W)``), at most `max_side` px long."""
    from PIL import Image

    small = as_pil_image(image).convert("RGB")  # always a copy: thumbnail() below never touches the caller's image
    if max(small.size) > max_side:
        small.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return small


def _data_uri(image, quality: int = 82) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _encoded(image: Any, max_side: int) -> tuple[str, tuple[int, int]]:
    """``(JPEG data URI, (w, h))`` of the preview; pass the result around to encode an image once."""
    if isinstance(image, tuple):
        return image
    small = preview(image, max_side)
    return _data_uri(small), small.size


def _image_layout(image: Any, image_size: tuple[int, int], max_side: int) -> dict:
    """The preview as a layout image (without axis references) stretched over ``[0, W] × [0, H]`` in original
    pixels, below the data.

    Not an image trace: plotly.js loads an image trace's source before it can size the trace and copies its pixels
    into a canvas for hover, which made redrawing an overlay wait ~0.8 s in Chromium on a busy machine (and a
    Compare figure once per cell); a layout image is one <image> element sized from these numbers.
    """
    uri, _ = _encoded(image, max_side)
    return dict(source=uri, name="image", x=0, y=0, sizex=image_size[0], sizey=image_size[1], sizing="stretch",
                xanchor="left", yanchor="top", layer="below")


# ---------------------------------------------------------------------------------------------------------------
# Plan overlays


def view_footprint(view: Tile) -> Box | None:
    """The whole input of a view (padding included) mapped to original pixels; None for an empty box.

    The view's ``content_box`` (input pixels) lands on its ``box`` (original pixels); the same affine map takes
    the full ``(0, 0, input w, input h)`` to the footprint, which extends past the image where the view is padded.
    """
    (bx0, by0, bx1, by1), (cx0, cy0, cx1, cy1) = view.box, view.content_box
    if min(bx1 - bx0, by1 - by0, cx1 - cx0, cy1 - cy0) <= 0:
        return None
    sx, sy = (bx1 - bx0) / (cx1 - cx0), (by1 - by0) / (cy1 - cy0)
    x0, y0 = bx0 - cx0 * sx, by0 - cy0 * sy
    return (x0, y0, x0 + view.input_size[0] * sx, y0 + view.input_size[1] * sy)


def _minus(outer: Box, inner: Box) -> list[Box]:
    """`outer` with `inner` cut out, as up to four rectangles (top, bottom, left, right)."""
    ox0, oy0, ox1, oy1 = outer
    ix0, iy0 = max(ox0, inner[0]), max(oy0, inner[1])
    ix1, iy1 = min(ox1, inner[2]), min(oy1, inner[3])
    if ix1 <= ix0 or iy1 <= iy0:
        return [outer]
    parts = [(ox0, oy0, ox1, iy0), (ox0, iy1, ox1, oy1), (ox0, iy0, ix0, iy1), (ix1, iy0, ox1, iy1)]
    return [p for p in parts if area(p) > 1e-9]


def _scale_text(view: Tile) -> str:
    bw, bh = view.box[2] - view.box[0], view.box[3] - view.box[1]
    cw, ch = view.content_box[2] - view.content_box[0], view.content_box[3] - view.content_box[1]
    if min(bw, bh) <= 0:
        return "empty box"
    return f"×{cw / bw:.3g} horizontally, ×{ch / bh:.3g} vertically"


def _hover_text(view: Tile, label: str) -> str:
    x0, y0, x1, y1 = view.box
    return (
        f"<b>{label}</b><br>"
        f"box: ({x0:.1f}, {y0:.1f}) – ({x1:.1f}, {y1:.1f}) px, {x1 - x0:.1f}×{y1 - y0:.1f}<br>"
        f"input: {view.input_size[0]}×{view.input_size[1]} px<br>"
        f"scale: {_scale_text(view)}<br>"
        f"padding: {100 * view.padding:.1f}%<br>"
        f"tokens: {view.token_count} (grid {view.token_grid[0]}×{view.token_grid[1]})"
    )


# How big a tile label is drawn: the overlay shows the image's long side at about DRAWN_SIDE_PX (640-px figure
# less its margins), and a 10-px label character is about LABEL_CHAR_PX wide and LABEL_HEIGHT_PX tall.
DRAWN_SIDE_PX = 600
LABEL_CHAR_PX = 6.5
LABEL_HEIGHT_PX = 14


def label_box(tile: Tile, text: str, image_size: tuple[int, int]) -> Box:
    """The part of the image (original pixels) a label `text` in the tile's top-left corner covers when drawn."""
    scale = max(image_size) / DRAWN_SIDE_PX  # original pixels per screen pixel
    x0, y0 = tile.box[0], tile.box[1]
    return (x0, y0, x0 + len(text) * LABEL_CHAR_PX * scale, y0 + LABEL_HEIGHT_PX * scale)


def tile_label(tile: Tile, image_size: tuple[int, int] | None = None) -> str:
    """The label drawn in a tile's corner: ``"r,c · N tok"``, shortened to ``"r,c"`` and then left out ("") where
    the tile is too small to hold it when drawn, so labels of dense grids never run into each other
    (`image_size` given; None: always the full label)."""
    full = f"{tile.row},{tile.col} · {tile.token_count} tok"
    if image_size is None:
        return full
    for text in (full, f"{tile.row},{tile.col}"):
        x0, y0, x1, y1 = label_box(tile, text, image_size)
        if x1 <= tile.box[2] and y1 <= tile.box[3]:
            return text
    return ""


class _Overlay:
    """Shapes, annotations and traces (plain dicts) of one set of axes, collected first and made into a figure at
    once by `_overlay_figure`.

    Plotly validates every property of every object it is given, which for a Compare figure of 40 plans (hundreds
    of traces and shapes) took seconds; the dicts written here use only valid properties, so the figure is built
    without that validation.
    """

    def __init__(self, subplot: int = 1):
        self.shapes, self.annotations, self.traces, self.images = [], [], [], []
        suffix = "" if subplot == 1 else str(subplot)
        self.xref, self.yref = f"x{suffix}", f"y{suffix}"

    def shape(self, **kw) -> None:
        self.shapes.append(dict(xref=self.xref, yref=self.yref, **kw))

    def annotation(self, **kw) -> None:
        self.annotations.append(dict(xref=self.xref, yref=self.yref, **kw))

    def trace(self, trace: dict) -> None:
        self.traces.append({**trace, "xaxis": self.xref, "yaxis": self.yref})

    def image(self, image: dict) -> None:
        self.images.append(dict(xref=self.xref, yref=self.yref, **image))


def _overlay_figure(overlays: Sequence[_Overlay], layout: dict) -> go.Figure:
    """One figure from what the overlays collected and a layout dict (axes, title, size), unvalidated."""
    layout = {**layout, "shapes": [s for o in overlays for s in o.shapes], "images": [i for o in overlays for i in o.images],
              "annotations": [*layout.get("annotations", ()), *(a for o in overlays for a in o.annotations)]}
    return go.Figure(data=[t for o in overlays for t in o.traces], layout=layout, _validate=False)


def _add_overlay(
    out: _Overlay,
    plan: Plan,
    image: Any = None,
    seams: Any = None,
    show_seams: bool = True,
    max_side: int = 1024,
    labels: bool = True,
    windows: bool = False,
    row_breaks: bool = True,
    compact: bool = False,
) -> Box:
    """Collect one plan's drawing (image, padding, tiles, global view, attention windows, row-break markers,
    seams) into `out`; returns the extent. `compact` (small multiples): one hover marker per view at its centre,
    all in one trace, instead of a filled hover trace per tile, and no row-break markers: the browser draws a
    figure of 40 plans several times faster with ~2 traces per plan than with ~10."""
    w, h = plan.image_size
    if compact:
        row_breaks = False
    if image is not None:
        out.image(_image_layout(image, plan.image_size, max_side))
    else:
        out.shape(type="rect", x0=0, y0=0, x1=w, y1=h, name="image", layer="below",
                  line=dict(color="#444", width=1), fillcolor="rgba(230, 230, 230, 0.5)")

    extent = [0.0, 0.0, float(w), float(h)]
    image_box = (0.0, 0.0, float(w), float(h))
    for view in plan.views:
        footprint = view_footprint(view)
        if footprint is None:
            continue
        extent = [min(extent[0], footprint[0]), min(extent[1], footprint[1]),
                  max(extent[2], footprint[2]), max(extent[3], footprint[3])]
        for part in _minus(footprint, image_box):
            out.shape(type="rect", x0=part[0], y0=part[1], x1=part[2], y1=part[3], name="padding",
                      line=dict(width=0), fillcolor=PADDING_FILL)

    line_width = 2 if len(plan.tiles) <= 16 else 1
    for k, tile in enumerate(plan.tiles):
        color = TILE_PALETTE[k % len(TILE_PALETTE)]
        x0, y0, x1, y1 = tile.box
        name = f"tile {tile.row},{tile.col}"
        out.shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, name=name, line=dict(color=color, width=line_width))
        label = tile_label(tile, plan.image_size) if labels else ""
        if label:
            out.annotation(x=x0, y=y0, text=label, name=name, showarrow=False, xanchor="left",
                           yanchor="top", font=dict(color=color, size=10), bgcolor="rgba(255, 255, 255, 0.75)",
                           borderpad=1)
        if compact:
            continue
        out.trace(dict(
            type="scatter",
            x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], name=name, mode="lines", line=dict(width=0, color=color),
            fill="toself", fillcolor=_alpha(color, 0.06), hoveron="fills", hoverinfo="text",
            text=_hover_text(tile, name), showlegend=False,
        ))

    if plan.thumbnail is not None:
        t = plan.thumbnail
        pad = 0.01 * max(w, h)
        text = f"global view · {t.token_count} tok · {plan.thumbnail_position or ''}".rstrip(" ·")
        out.shape(type="rect", x0=-pad, y0=-pad, x1=w + pad, y1=h + pad, name="global view",
                  line=dict(color="black", width=2, dash="dash"))
        if labels:
            out.annotation(x=w + pad, y=h + pad, text=text, name="global view", showarrow=False, xanchor="right",
                           yanchor="top", font=dict(size=11), bgcolor="rgba(255, 255, 255, 0.85)")
        if not compact:
            out.trace(dict(
                type="scatter",
                x=[w + pad], y=[h + pad], mode="markers", marker=dict(size=8, color="black", symbol="square"),
                name="global view", hoverinfo="text", text=_hover_text(t, "global view"), showlegend=False,
            ))
    if compact:
        _add_view_markers(out, plan)

    if windows:
        _add_windows(out, plan)
    if row_breaks:
        _add_row_breaks(out, plan)
    if seams is not None and show_seams:
        _add_seams(out, seams)
    return tuple(extent)


def _add_view_markers(out: _Overlay, plan: Plan) -> None:
    """One trace of small markers, one per view (tile centres; the global view at the image's corner), carrying
    each view's hover text."""
    xs, ys, texts, colors = [], [], [], []
    for k, tile in enumerate(plan.tiles):
        x0, y0, x1, y1 = tile.box
        xs.append((x0 + x1) / 2)
        ys.append((y0 + y1) / 2)
        texts.append(_hover_text(tile, f"tile {tile.row},{tile.col}"))
        colors.append(PALETTE[k % len(PALETTE)])
    if plan.thumbnail is not None:
        w, h = plan.image_size
        xs.append(w)
        ys.append(h)
        texts.append(_hover_text(plan.thumbnail, "global view"))
        colors.append("black")
    out.trace(dict(type="scatter", x=xs, y=ys, mode="markers", name="views", hoverinfo="text", text=texts,
                   marker=dict(size=4, color=colors, symbol="square", opacity=0.4), showlegend=False))


WINDOW_COLOR = "rgba(255, 0, 170, 0.9)"
ROW_BREAK_COLOR = "#333333"  # dark grey: red would read as a seam


def _add_windows(out: _Overlay, plan: Plan) -> None:
    """The encoder's attention windows (`Plan.windows`) as thin dotted outlines, numbered in window order."""
    if not plan.windows:
        return
    for k, (x0, y0, x1, y1) in enumerate(plan.windows):
        out.shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, name="attention window",
                  line=dict(color=WINDOW_COLOR, width=1, dash="dot"))
    out.trace(dict(
        type="scatter",
        x=[(w[0] + w[2]) / 2 for w in plan.windows], y=[(w[1] + w[3]) / 2 for w in plan.windows], mode="markers",
        marker=dict(size=4, color=WINDOW_COLOR), name="attention windows", hoverinfo="text", showlegend=False,
        text=[f"attention window {k} · {w[2] - w[0]:.0f}×{w[3] - w[1]:.0f} px of the image"
              for k, w in enumerate(plan.windows)],
    ))


def _add_row_breaks(out: _Overlay, plan: Plan) -> None:
    """A marker at the end of every token row of every view, where the prompt writes its row-break token."""
    from gridvlm.strategies import strategy_info

    token = strategy_info(plan.strategy).row_break_token
    if token is None:
        return
    xs, ys, texts = [], [], []
    for view in plan.views:
        footprint = view_footprint(view)
        rows = view.token_grid[0]
        if footprint is None or rows == 0:
            continue
        x0, y0, x1, y1 = footprint
        for r in range(rows):
            xs.append(x1)
            ys.append(y0 + (r + 0.5) * (y1 - y0) / rows)
            texts.append(f"{token} after token row {r} of view {view.index}")
    out.trace(dict(
        type="scatter",
        x=xs, y=ys, mode="markers", marker=dict(size=6, symbol="triangle-left", color=ROW_BREAK_COLOR),
        name=token, hoverinfo="text", text=texts, showlegend=False,
    ))


def _add_seams(out: _Overlay, seams: Any) -> None:
    """Seams as line shapes above the tile outlines, plus one marker per seam (its midpoint) that carries the
    hover text and the colour bar."""
    segments = list(getattr(seams, "segments", seams))
    if not segments:
        return
    energies = [s[4] for s in segments]
    colors = sample_colorscale(SEAM_COLORSCALE, [min(1.0, max(0.0, e / SEAM_CMAX)) for e in energies])
    for (x0, y0, x1, y1, _), color in zip(segments, colors):
        out.shape(type="line", x0=x0, y0=y0, x1=x1, y1=y1, name="seam", line=dict(color=color, width=4), opacity=0.9)
    out.trace(dict(
        type="scatter",
        x=[(s[0] + s[2]) / 2 for s in segments], y=[(s[1] + s[3]) / 2 for s in segments], mode="markers",
        name="seam energy", text=[f"seam energy {e:.2f}" for e in energies], hoverinfo="text",
        marker=dict(size=7, symbol="diamond", color=energies, cmin=0, cmax=SEAM_CMAX,
                    colorscale=SEAM_COLORSCALE, line=dict(color="white", width=1), showscale=True,
                    colorbar=SEAM_COLORBAR),
        showlegend=False,
    ))


# Below the plot, not beside it: beside, it took 40 % of a phone's width from the image.
SEAM_COLORBAR = dict(title=dict(text="seam energy (content cut by the border)", side="top"), orientation="h",
                     x=0.5, xanchor="center", y=-0.02, yanchor="top", len=0.6, thickness=10)


def _alpha(color: str, a: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {a})"


def _plan_title(plan: Plan) -> str:
    """Two lines (plotly does not wrap titles; one line was cut on a phone)."""
    rows, cols = plan.grid
    return (f"{plan.strategy} · grid {rows}×{cols}<br>{plan.num_views} view{'s' * (plan.num_views != 1)} · "
            f"{plan.token_count} tokens")


def _framed_axes(extent: Box, x_name: str = "x", **common) -> tuple[dict, dict]:
    """(xaxis, yaxis) layout dicts: original-pixel axes, y down, equal aspect (the y axis anchored to `x_name`),
    framing `extent` with a small margin."""
    x0, y0, x1, y1 = extent
    m = 0.03 * max(x1 - x0, y1 - y0, 1.0)
    frame = dict(showgrid=False, zeroline=False, constrain="domain", **common)
    return (dict(range=[x0 - m, x1 + m], **frame),
            dict(range=[y1 + m, y0 - m], scaleanchor=x_name, scaleratio=1, **frame))


OVERLAY_HEIGHT = 640  # px, the overlay of an image as wide as it is tall or wider: its width then bounds it
OVERLAY_MAX_HEIGHT = 1400  # px, the tallest overlay (a 1:5 portrait and beyond)


def overlay_height(image_size: tuple[int, int]) -> int:
    """The overlay's height in px for an image of this size: 640 up to square, taller for portraits, so that a
    tall image is not drawn as a strip (at a fixed 640 px a 1:5 page was ~100 px wide), at most 1400 px."""
    w, h = image_size
    aspect = h / w if w > 0 else 1.0
    return int(min(OVERLAY_MAX_HEIGHT, OVERLAY_HEIGHT + (OVERLAY_HEIGHT - 130) * max(0.0, aspect - 1.0)))


def plan_figure(plan: Plan, image: Any = None, seams: Any = None, show_seams: bool = True,
                show_windows: bool = False) -> go.Figure:
    """The plan drawn over the image (or over a grey rectangle of the image's size when `image` is None).

    Tiles are coloured rectangles labelled ``"r,c · N tok"`` (shorter or none on dense grids, `tile_label`) with a
    hover box (box, input size, scale, padding,
    tokens); padded input beyond the image is grey; the global view is a dashed outline around the image;
    `seams` (a ``SeamReport`` or its segments) are lines coloured by energy; `show_windows` draws the encoder's
    attention windows (`Plan.windows`, Qwen2.5-VL: a window edge is a boundary of its own); a strategy with a
    row-break token gets a marker at the end of every token row. `image` may be a preview of the planned image
    with the same aspect ratio.
    """
    out = _Overlay()
    xaxis, yaxis = _framed_axes(_add_overlay(out, plan, image, seams, show_seams, windows=show_windows))
    return _overlay_figure([out], dict(
        xaxis=xaxis, yaxis=yaxis, title=dict(text=_plan_title(plan)), height=overlay_height(plan.image_size),
        margin=dict(l=10, r=10, t=60, b=70 if seams is not None and show_seams else 10),  # b: the colour bar
        hovermode="closest", plot_bgcolor="white", showlegend=False,
    ))


# px; a Compare cell is ~250 px wide, and every cell carries its own copy of the preview in the page's payload
COMPARE_PREVIEW_SIDE = 256


def compare_title(name: str, plan: Plan) -> str:
    """A small multiple's title: the strategy, then its tokens."""
    return f"{name}<br>{plan.token_count} tok"


def compare_figure(plans: Mapping[str, Plan], image: Any = None, cols: int = 4) -> go.Figure:
    """Small multiples: one overlay per plan (title: its name and tokens), sharing one small preview."""
    names = list(plans)
    n = max(1, len(names))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    small = None if image is None else _encoded(image, COMPARE_PREVIEW_SIDE)
    gap_x, gap_y = 0.02, min(0.06, 0.3 / max(rows - 1, 1))  # as make_subplots spaces them, without its cost
    cell_w, cell_h = (1 - gap_x * (cols - 1)) / cols, (1 - gap_y * (rows - 1)) / rows
    layout: dict[str, Any] = dict(height=260 * rows + 60, margin=dict(l=10, r=10, t=40, b=10), showlegend=False,
                                  plot_bgcolor="white", title=dict(text="strategies compared"), annotations=[])
    overlays = []
    for k, name in enumerate(names):
        r, c = divmod(k, cols)
        out = _Overlay(k + 1)
        overlays.append(out)
        extent = _add_overlay(out, plans[name], small, max_side=COMPARE_PREVIEW_SIDE, labels=False, compact=True)
        xaxis, yaxis = _framed_axes(extent, out.xref, showticklabels=False)
        x0, y1 = c * (cell_w + gap_x), 1 - r * (cell_h + gap_y)
        layout[f"xaxis{'' if k == 0 else k + 1}"] = dict(domain=[x0, x0 + cell_w], anchor=out.yref, **xaxis)
        layout[f"yaxis{'' if k == 0 else k + 1}"] = dict(domain=[y1 - cell_h, y1], anchor=out.xref, **yaxis)
        layout["annotations"].append(dict(  # two short lines: one long line overlapped its neighbours on a phone
            text=compare_title(name, plans[name]), x=x0 + cell_w / 2, y=y1, xref="paper", yref="paper",
            xanchor="center", yanchor="bottom", showarrow=False, font=dict(size=11)))
    return _overlay_figure(overlays, layout)


# ---------------------------------------------------------------------------------------------------------------
# Numbers


_LABEL_POSITIONS = ("top center", "bottom center", "middle right", "middle left")  # alternate to limit overlaps


def tokens_scatter(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Visual tokens (x, log) against original pixels per token (y, log), one labelled point per strategy.

    `rows` are ``plan_metrics`` dicts with a ``"strategy"`` key; rows without ``pixels_per_token`` are skipped.
    """
    pts = [r for r in rows if r.get("pixels_per_token") and r.get("tokens")]
    fig = go.Figure(
        go.Scatter(
            x=[r["tokens"] for r in pts], y=[r["pixels_per_token"] for r in pts],
            text=[r["strategy"] for r in pts], mode="markers+text",
            textposition=[_LABEL_POSITIONS[k % len(_LABEL_POSITIONS)] for k in range(len(pts))],
            marker=dict(size=10, color=[PALETTE[k % len(PALETTE)] for k in range(len(pts))]),
            hovertemplate="%{text}<br>%{x} tokens<br>%{y:.0f} px/token<extra></extra>", name="strategies",
        )
    )
    fig.update_xaxes(type="log", title="visual tokens")
    fig.update_yaxes(type="log", title="original pixels per token")
    fig.update_layout(title="tokens vs detail", height=480, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def token_breakdown_figure(plan: Plan) -> go.Figure:
    """One horizontal stacked bar: the plan's token breakdown, plus its wrapper text tokens."""
    parts = dict(plan.tokens)
    if plan.text_tokens:
        parts["text (wrapper)"] = plan.text_tokens
    fig = go.Figure(
        [
            go.Bar(y=[plan.strategy], x=[n], name=key, orientation="h", marker_color=PALETTE[k % len(PALETTE)],
                   hovertemplate=f"{key}: {n} tokens<extra></extra>", text=[n], textposition="inside")
            for k, (key, n) in enumerate(parts.items())
        ]
    )
    total = plan.token_count + plan.text_tokens
    # The legend sits at the bottom of the figure (container coordinates), below the axis title and clear of it:
    # placed relative to the plot area, it landed on the title.
    fig.update_layout(
        barmode="stack", title=f"{plan.strategy}: {total} tokens", height=250, xaxis_title="tokens",
        margin=dict(l=10, r=10, t=50, b=95),
        legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
    )
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Packing


def _image_label(item: int, names: Sequence[str] | None) -> str:
    return f"{item}: {names[item]}" if names is not None else f"image {item}"


def packing_figure(packing: Any, token_counts: Sequence[int] | None = None, names: Sequence[str] | None = None,
                   upto: int | None = None) -> go.Figure:
    """One horizontal bar per packed sequence: a coloured segment per image, labelled with its index, then grey
    padding. The legend names every image (``names``, one per item; default ``image k``).

    ``upto``: draw only the packer's first ``upto`` placements (``Packing.placements()``), the last one outlined,
    every sequence keeping its row. Hover gives the image and its tokens; ``token_counts`` (optional, one per
    item) adds what the same image costs another way, e.g. under a tiling plan.
    """
    fig = go.Figure()
    L = packing.max_seq_len
    steps = packing.placements()
    shown = steps if upto is None else steps[:max(0, upto)]
    placed = {p.item for p in shown}
    latest = shown[-1].item if shown and upto is not None else None
    rows = [f"seq {s}" for s in range(len(packing.sequences))]
    opened = {p.sequence for p in shown}
    padding_in_legend = False
    for s, seq in enumerate(packing.sequences):
        offset = 0
        for item, n in seq:
            if item not in placed:
                continue
            label = _image_label(item, names)
            extra = f"<br>elsewhere: {token_counts[item]:,} tokens" if token_counts is not None else ""
            outline = dict(color="black", width=3) if item == latest else dict(color="white", width=1)
            fig.add_trace(go.Bar(
                y=[rows[s]], x=[n], base=[offset], orientation="h", name=label, legendgroup=label,
                text=[str(item)], textposition="inside", insidetextanchor="middle", textangle=0,
                marker=dict(color=PALETTE[item % len(PALETTE)], line=outline),
                hovertemplate=f"{label}<br>{n:,} tokens{extra}<extra></extra>",
            ))
            offset += n
        if s in opened and offset < L:
            fig.add_trace(go.Bar(
                y=[rows[s]], x=[L - offset], base=[offset], orientation="h", name="padding", legendgroup="padding",
                marker=dict(color="lightgrey"), hovertemplate=f"padding<br>{L - offset:,} tokens<extra></extra>",
                showlegend=not padding_in_legend,
            ))
            padding_in_legend = True
    n_seq = len(packing.sequences)
    legend_rows = math.ceil((len(placed) + 1) / 2)  # two entries a row at phone width
    head = (f"{len(packing.items)} images in {n_seq} sequence{'s' * (n_seq != 1)}"
            if upto is None or len(shown) == len(steps) else f"after {len(shown)} of {len(steps)} steps")
    fig.update_layout(
        barmode="overlay", uniformtext=dict(minsize=9, mode="show"),
        # short lines: the title must fit a 390-px phone
        title=dict(text=f"{head}<br><sup>{L:,} tokens each · {packing.order} order<br>utilisation "
                        f"{100 * packing.utilization:.1f}% · x: token position</sup>"),
        xaxis=dict(range=[0, L]),  # its title is in the subtitle: below the axis it would collide with the legend
        yaxis=dict(type="category", categoryorder="array", categoryarray=rows, tickmode="array", tickvals=rows,
                   ticktext=rows, autorange="reversed"),
        legend=dict(orientation="h", yanchor="top", y=-0.12, x=0, title_text="image"),
        height=170 + 34 * n_seq + 22 * legend_rows, margin=dict(l=10, r=10, t=80, b=10),
    )
    return fig


MASK_MAX_CELLS = 512
MASK_COLOR = "#1f4e9c"


def mask_figure(packing: Any, seq: int, names: Sequence[str] | None = None) -> go.Figure:
    """Heatmap of sequence `seq`'s block-diagonal attention mask (query rows, key columns), each block labelled
    with its image's index (hover: ``names``), with a legend for the two colours.

    Longer than ``MASK_MAX_CELLS`` tokens, the mask is max-pooled in ``f × f`` blocks (a cell is lit when any
    query-key pair in it may attend), so the figure holds at most 512 × 512 cells; axes stay in token positions.
    """
    import numpy as np

    # Drawn from the images' spans, never as the (L, L) mask: a cell (block a, block b) is lit when one image's
    # tokens fall in both blocks, which is what max-pooling the block-diagonal mask gives.
    spans = packing.spans(seq)  # (item, start, stop)
    L = int(packing.padded_len)
    f = max(1, math.ceil(L / MASK_MAX_CELLS))
    n = max(1, math.ceil(L / f))
    z = np.zeros((n, n), dtype=np.uint8)  # (query blocks, key blocks)
    for _, start, stop in spans:
        if stop > start:
            a, b = start // f, (stop - 1) // f + 1
            z[a:b, a:b] = 1
    fig = go.Figure(go.Heatmap(
        z=z, x0=(f - 1) / 2, dx=f, y0=(f - 1) / 2, dy=f, zmin=0, zmax=1, showscale=False,
        colorscale=[[0, "white"], [1, MASK_COLOR]], name="mask",
        hovertemplate="query %{y:.0f}, key %{x:.0f}: %{z}<extra></extra>",
    ))
    for name, color in (("may attend (query and key in the same image)", MASK_COLOR),
                        ("masked (another image, or padding)", "white")):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                                 marker=dict(symbol="square", size=14, color=color, line=dict(color="grey", width=1))))
    for item, start, stop in spans:
        if stop > start:
            fig.add_annotation(x=(start + stop) / 2, y=(start + stop) / 2, text=str(item), showarrow=False,
                               font=dict(color="white", size=12), hovertext=_image_label(item, names))
    title = f"attention mask, sequence {seq} ({L:,} tokens)"
    if f > 1:
        title += f"<br><sup>{f}×{f} token blocks per cell</sup>"
    fig.update_xaxes(title="key position", constrain="domain", range=[0, L])
    fig.update_yaxes(title="query position", autorange="reversed", scaleanchor="x", scaleratio=1)
    fig.update_layout(title=title, height=560, margin=dict(l=10, r=10, t=60, b=10), plot_bgcolor="white",
                      legend=dict(orientation="h", yanchor="top", y=-0.15, x=0))
    return fig


def packing_vs_tiling_figure(stats: Mapping[str, Any]) -> go.Figure:
    """Total tokens, padding tokens and attention cost of each layout, one panel above the other (so no title
    overlaps another at phone width), one horizontal bar per layout.

    `stats` maps a layout name to a ``BatchStats`` or its ``to_dict()``, e.g.
    ``{"packing": packing.stats(), "padded batch": padded_batch_stats(counts)}``. Attention cost is query-key
    pairs (Σ row_len² or Σ n² under a block-diagonal mask), in its own panel since its scale differs.
    """
    metrics = [("total_tokens", "total tokens (padding included)"), ("padding_tokens", "padding tokens"),
               ("attention_cost", "attention cost (query–key pairs)")]
    fig = make_subplots(rows=len(metrics), cols=1, subplot_titles=[t for _, t in metrics], vertical_spacing=0.14)
    names = list(stats)
    for k, (name, st) in enumerate(stats.items()):
        data = st.to_dict() if hasattr(st, "to_dict") else dict(st)
        for r, (key, label) in enumerate(metrics, start=1):
            value = data.get(key)
            if value is None and key == "total_tokens":
                value = data.get("rows", 0) * data.get("row_len", 0)
            fig.add_trace(go.Bar(
                y=[name], x=[value], name=name, orientation="h", marker_color=PALETTE[k % len(PALETTE)],
                showlegend=False, hovertemplate=f"{name}<br>{label}: %{{x:,}}<extra></extra>",
            ), row=r, col=1)
    fig.update_yaxes(categoryorder="array", categoryarray=names, autorange="reversed", automargin=True)
    fig.update_layout(title="packed vs padded vs tiled", height=150 + 130 * len(metrics),
                      margin=dict(l=10, r=10, t=70, b=10))
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Attention

ATTENTION_COLORSCALE = "Inferno"


def attention_figure(plan: Plan, image_preview: Any, heat: Any, opacity: float = 0.5,
                     title: str | None = None, show_tiles: bool = True) -> go.Figure:
    """A heatmap over the image: `heat` is (H', W') over the whole original image (``attention.to_image``).

    The plan's tiles are outlined (``show_tiles``), the colour bar gives attention mass per heat cell, hover
    shows the original-pixel position. Zero cells are transparent so the image shows through.
    """
    import numpy as np

    z = np.asarray(heat, dtype=float)
    h_out, w_out = z.shape
    w, h = plan.image_size
    out = _Overlay()
    if show_tiles:
        extent = _add_overlay(out, plan, image_preview, labels=False)
    else:
        if image_preview is not None:
            out.image(_image_layout(image_preview, plan.image_size, 1024))
        extent = (0.0, 0.0, float(w), float(h))
    xaxis, yaxis = _framed_axes(extent)
    fig = _overlay_figure([out], dict(xaxis=xaxis, yaxis=yaxis))
    dx, dy = w / w_out, h / h_out
    fig.add_trace(go.Heatmap(
        z=np.where(z > 0, z, np.nan), x0=dx / 2, dx=dx, y0=dy / 2, dy=dy, opacity=float(opacity),
        colorscale=ATTENTION_COLORSCALE, zmin=0, zmax=float(z.max()) if z.size and z.max() > 0 else 1.0,
        name="attention", colorbar=dict(title="attention", thickness=12),
        hovertemplate="x %{x:.0f}, y %{y:.0f} px<br>attention %{z:.3g}<extra></extra>",
    ))
    fig.update_layout(title=dict(text=title or f"attention · {_plan_title(plan)}"), height=560,
                      margin=dict(l=10, r=10, t=50, b=10), plot_bgcolor="white", showlegend=False)
    return fig


def attention_mass_figure(masses: Mapping[str, float], title: str = "attention mass per view") -> go.Figure:
    """One bar per view label (``"global view"``, ``"tile r,c"``) and ``"newlines"`` (separators: not pixels),
    in the given order; text shows each bar's share of the total."""
    names = list(masses)
    values = [float(masses[k]) for k in names]
    total = sum(values) or 1.0
    colors = ["black" if k == "global view" else "#9a9a9a" if k == "newlines" else PALETTE[i % len(PALETTE)]
              for i, k in enumerate(names)]
    fig = go.Figure(go.Bar(
        x=names, y=values, marker_color=colors, name="mass", text=[f"{100 * v / total:.1f}%" for v in values],
        textposition="outside", hovertemplate="%{x}: %{y:.4g}<extra></extra>",
    ))
    fig.update_layout(title=title, height=320, yaxis_title="attention mass", margin=dict(l=10, r=10, t=50, b=10),
                      showlegend=False)
    return fig

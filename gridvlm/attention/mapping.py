"""From a vector over visual positions to one map per view, and from those maps to the original image's pixels.

Pure numpy: importing this module loads neither torch nor PIL (tested), so layouts and maps can be drawn
anywhere.

- `Layout` says what every visual position of a model's sequence is: a feature of some view (which view,
  which cell of its feature grid), a newline that ends a feature row, or a separator/marker token.
  A model family's adapter builds it from the plan alone (`LayoutBuilder`); it travels as `to_dict()`.
- `map_to_views` adds a vector's values into each view's feature grid (`ViewMaps`); newline and separator
  positions are not pixels and keep their mass apart (an attention-sink signal).
- `to_image` spreads each cell's mass over the original pixels the cell shows (`cell_box`), dropping the parts
  of cells that lie in padding.
- Pooled positions (OneVision's bilinear resize) carry a footprint in the layout: the cells the interpolation
  reads and their weights; `map_to_views` spreads their values over those cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry import Box, Plan, Tile
from .errors import AttentionError

FEATURE, NEWLINE, SEPARATOR = 0, 1, 2  # Layout.kind values
_COLUMNS = ("kind", "view", "row", "col", "feat_row", "feat_col")


@dataclass(frozen=True, eq=False)
class Layout:
    """What every visual position is, in sequence order: parallel int arrays with one entry per position.

    A feature (kind FEATURE): `view` indexes `plan.views`, `row`/`col` are that view's grid position (-1/-1 for
    the thumbnail), `feat_row`/`feat_col` the cell of the view's feature grid (`grids[view]`) the feature
    belongs to (after pooling: the cell holding its sample centre). A newline (kind NEWLINE): `view` -1, `row`
    the grid row and `feat_row` the feature row it ends, `col` and `feat_col` -1. A separator or marker token
    inside the visual span (kind SEPARATOR): -1 everywhere.
    """

    kind: np.ndarray
    view: np.ndarray
    row: np.ndarray
    col: np.ndarray
    feat_row: np.ndarray
    feat_col: np.ndarray
    grids: tuple[tuple[int, int], ...]  # (rows, cols) of each view's feature grid, in plan.views order
    # (height, width) in the view's input pixels of one feature cell, per view: what the cell's patches see
    # (patch size × merge factor). Empty: the grid splits the view's input evenly.
    cell_px: tuple[tuple[float, float], ...] = ()
    # Optional, per position, the feature cells it is read from and their weights: (positions, K, 3) int of
    # (view, feat_row, feat_col) and (positions, K) float summing to 1 for a feature (0 for newlines and
    # separators). For pooled features (OneVision's bilinear resize) these are the up to 2 × 2 cells the
    # interpolation reads, possibly in two tiles; None: each feature is its own cell.
    foot_cells: np.ndarray | None = None
    foot_weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def has_footprint(self) -> bool:
        return self.foot_weights is not None

    @property
    def feature(self) -> np.ndarray:
        """bool per position: a feature of some view (not a newline or separator)."""
        return self.kind == FEATURE

    @property
    def newline(self) -> np.ndarray:
        """bool per position: a newline embedding that ends a feature row."""
        return self.kind == NEWLINE

    def per_view(self, num_views: int | None = None) -> list[int]:
        """Feature positions of each view, in `plan.views` order."""
        return np.bincount(self.view[self.feature], minlength=num_views or len(self.grids)).tolist()

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (JSON and gr.State friendly); `Layout.from_dict` takes it back."""
        out = {**{k: getattr(self, k).tolist() for k in _COLUMNS}, "grids": [list(g) for g in self.grids],
               "cell_px": [list(c) for c in self.cell_px]}
        if self.has_footprint:
            out.update(foot_cells=self.foot_cells.tolist(), foot_weights=self.foot_weights.tolist())
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        columns = {k: np.asarray(data[k], dtype=np.int64).reshape(-1) for k in _COLUMNS}
        foot = {}
        if data.get("foot_weights") is not None:
            weights = np.asarray(data["foot_weights"], dtype=np.float64).reshape(len(columns["kind"]), -1)
            foot = dict(foot_cells=np.asarray(data["foot_cells"], dtype=np.int64).reshape(*weights.shape, 3),
                        foot_weights=weights)
        return cls(**columns, grids=tuple((int(r), int(c)) for r, c in data["grids"]),
                   cell_px=tuple((float(h), float(w)) for h, w in data.get("cell_px", ())), **foot)


class LayoutBuilder:
    """Appends positions in sequence order; each call takes scalars or equal-length arrays."""

    def __init__(self):
        self._parts: list[tuple[np.ndarray, ...]] = []

    def _add(self, kind, view, row, col, feat_row, feat_col) -> None:
        values = (kind, view, row, col, feat_row, feat_col)
        n = max(np.size(v) for v in values)
        self._parts.append(tuple(np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)) for v in values))

    def features(self, view, row, col, feat_row, feat_col) -> None:
        self._add(FEATURE, view, row, col, feat_row, feat_col)

    def newline(self, row: int, feat_row: int) -> None:
        self._add(NEWLINE, -1, row, -1, feat_row, -1)

    def rows_with_newlines(self, view, row, col, feat_row, feat_col) -> None:
        """A feature map given as (h, w) arrays, row by row, each row followed by a newline (whose grid row and
        feature row are the row's first feature's)."""
        view, row, col, feat_row, feat_col = np.broadcast_arrays(view, row, col, feat_row, feat_col)
        h = view.shape[0]
        ends = np.full((h, 1), -1)

        def with_end(a, end):  # (h, w) → (h·(w + 1),)
            return np.concatenate((a, end), axis=1).reshape(-1)

        kinds = np.concatenate((np.full(view.shape, FEATURE), np.full((h, 1), NEWLINE)), axis=1).reshape(-1)
        self._add(kinds, with_end(view, ends), with_end(row, row[:, :1]), with_end(col, ends),
                  with_end(feat_row, feat_row[:, :1]), with_end(feat_col, ends))

    def separators(self, count: int = 1) -> None:
        self._add(np.full(count, SEPARATOR), -1, -1, -1, -1, -1)

    def build(self, grids: Sequence[tuple[int, int]],
              cell_px: Sequence[tuple[float, float]] | None = None,
              footprint: tuple[np.ndarray, np.ndarray] | None = None) -> Layout:
        """`grids`: each view's (rows, cols) feature grid; `cell_px`: each view's (height, width) of one cell in
        its input pixels, from the tower's patch geometry (None: the grid splits the input evenly);
        `footprint`: (cells (positions, K, 3), weights (positions, K)) as `Layout.foot_cells` / `foot_weights`."""
        columns = [np.concatenate([p[i] for p in self._parts]) if self._parts else np.zeros(0, np.int64)
                   for i in range(len(_COLUMNS))]
        cells = tuple((float(h), float(w)) for h, w in cell_px) if cell_px is not None else ()
        if cells and len(cells) != len(grids):
            raise AttentionError(f"{len(cells)} cell sizes for {len(grids)} views")
        foot = {}
        if footprint is not None:
            foot_cells, foot_weights = (np.asarray(a) for a in footprint)
            if foot_weights.shape[0] != len(columns[0]) or foot_cells.shape != (*foot_weights.shape, 3):
                raise AttentionError(f"a footprint of {foot_weights.shape[0]} positions for {len(columns[0])}")
            foot = dict(foot_cells=foot_cells.astype(np.int64), foot_weights=foot_weights.astype(np.float64))
        return Layout(*columns, grids=tuple((int(r), int(c)) for r, c in grids), cell_px=cells, **foot)


@dataclass(frozen=True, eq=False)
class ViewMaps:
    """A vector over visual positions laid out per view: sum(view_mass) + newline_mass == the vector's sum."""

    maps: tuple[np.ndarray, ...]  # (rows, cols) float64 per plan.views entry: mass of each feature cell
    present: tuple[np.ndarray, ...]  # (rows, cols) bool: cells that have a visual position (unpadding drops some)
    newline_mass: float  # mass on newline/separator positions: not pixels (an attention-sink signal)
    stride: tuple[float, float]  # (rows, cols) of feature cells one tile position covers (>1 after pooling)
    labels: tuple[str, ...]  # "global view" or "tile r,c", per view
    thumbnail: tuple[bool, ...] = ()  # per view: the global view / thumbnail
    cell_px: tuple[tuple[float, float], ...] = ()  # per view: a cell's (height, width) in input pixels (Layout)

    @property
    def view_mass(self) -> np.ndarray:
        return np.array([m.sum() for m in self.maps])

    @property
    def total(self) -> float:
        return float(self.view_mass.sum() + self.newline_mass)

    def masses(self) -> dict[str, float]:
        """Mass per view label, then "newlines": the bars of attention_mass_figure."""
        out = {label: float(m) for label, m in zip(self.labels, self.view_mass)}
        out["newlines"] = float(self.newline_mass)
        return out

    def shares(self) -> dict[str, float]:
        """Fractions of the total on the tiles, the global view(s) and the newlines/separators (0 when empty)."""
        total = self.total or 1.0
        mass = self.view_mass
        is_global = np.asarray(self.thumbnail or [False] * len(mass), dtype=bool)
        return {"tiles": float(mass[~is_global].sum()) / total, "global view": float(mass[is_global].sum()) / total,
                "newlines": self.newline_mass / total}


def view_label(view: Tile) -> str:
    return "global view" if view.is_thumbnail else f"tile {view.row},{view.col}"


def _tile_stride(layout: Layout, plan: Plan) -> tuple[float, float]:
    """Feature cells per tile position along rows and columns: 1 unless the map was pooled (OneVision).

    Read from the layout: the mean step between the positions' cells on the whole tile map. A layout with a
    footprint spreads each position over the cells it reads: 1.
    """
    if layout.has_footprint:
        return 1.0, 1.0
    views = plan.views
    tiles = layout.feature.copy()
    tiles[tiles] = [not views[v].is_thumbnail for v in layout.view[tiles]]
    out = []
    for grid, feat, axis in (("row", "feat_row", 0), ("col", "feat_col", 1)):
        side = np.array([g[axis] for g in layout.grids], dtype=np.int64)
        full = np.unique(getattr(layout, grid)[tiles] * side[layout.view[tiles]] + getattr(layout, feat)[tiles])
        steps = np.diff(full)
        out.append(1.0 if steps.size == 0 or steps.max() <= 1 else float((full[-1] - full[0]) / (len(full) - 1)))
    return out[0], out[1]


def _check(layout: Layout, plan: Plan) -> None:
    feats = layout.feature
    if len(layout.grids) != plan.num_views or (feats.any() and layout.view[feats].max() >= plan.num_views):
        raise AttentionError(f"the layout has {len(layout.grids)} views but the plan has {plan.num_views}: "
                             "layout and plan are from different images")


def map_to_views(vector: Sequence[float], layout: Layout, plan: Plan) -> ViewMaps:
    """One map per view on its feature grid, from a vector with one value per visual position.

    Each feature position adds its value to its (view, feat_row, feat_col) cell; newline and separator positions
    add to `newline_mass`. Cells no position maps to (removed by unpadding, skipped by pooling) stay 0 and are
    False in `present`.
    """
    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    if len(values) != len(layout):
        raise AttentionError(f"the vector has {len(values)} values but the layout has {len(layout)} visual "
                             "positions")
    _check(layout, plan)
    maps = [np.zeros(g) for g in layout.grids]
    present = [np.zeros(g, dtype=bool) for g in layout.grids]
    feats = layout.feature
    if layout.has_footprint:  # each position's value spread over the cells it reads, by their weights
        w = layout.foot_weights[feats]  # (F, K)
        cell = layout.foot_cells[feats]  # (F, K, 3)
        spread = (values[feats][:, None] * w).reshape(-1)
        used = w.reshape(-1) > 0
        view, row, col = (cell.reshape(-1, 3)[used, k] for k in range(3))
        for v in np.unique(view):
            at = view == v
            np.add.at(maps[v], (row[at], col[at]), spread[used][at])
            present[v][row[at], col[at]] = True
    else:
        for v in np.unique(layout.view[feats]):
            at = feats & (layout.view == v)
            cells = (layout.feat_row[at], layout.feat_col[at])
            np.add.at(maps[v], cells, values[at])
            present[v][cells] = True
    return ViewMaps(
        maps=tuple(maps), present=tuple(present), newline_mass=float(values[~feats].sum()),
        stride=_tile_stride(layout, plan), labels=tuple(view_label(view) for view in plan.views),
        thumbnail=tuple(view.is_thumbnail for view in plan.views), cell_px=layout.cell_px,
    )


def vision_view_maps(maps: Sequence[np.ndarray], plan: Plan,
                     patch_px: Sequence[tuple[float, float]] | None = None) -> ViewMaps:
    """`vision_attention`'s per-view (rows, cols) patch maps as ViewMaps (every cell present, no newlines);
    `patch_px`: each view's (height, width) of one patch in input pixels (None: the grid splits it evenly)."""
    maps = tuple(np.asarray(m, dtype=np.float64) for m in maps)
    return ViewMaps(maps, tuple(np.ones(m.shape, dtype=bool) for m in maps), 0.0, (1.0, 1.0),
                    tuple(view_label(v) for v in plan.views), tuple(v.is_thumbnail for v in plan.views),
                    tuple((float(h), float(w)) for h, w in patch_px) if patch_px is not None else ())


def cell_box(view: Tile, grid: tuple[int, int], feat_row: float, feat_col: float,
             stride: tuple[float, float] = (1.0, 1.0), clip: bool = True,
             cell_px: tuple[float, float] | None = None) -> Box | None:
    """Original-image pixels a feature cell covers: the cell (or a stride-sized box around its centre) of the
    view's (rows, cols) feature `grid` in the view's input pixels, clipped to where the image lies in the view
    (`content_box`), mapped onto `view.box`. None when the cell lies wholly in padding.

    `cell_px`: (height, width) of one cell in input pixels, what its patches see (a 384-px SigLIP view has 27
    cells of 14 px covering pixels 0–378, not 27 cells of 384/27 px); None: the grid splits the input evenly."""
    (bx0, by0, bx1, by1), (cx0, cy0, cx1, cy1) = view.box, view.content_box
    if cx1 <= cx0 or cy1 <= cy0:  # plans without content boxes: the whole input is content
        cx0, cy0, cx1, cy1 = 0.0, 0.0, float(view.input_size[0]), float(view.input_size[1])
    w, h = view.input_size
    gr, gc = grid
    sr, sc = stride
    ch, cw = cell_px if cell_px is not None else (h / gr, w / gc)
    x0, x1 = (feat_col + 0.5 - sc / 2) * cw, (feat_col + 0.5 + sc / 2) * cw
    y0, y1 = (feat_row + 0.5 - sr / 2) * ch, (feat_row + 0.5 + sr / 2) * ch
    if clip:
        x0, y0, x1, y1 = max(x0, cx0), max(y0, cy0), min(x1, cx1), min(y1, cy1)
        if x1 <= x0 or y1 <= y0:
            return None
    sx, sy = (bx1 - bx0) / (cx1 - cx0), (by1 - by0) / (cy1 - cy0)
    return (bx0 + (x0 - cx0) * sx, by0 + (y0 - cy0) * sy, bx0 + (x1 - cx0) * sx, by0 + (y1 - cy0) * sy)


def _present_cells(view_maps: ViewMaps, plan: Plan):
    """(view, (rows, cols) grid, feat_row, feat_col, mass, box or None) of every present cell."""
    cells = view_maps.cell_px or (None,) * len(plan.views)
    for view, grid, present, cell in zip(plan.views, view_maps.maps, view_maps.present, cells):
        stride = (1.0, 1.0) if view.is_thumbnail else view_maps.stride
        for r, c in zip(*np.nonzero(present)):
            yield view, grid[r, c], cell_box(view, grid.shape, r, c, stride, cell_px=cell)


def padding_mass(view_maps: ViewMaps, plan: Plan) -> float:
    """Mass on cells that lie wholly in padding: present in the sequence but not on the image."""
    return float(sum(mass for _, mass, box in _present_cells(view_maps, plan) if box is None))


def _overlaps(lo: np.ndarray, hi: np.ndarray, extent: float, bins: int) -> np.ndarray:
    """(N, bins): share of each interval [lo, hi) in each of `bins` equal bins over [0, extent); rows sum to 1
    (intervals are clipped to [0, extent) first)."""
    edges = np.linspace(0.0, extent, bins + 1)
    lo, hi = np.clip(lo, 0, extent), np.clip(hi, 0, extent)
    share = np.clip(np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1]), 0, None)
    total = share.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    if empty.any():  # a sliver at the border: the nearest bin takes it
        idx = np.clip((lo[empty] / extent * bins).astype(int), 0, bins - 1)
        share[empty] = 0
        share[np.nonzero(empty)[0], idx] = 1
        total = share.sum(axis=1, keepdims=True)
    return share / total


def to_image(view_maps: ViewMaps, plan: Plan, out_size: tuple[int, int], which: str = "tiles") -> np.ndarray:
    """A (H', W') heatmap over the original image from the tiles' maps (`which="tiles"`) or the global view's
    (`which="global"`); `out_size` = (W', H').

    Each present cell spreads its mass evenly over the original pixels it shows (`cell_box`); the part of a
    cell in padding is dropped and its mass goes to the part on the image, so the heatmap's sum equals the
    chosen views' mass minus cells wholly in padding (`padding_mass`).
    """
    if which not in ("tiles", "global"):
        raise AttentionError(f"which must be 'tiles' or 'global', not {which!r}")
    out_w, out_h = (int(v) for v in out_size)
    if out_w < 1 or out_h < 1:
        raise AttentionError(f"out_size must be at least 1×1 pixels, not {out_w}×{out_h}")
    cells = [(box, mass) for view, mass, box in _present_cells(view_maps, plan)
             if view.is_thumbnail == (which == "global") and box is not None and mass != 0]
    if not cells:
        return np.zeros((out_h, out_w))
    boxes = np.asarray([box for box, _ in cells], dtype=np.float64)  # (N, 4)
    masses = np.asarray([mass for _, mass in cells], dtype=np.float64)  # (N,)
    w, h = plan.image_size
    wx = _overlaps(boxes[:, 0], boxes[:, 2], w, out_w)  # (N, W')
    wy = _overlaps(boxes[:, 1], boxes[:, 3], h, out_h)  # (N, H')
    return (wy * masses[:, None]).T @ wx  # (H', W')


def heat_size(image_size: tuple[int, int], long_side: int = 256) -> tuple[int, int]:
    """(W', H') with the image's aspect ratio and `long_side` pixels on the longer side."""
    w, h = image_size
    s = long_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def position_boxes(layout: Layout, plan: Plan) -> np.ndarray:
    """(positions, 4) original-pixel box each visual position shows (NaN for newlines, separators and cells in
    padding); with a footprint, the bounding box of the cells the position reads."""
    _check(layout, plan)
    stride = _tile_stride(layout, plan)
    out = np.full((len(layout), 4), np.nan)
    views = plan.views
    cells = layout.cell_px or (None,) * len(views)
    for i in np.nonzero(layout.feature)[0]:
        if layout.has_footprint:  # the union of the cells the position reads
            read = layout.foot_cells[i][layout.foot_weights[i] > 0]
        else:
            read = [(layout.view[i], layout.feat_row[i], layout.feat_col[i])]
        boxes = [cell_box(views[v], layout.grids[v], r, c, (1.0, 1.0) if views[v].is_thumbnail else stride,
                          cell_px=cells[v]) for v, r, c in read]
        boxes = np.asarray([b for b in boxes if b is not None], dtype=np.float64).reshape(-1, 4)
        if len(boxes):
            out[i] = (*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0))
    return out

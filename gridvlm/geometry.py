"""The plan types every strategy returns, and the small box arithmetic they share.

Standard library only: this module is imported by the pure strategies.
Boxes are ``(x0, y0, x1, y1)``, half-open, x to the right and y down; sizes are ``(width, height)``.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field
from typing import Any

Box = tuple[float, float, float, float]
IntBox = tuple[int, int, int, int]
Size = tuple[int, int]


@dataclass(frozen=True)
class Tile:
    """One view the vision encoder receives (a tile, a slice, a global view or the only view)."""

    index: int  # position among the image's views in the model's sequence
    row: int  # grid row; -1 for the thumbnail
    col: int  # grid column; -1 for the thumbnail
    box: Box  # the part of the original image this view shows, original pixels, padding excluded
    canvas_box: IntBox | None  # where the view is cut from the plan's canvas, canvas pixels
    input_size: Size  # (w, h) pixels the encoder receives for this view
    padding: float  # share of input_size that is padding, 0..1
    token_count: int  # visual tokens from this view after the model's own pooling/compression
    token_grid: tuple[int, int]  # (rows, cols) of this view's feature grid as the LLM receives it
    # Where `box` lands inside the view, in input pixels; the rest of the view is padding.
    content_box: Box = (0.0, 0.0, 0.0, 0.0)

    @property
    def is_thumbnail(self) -> bool:
        return self.row < 0

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tile:
        return cls(
            index=int(data["index"]),
            row=int(data["row"]),
            col=int(data["col"]),
            box=_tuple(data["box"], float),
            canvas_box=None if data.get("canvas_box") is None else _tuple(data["canvas_box"], int),
            input_size=_tuple(data["input_size"], int),
            padding=float(data["padding"]),
            token_count=int(data["token_count"]),
            token_grid=_tuple(data["token_grid"], int),
            content_box=_tuple(data.get("content_box", (0, 0, 0, 0)), float),
        )


@dataclass(frozen=True)
class Plan:
    """How one model cuts one image: its views, their boxes and the visual tokens the LLM gets."""

    strategy: str
    params: dict[str, Any]  # every parameter used, defaults filled in
    image_size: Size  # (w, h) of the input
    grid: tuple[int, int]  # (rows, cols); (1, 1) when the image is shown as one view
    canvas_size: Size | None  # (w, h) of the resized (and padded) image tiles are cut from
    tiles: tuple[Tile, ...]  # row-major
    thumbnail: Tile | None  # the global/overview view
    thumbnail_position: str | None  # "first", "last" or None
    token_count: int  # visual embedding positions the LLM receives, separators and newlines included
    tokens: dict[str, int]  # breakdown, sums to token_count
    text_tokens: int = 0  # wrapper/marker text tokens the prompt adds around the image
    # Where the resized image sits on the canvas, canvas pixels (the rest is padding).
    content_box: IntBox | None = None
    notes: tuple[str, ...] = field(default=())  # reference quirks that apply to this plan
    # The encoder's windowed-attention groups, original pixels, in the encoder's window order; () = no windows.
    windows: tuple[Box, ...] = field(default=())

    @property
    def views(self) -> tuple[Tile, ...]:
        """Every view in the model's sequence order."""
        if self.thumbnail is None:
            return self.tiles
        if self.thumbnail_position == "first":
            return (self.thumbnail, *self.tiles)
        return (*self.tiles, self.thumbnail)

    @property
    def num_views(self) -> int:
        return len(self.tiles) + (self.thumbnail is not None)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "strategy": self.strategy,
            "params": self.params,
            "image_size": self.image_size,
            "grid": self.grid,
            "canvas_size": self.canvas_size,
            "tiles": [t.to_dict() for t in self.tiles],
            "thumbnail": None if self.thumbnail is None else self.thumbnail.to_dict(),
            "thumbnail_position": self.thumbnail_position,
            "token_count": self.token_count,
            "tokens": dict(self.tokens),
            "text_tokens": self.text_tokens,
            "content_box": self.content_box,
            "notes": list(self.notes),
            "windows": [list(w) for w in self.windows],
        }
        return _jsonable(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(
            strategy=str(data["strategy"]),
            params=dict(data["params"]),
            image_size=_tuple(data["image_size"], int),
            grid=_tuple(data["grid"], int),
            canvas_size=None if data.get("canvas_size") is None else _tuple(data["canvas_size"], int),
            tiles=tuple(Tile.from_dict(t) for t in data["tiles"]),
            thumbnail=None if data.get("thumbnail") is None else Tile.from_dict(data["thumbnail"]),
            thumbnail_position=data.get("thumbnail_position"),
            token_count=int(data["token_count"]),
            tokens={str(k): int(v) for k, v in data["tokens"].items()},
            text_tokens=int(data.get("text_tokens", 0)),
            content_box=None if data.get("content_box") is None else _tuple(data["content_box"], int),
            notes=tuple(data.get("notes", ())),
            windows=tuple(_tuple(w, float) for w in data.get("windows", ())),
        )


def _tuple(values, kind) -> tuple:
    return tuple(kind(v) for v in values)


def _jsonable(value):
    """Tuples to lists, recursively, so json.dumps(plan.to_dict()) round-trips through from_dict."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Box arithmetic shared by the strategies


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def intersect(a: Box, b: Box) -> Box:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    if x1 <= x0 or y1 <= y0:
        return (x0, y0, x0, y0)
    return (x0, y0, x1, y1)


def whole(size: Size) -> Box:
    return (0.0, 0.0, float(size[0]), float(size[1]))


def row_major_boxes(rows: int, cols: int, tile_w: int, tile_h: int) -> list[tuple[int, int, IntBox]]:
    """``(row, col, box)`` of a rows × cols grid of equal tiles, row-major."""
    return [
        (r, c, (c * tile_w, r * tile_h, (c + 1) * tile_w, (r + 1) * tile_h))
        for r in range(rows)
        for c in range(cols)
    ]






def padding_fraction(content_box: Box, input_size: Size) -> float:
    total = input_size[0] * input_size[1]
    if total <= 0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - area(content_box) / total))


def make_tile(
    index: int,
    row: int,
    col: int,
    box: Box,
    input_size: Size,
    token_count: int,
    token_grid: tuple[int, int],
    canvas_box: IntBox | None = None,
    content_box: Box | None = None,
) -> Tile:
    """A Tile whose padding is derived from where the content sits (full view when not given)."""
    if content_box is None:
        content_box = whole(input_size)
    return Tile(
        index=index,
        row=row,
        col=col,
        box=tuple(float(v) for v in box),
        canvas_box=canvas_box,
        input_size=(int(input_size[0]), int(input_size[1])),
        padding=padding_fraction(content_box, input_size),
        token_count=int(token_count),
        token_grid=(int(token_grid[0]), int(token_grid[1])),
        content_box=tuple(float(v) for v in content_box),
    )


def _axis_spans(count: int, size: int, stride: int, c0: float, c1: float, extent: int, size_in: int):
    """Per tile along one axis: (canvas start, canvas end, original start, original end, content in view)."""
    scale = extent / (c1 - c0)  # canvas px -> original px
    to_view = size_in / size
    spans = []
    for i in range(count):
        b0, b1 = i * stride, i * stride + size
        lo, hi = max(b0, c0), min(b1, c1)
        if hi <= lo:
            lo = hi = max(b0, min(c0, b1))
        o0, o1 = min(max((lo - c0) * scale, 0.0), extent), min(max((hi - c0) * scale, 0.0), extent)
        spans.append((b0, b1, float(o0), float(o1), (lo - b0) * to_view, (hi - b0) * to_view))
    return spans


def cut_canvas(
    canvas_size: Size,
    content: IntBox,
    image_size: Size,
    rows: int,
    cols: int,
    tile_size: Size,
    first_index: int,
    tokens_per_tile: int,
    token_grid: tuple[int, int],
    stride: Size | None = None,
    input_size: Size | None = None,
    tokens_of=None,
) -> list[Tile]:
    """Row-major tiles of `tile_size` cut from a canvas that holds the resized image at `content`.

    `stride` defaults to the tile size (no overlap); `input_size` to the tile size;
    `tokens_of(row, col)`, when given, overrides `tokens_per_tile` for tiles that keep fewer features.
    Boxes are computed per column and per row once (tiles of a grid share them), which keeps big grids cheap.
    """
    tw, th = tile_size
    sx, sy = stride or tile_size
    iw, ih = input_size or tile_size
    xs = _axis_spans(cols, tw, sx, float(content[0]), float(content[2]), image_size[0], iw)
    ys = _axis_spans(rows, th, sy, float(content[1]), float(content[3]), image_size[1], ih)
    grid = (int(token_grid[0]), int(token_grid[1]))
    total = iw * ih
    tiles = []
    for r, (by0, by1, oy0, oy1, vy0, vy1) in enumerate(ys):
        for c, (bx0, bx1, ox0, ox1, vx0, vx1) in enumerate(xs):
            inside = (vx1 - vx0) * (vy1 - vy0)
            tiles.append(Tile(
                index=first_index + len(tiles),
                row=r,
                col=c,
                box=(ox0, oy0, ox1, oy1),
                canvas_box=(bx0, by0, bx1, by1),
                input_size=(iw, ih),
                padding=min(1.0, max(0.0, 1.0 - inside / total)) if total > 0 else 0.0,
                token_count=tokens_per_tile if tokens_of is None else tokens_of(r, c),
                token_grid=grid,
                content_box=(vx0, vy0, vx1, vy1),
            ))
    return tiles


def squashed_view(index: int, image_size: Size, input_size: Size, tokens: int, token_grid: tuple[int, int]) -> Tile:
    """The whole image resized to `input_size`, aspect ratio not kept: the usual global view."""
    return make_tile(index, -1, -1, whole(image_size), input_size, tokens, token_grid)


def square_pad_content(width: int, height: int, side: int) -> Box:
    """Where the image lands in a `side`² view made by padding it to a max(w, h) square (centred, floor offsets)
    and resizing that square: LLaVA-1.5's expand2square, OneVision's multi-image pad_to_square."""
    square = max(width, height)
    ox, oy = (square - width) // 2, (square - height) // 2
    s = side / square
    return (ox * s, oy * s, (ox + width) * s, (oy + height) * s)


def py_round(x: float) -> int:
    """Python's round: halves go to the even neighbour, as every reference relies on."""
    return int(round(x))


_FLOAT32 = struct.Struct("<f")


def to_float32(x: float) -> float:
    """`x` rounded to float32, for references that score in float32 tensors (int64 tensors divided, torch
    defaults). One double operation on float32 inputs, rounded once to float32, equals the float32 operation."""
    return _FLOAT32.unpack(_FLOAT32.pack(x))[0]

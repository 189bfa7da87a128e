"""Plan mode: views of any gridvlm plan → vision tower → projector → the visual token sequence the LLM reads.

Two layouts:

- **anyres** (a `llava-next` / `llava-onevision` plan whose tiles are the encoder's input size): exactly the
  model's own `pack_image_features` — the global view's g×g features first, then the tiles' features as one
  (rows·g) × (cols·g) map, unpadded with the original size (`unpad_image`), for OneVision resized bilinearly
  when larger than anyres_max_N tiles' worth, with `image_newline` after every feature row. The sequence has
  `plan.token_count` positions. With the native plan it is the model's own sequence, value for value.
- **grid** (any other plan: llava-uhd slices, internvl tiles, idefics3 …): each view is resized to the encoder's
  input size (t × t) and gives g×g features; a thumbnail's features are one block (no newlines) where the plan
  puts it; the tiles' features are laid out as one (rows·g) × (cols·g) map on the plan's grid with a newline
  after every feature row (tiles that do not fill a grid: one g × g block per tile, newline per row).
  Positions = views·g² + newlines, computed here — not the plan's own token count, which describes
  another model. Such runs are marked `out_of_distribution`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geometry import Plan
from ..strategies.anyres import unpadded_size
from .errors import ModelError

if TYPE_CHECKING:
    import torch

    from .loading import VLM

ANYRES_STRATEGIES = ("llava-next", "llava-onevision")


@dataclass(frozen=True)
class Layout:
    """What every visual position is, in sequence order: parallel int arrays of one entry per position.

    For a feature: `view` indexes `plan.views`, `row`/`col` are that view's grid position (-1/-1 for the
    thumbnail), `feat_row`/`feat_col` the feature's cell in the view's g × g feature grid (after OneVision's
    pooling: the cell holding the sample centre). For a newline: `view` = -1, `newline` = True, `row` is the
    grid row and `feat_row` the feature row it ends; `col` and `feat_col` are -1.
    """

    view: np.ndarray
    row: np.ndarray
    col: np.ndarray
    feat_row: np.ndarray
    feat_col: np.ndarray
    newline: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.view)

    def per_view(self, num_views: int) -> list[int]:
        """Feature positions of each view, in `plan.views` order."""
        return np.bincount(self.view[~self.newline], minlength=num_views).tolist()

    def records(self) -> list[dict[str, int | bool]]:
        keys = ("view", "row", "col", "feat_row", "feat_col", "newline")
        columns = [getattr(self, k).tolist() for k in keys]
        return [dict(zip(keys, values)) for values in zip(*columns)]


class _LayoutBuilder:
    def __init__(self):
        self.columns: list[list[np.ndarray]] = [[] for _ in range(6)]

    def add(self, view, row, col, feat_row, feat_col, newline=False):
        n = max(np.size(v) for v in (view, row, col, feat_row, feat_col))
        for column, value in zip(self.columns, (view, row, col, feat_row, feat_col, newline)):
            column.append(np.broadcast_to(np.asarray(value), (n,)))

    def build(self) -> Layout:
        arrays = [np.concatenate(c) if c else np.zeros(0, int) for c in self.columns]
        return Layout(*(a.astype(np.int64) for a in arrays[:5]), newline=arrays[5].astype(bool))


@dataclass(frozen=True, eq=False)
class VisualSequence:
    """The visual token sequence of one image: what replaces the prompt's image placeholder."""

    embeds: Any  # torch.Tensor (positions, text hidden size), the model's dtype and device
    layout: Layout  # len(layout) == embeds.shape[0]
    plan: Plan
    out_of_distribution: bool  # not the model's own plan: the model never saw images cut this way
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.layout)

    def __iter__(self):  # embeds, layout = vlm.encode(...)
        return iter((self.embeds, self.layout))


def resolve_plan(vlm: VLM, image_size: tuple[int, int], plan: Plan | dict | str) -> Plan:
    """`plan` as a Plan: "native" (the model's own), a Plan, or Plan.to_dict() output; checked against the image."""
    if isinstance(plan, str):
        if plan != "native":
            raise ModelError(f"plan must be 'native', a gridvlm Plan or a plan dict, not {plan!r}")
        return vlm.native_plan(image_size)
    if isinstance(plan, dict):
        plan = Plan.from_dict(plan)
    if not isinstance(plan, Plan):
        raise ModelError(f"plan must be 'native', a gridvlm Plan or a plan dict, not {type(plan).__name__}")
    if tuple(plan.image_size) != tuple(image_size):
        raise ModelError(f"the plan was made for a {plan.image_size[0]}×{plan.image_size[1]} image but this image is "
                         f"{image_size[0]}×{image_size[1]}; plan this image again")
    return plan


def encode(vlm: VLM, image: Any, plan: Plan | dict | str = "native") -> VisualSequence:
    """The visual token sequence of `image` cut as `plan`, and what each position is.

    `image`: a PIL image, path, bytes or file (gridvlm.load_image). `plan`: "native", a Plan or a plan dict.
    With the native plan the embeddings equal the model's own path (processor → get_image_features →
    pack_image_features) and their number equals `plan.token_count`.
    """
    import torch

    from ..imaging import load_image

    image = load_image(image)
    plan = resolve_plan(vlm, image.size, plan)
    t, g = vlm.geometry.tile_size, vlm.geometry.features_side
    native = vlm.is_native(plan)
    encoder_sized = all(tuple(v.input_size) == (t, t) for v in plan.views)
    notes = []
    if not native:
        notes.append(f"plan '{plan.strategy}' is not {vlm.family.name}'s own processing of this image: the model "
                     "was not trained on images cut this way (out of distribution)")

    with torch.inference_mode():
        pixels = _pixels(vlm, image, plan, exact=native or encoder_sized)
        if not encoder_sized:
            notes.append(f"each view was resized to the encoder's {t}×{t} input")
        features = view_features(vlm, pixels)  # (views, g·g, hidden)
        if is_anyres_layout(vlm, plan):
            embeds, layout = _pack_anyres(vlm, plan, features, g)
        else:
            embeds, layout = _pack_grid(vlm, plan, features, g)
    if len(layout) != embeds.shape[0]:  # pragma: no cover - a bug, not bad input
        raise AssertionError(f"layout has {len(layout)} positions but the sequence has {embeds.shape[0]}")
    return VisualSequence(embeds, layout, plan, out_of_distribution=not native, notes=tuple(notes))


def is_anyres_layout(vlm: VLM, plan: Plan) -> bool:
    """True when the plan is laid out as the model's own anyres sequence (and has plan.token_count positions)."""
    geo = vlm.geometry
    return (plan.strategy in ANYRES_STRATEGIES and plan.thumbnail_position == "first"
            and plan.params.get("tile_size") == geo.tile_size and plan.params.get("patch_size") == geo.patch_size
            and all(tuple(v.input_size) == (geo.tile_size, geo.tile_size) for v in plan.views))


def count_positions(vlm: VLM, plan: Plan) -> int:
    """How many visual positions `encode(vlm, image, plan)` gives, without running anything.

    Anyres layout: plan.token_count. Grid layout: views·g² + one newline per tile feature row
    (rows·g for a full grid, g per tile otherwise).
    """
    if is_anyres_layout(vlm, plan):
        return plan.token_count
    g = vlm.geometry.features_side
    newlines = plan.grid[0] * g if _fills_grid(plan) else len(plan.tiles) * g
    return plan.num_views * g * g + newlines


def view_pixels(vlm: VLM, image: Any, plan: Plan | dict | str = "native", exact: bool | None = None) -> torch.Tensor:
    """The plan's views as the vision tower takes them: (views, 3, t, t), normalised with the checkpoint's mean/std,
    on the model's device and dtype, in `plan.views` order (what `encode` feeds the tower).

    `exact`: None = as `encode` does (exact resampling for the native plan or when every view already has the
    encoder's input size; else the fast path, then each view resized to t × t).
    """
    from ..imaging import load_image

    image = load_image(image)
    plan = resolve_plan(vlm, image.size, plan)
    if exact is None:
        t = vlm.geometry.tile_size
        exact = vlm.is_native(plan) or all(tuple(v.input_size) == (t, t) for v in plan.views)
    return _pixels(vlm, image, plan, exact=exact)


def _pixels(vlm: VLM, image, plan: Plan, exact: bool) -> torch.Tensor:
    """(views, 3, t, t) float32 normalised with the checkpoint's mean/std, on the model's device and dtype."""
    import torch
    import torch.nn.functional as F

    from ..pixels import pixel_values

    geo = vlm.geometry
    t = geo.tile_size
    pv = pixel_values(image, plan, mean=geo.mean, std=geo.std, exact=exact)
    if isinstance(pv, list) or pv.shape[-2:] != (t, t):
        views = pv if isinstance(pv, list) else list(pv)
        pv = torch.cat([F.interpolate(v[None], size=(t, t), mode="bicubic", antialias=True, align_corners=False)
                        for v in views])  # (views, 3, t, t)
    return pv.to(vlm.device, vlm.model.dtype)


def view_features(vlm: VLM, pixels: torch.Tensor) -> torch.Tensor:
    """Projected features of each view: (views, g·g, text hidden size).

    The same calls as the model's `get_image_features`: vision tower with the configured hidden layer(s),
    CLS dropped for the "default" strategy, then the multimodal projector.
    """
    import torch

    geo = vlm.geometry
    inner = vlm.model.model
    layer = geo.feature_layer
    out = inner.vision_tower(pixels, output_hidden_states=layer, return_dict=True)
    if isinstance(layer, int):
        selected = out.hidden_states[layer]
    else:
        selected = torch.cat([out.hidden_states[i] for i in layer], dim=-1)
    if geo.select_strategy == "default":
        selected = selected[:, 1:]
    if selected.shape[1] != geo.features_side ** 2:
        raise ModelError(f"the vision tower gives {selected.shape[1]} features per view, not "
                         f"{geo.features_side}² = {geo.features_side ** 2}; vision_feature_select_strategy "
                         f"{geo.select_strategy!r} does not fit this tower")
    return inner.multi_modal_projector(selected)  # (views, g·g, hidden)


def _newlines(vlm: VLM, rows: int, like: torch.Tensor) -> torch.Tensor:
    """(hidden, rows, 1): image_newline once per feature row."""
    nl = vlm.model.model.image_newline
    return nl[:, None, None].expand(nl.shape[0], rows, 1).to(like.device, like.dtype)


def _pack_anyres(vlm: VLM, plan: Plan, features: torch.Tensor, g: int) -> tuple[torch.Tensor, Layout]:
    """LLaVA-NeXT / OneVision `pack_image_features` for one image, with the same tensor operations."""
    import torch
    import torch.nn.functional as F

    rows, cols = plan.grid
    w, h = plan.image_size
    base, tiles = features[0], features[1:]  # (g·g, D), (rows·cols, g·g, D)
    fmap = tiles.view(rows, cols, g, g, -1).permute(4, 0, 2, 1, 3).contiguous()
    fmap = fmap.flatten(1, 2).flatten(2, 3)  # (D, rows·g, cols·g)
    kept_r, kept_c, pad_r, pad_c = unpadded_size(w, h, rows * g, cols * g,
                                                 round7=plan.params.get("pinpoint_order", "hw") == "hw")
    fmap = fmap[:, pad_r:pad_r + kept_r, pad_c:pad_c + kept_c]  # (D, kept_r, kept_c)
    out_r, out_c = kept_r, kept_c
    max_tiles = plan.params.get("max_features_tiles")
    if max_tiles is not None:
        ratio = math.sqrt(kept_r * kept_c / (max_tiles * g ** 2))
        if ratio > 1.1:
            out_r, out_c = int(kept_r // ratio), int(kept_c // ratio)
            fmap = F.interpolate(fmap[None], [out_r, out_c], mode="bilinear")[0]  # (D, out_r, out_c)
    fmap = torch.cat((fmap, _newlines(vlm, out_r, fmap)), dim=-1)  # (D, out_r, out_c + 1)
    embeds = torch.cat((base, fmap.flatten(1, 2).transpose(0, 1)), dim=0)  # (g·g + out_r·(out_c + 1), D)

    lay = _LayoutBuilder()
    cells = np.arange(g * g)
    lay.add(0, -1, -1, cells // g, cells % g)
    src_c = (pad_c + (np.arange(out_c) + 0.5) * kept_c / out_c).astype(np.int64)  # sample centres, full map
    for i in range(out_r):
        r = int(pad_r + (i + 0.5) * kept_r / out_r)
        lay.add(1 + (r // g) * cols + src_c // g, r // g, src_c // g, r % g, src_c % g)
        lay.add(-1, r // g, -1, r % g, -1, True)
    return embeds, lay.build()


def _fills_grid(plan: Plan) -> bool:
    """The plan's tiles are exactly its rows × cols grid, row-major."""
    rows, cols = plan.grid
    return [(t.row, t.col) for t in plan.tiles] == [(r, c) for r in range(rows) for c in range(cols)]


def _pack_grid(vlm: VLM, plan: Plan, features: torch.Tensor, g: int) -> tuple[torch.Tensor, Layout]:
    """Any other plan: a thumbnail block where the plan puts it, tiles as one feature map with newlines."""
    import torch

    views = plan.views
    tile_at = [i for i, v in enumerate(views) if not v.is_thumbnail]  # contiguous: a thumbnail is first or last
    pieces, lay = [], _LayoutBuilder()

    def add_map(fmap, view, grid_row, grid_col):
        """fmap (D, h, w); view/grid_row/grid_col (h, w) ints: whose feature each cell is."""
        h, w = fmap.shape[1:]
        fmap = torch.cat((fmap, _newlines(vlm, h, fmap)), dim=-1)  # (D, h, w + 1)
        pieces.append(fmap.flatten(1, 2).transpose(0, 1))
        cols = np.arange(w)
        for r in range(h):
            lay.add(view[r], grid_row[r], grid_col[r], r % g, cols % g)
            lay.add(-1, grid_row[r, 0], -1, r % g, -1, True)

    def add_tiles():
        if _fills_grid(plan):
            rows, cols = plan.grid
            fmap = features[tile_at].view(rows, cols, g, g, -1).permute(4, 0, 2, 1, 3).contiguous()
            rr, cc = np.mgrid[0:rows * g, 0:cols * g] // g
            add_map(fmap.flatten(1, 2).flatten(2, 3), tile_at[0] + rr * cols + cc, rr, cc)  # (D, rows·g, cols·g)
            return
        for i in tile_at:  # tiles that do not fill a grid: one g × g map each
            cell = np.zeros((g, g), dtype=np.int64)
            add_map(features[i].view(g, g, -1).permute(2, 0, 1), cell + i, cell + views[i].row, cell + views[i].col)

    cells = np.arange(g * g)
    for i, v in enumerate(views):
        if v.is_thumbnail:  # one block, no newlines, as the anyres global view
            pieces.append(features[i])
            lay.add(i, -1, -1, cells // g, cells % g)
        elif i == tile_at[0]:
            add_tiles()
    return torch.cat(pieces, dim=0), lay.build()

"""What LLaVA-NeXT and LLaVA-OneVision share: a ViT tower on square views, a projector, `image_newline`, AnyRes.

Two layouts of the visual sequence:

- **anyres** (a `llava-next` / `llava-onevision` plan whose views are the encoder's input size): exactly the
  model's own `pack_image_features` — the global view's g×g features first, then the tiles' features as one
  (rows·g) × (cols·g) map, unpadded to the original aspect ratio (`unpadded_size`), for OneVision resized
  bilinearly when larger than anyres_max_N tiles' worth (`pooled_size`), with `image_newline` after every
  feature row. The sequence has `plan.token_count` positions; with the native plan it is the model's own
  sequence, value for value.
- **grid** (any other plan: llava-uhd slices, internvl tiles, idefics3 …): each view is resized to the
  encoder's input size (t × t) and gives g×g features; a thumbnail's features are one block (no newlines) where
  the plan puts it; the tiles' features are laid out as one (rows·g) × (cols·g) map on the plan's grid with a
  newline after every feature row (tiles that do not fill a grid: one g × g block per tile, newline per row).
  Positions = views·g² + newlines — not the plan's own token count, which describes another model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...attention.mapping import Layout, LayoutBuilder
from ...geometry import Plan
from ...strategies.anyres import pooled_size, sample_centres, unpadded_size
from ..adapter import ModelAdapter
from ..errors import ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..loading import VLM


@dataclass(frozen=True)
class LlavaGeometry:
    """The encoder geometry of a LLaVA-NeXT / OneVision checkpoint, as its config and processor config state it."""

    tile_size: int  # vision_config.image_size: the encoder's square input side, pixels
    patch_size: int  # vision_config.patch_size, pixels
    grid_pinpoints: list[list[int]]  # config.image_grid_pinpoints, (h, w) pairs as transformers reads them
    select_strategy: str  # "default" drops the CLS token, "full" keeps every position
    feature_layer: int | list[int]  # vision_feature_layer: which hidden state(s) feed the projector
    max_features_tiles: int | None  # N of anyres_max_N (OneVision), None for LLaVA-NeXT
    mean: tuple[float, float, float]  # the processor's image_mean
    std: tuple[float, float, float]  # the processor's image_std

    @property
    def features_side(self) -> int:
        """g: each view's feature map is g × g."""
        return self.tile_size // self.patch_size

    def plan_params(self) -> dict[str, Any]:
        params = {"grid_pinpoints": [list(p) for p in self.grid_pinpoints], "pinpoint_order": "hw",
                  "tile_size": self.tile_size, "patch_size": self.patch_size}
        if self.max_features_tiles is not None:
            params["max_features_tiles"] = self.max_features_tiles
        return params

    def describe(self) -> str:
        g = self.features_side
        pooling = f", anyres_max_{self.max_features_tiles}" if self.max_features_tiles else ""
        return f"{self.tile_size}-px views, patch {self.patch_size} → {g}×{g} features per view{pooling}"


class LlavaAdapter(ModelAdapter):
    """LLaVA-style families: `model.model.{vision_tower, multi_modal_projector, image_newline, language_model}`."""

    anyres_strategies: ClassVar[tuple[str, ...]] = ("llava-next", "llava-onevision")  # plans packed as anyres

    def max_features_tiles(self, config: Any) -> int | None:
        """N of anyres_max_N, or None when the family never pools."""
        return None

    def read_geometry(self, config: Any, image_processor: Any) -> LlavaGeometry:
        vision = config.vision_config
        geometry = LlavaGeometry(
            tile_size=int(vision.image_size),
            patch_size=int(vision.patch_size),
            grid_pinpoints=[list(map(int, p)) for p in config.image_grid_pinpoints],
            select_strategy=str(config.vision_feature_select_strategy),
            feature_layer=config.vision_feature_layer,
            max_features_tiles=self.max_features_tiles(config),
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
        )
        crop = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None) or {}
        side = (crop.get("height") or crop.get("shortest_edge") if isinstance(crop, dict)
                else getattr(crop, "height", None))
        if side and int(side) != geometry.tile_size:
            raise ModelError(f"the checkpoint's processor crops {side} px views but its vision tower takes "
                             f"{geometry.tile_size} px; its config and processor config disagree")
        return geometry

    # ---- layout

    def is_anyres(self, geo: LlavaGeometry, plan: Plan) -> bool:
        """True when the plan is laid out as the model's own anyres sequence (and has plan.token_count positions)."""
        return (plan.strategy in self.anyres_strategies and plan.thumbnail_position == "first"
                and plan.params.get("tile_size") == geo.tile_size and plan.params.get("patch_size") == geo.patch_size
                and _encoder_sized(geo, plan))

    def layout(self, geo: LlavaGeometry, plan: Plan) -> Layout:
        g = geo.features_side
        lay = LayoutBuilder()
        cells = np.arange(g * g)
        if self.is_anyres(geo, plan):
            _, cols = plan.grid
            lay.features(0, -1, -1, cells // g, cells % g)  # the global view: one g × g block
            fmap = _AnyresMap.of(plan, g)
            r = np.asarray(sample_centres(fmap.pad_r, fmap.kept_r, fmap.out_r))[:, None]  # rows on the whole map
            c = np.asarray(sample_centres(fmap.pad_c, fmap.kept_c, fmap.out_c))[None, :]  # columns
            lay.rows_with_newlines(1 + (r // g) * cols + c // g, r // g, c // g, r % g, c % g)
            if (fmap.out_r, fmap.out_c) != (fmap.kept_r, fmap.kept_c):
                return lay.build([(g, g)] * plan.num_views, self.patch_pixels(geo, plan),
                                 footprint=_pooled_footprint(fmap, g, cols))
        else:
            views, tile_at = plan.views, _tile_indices(plan)
            for i, v in enumerate(views):
                if v.is_thumbnail:  # one block, no newlines, as the anyres global view
                    lay.features(i, -1, -1, cells // g, cells % g)
                elif i == tile_at[0] and _fills_grid(plan):  # the tiles as one (rows·g) × (cols·g) map
                    rows, cols = plan.grid
                    r, c = np.arange(rows * g)[:, None], np.arange(cols * g)[None, :]
                    lay.rows_with_newlines(tile_at[0] + (r // g) * cols + c // g, r // g, c // g, r % g, c % g)
                elif not _fills_grid(plan):  # one g × g map per tile
                    r, c = cells[:g, None], cells[None, :g]
                    lay.rows_with_newlines(i, v.row, v.col, r, c)
        return lay.build([(g, g)] * plan.num_views, self.patch_pixels(geo, plan))

    # ---- plan mode

    def plan_mode_rule(self, geo: LlavaGeometry) -> str:
        t = geo.tile_size
        return f"resized to {t}×{t}, a newline after every feature row of the plan's grid"

    def exact_pixels(self, vlm: VLM, plan: Plan) -> bool:
        """Resample as the reference processor does: for the model's own plan, or when every view already has the
        encoder's input size; else the fast path, each view then resized to t × t."""
        return vlm.is_native(plan) or _encoder_sized(vlm.geometry, plan)

    def view_pixels(self, vlm: VLM, image: Image.Image, plan: Plan, exact: bool | None = None) -> torch.Tensor:
        """(views, 3, t, t) normalised with the checkpoint's mean/std, in `plan.views` order."""
        import torch
        import torch.nn.functional as F

        from ...pixels import pixel_values

        geo = vlm.geometry
        t = geo.tile_size
        exact = self.exact_pixels(vlm, plan) if exact is None else exact
        pv = pixel_values(image, plan, mean=geo.mean, std=geo.std, exact=exact)
        if isinstance(pv, list) or pv.shape[-2:] != (t, t):
            views = pv if isinstance(pv, list) else list(pv)
            pv = torch.cat([F.interpolate(v[None], size=(t, t), mode="bicubic", antialias=True, align_corners=False)
                            for v in views])  # (views, 3, t, t)
        return pv.to(vlm.device, vlm.model.dtype)

    def patch_grids(self, geo: LlavaGeometry, plan: Plan) -> list[tuple[int, int]]:
        g = geo.features_side
        return [(g, g)] * plan.num_views

    def patch_pixels(self, geo: LlavaGeometry, plan: Plan) -> list[tuple[float, float]]:
        """A patch covers patch_size pixels of the t × t input the tower sees (g·patch ≤ t: SigLIP's 27 patches
        of 14 px leave the last 6 px of a 384-px view unseen); in a view's own input pixels that is
        patch_size · side / t once the view is resized to t × t."""
        t, p = geo.tile_size, geo.patch_size
        return [(p * v.input_size[1] / t, p * v.input_size[0] / t) for v in plan.views]

    def encode(self, vlm: VLM, image: Image.Image, plan: Plan) -> tuple[torch.Tensor, tuple[str, ...]]:
        geo = vlm.geometry
        notes = () if _encoder_sized(geo, plan) else (f"each view was resized to the encoder's "
                                                      f"{geo.tile_size}×{geo.tile_size} input",)
        features = self.view_features(vlm, self.view_pixels(vlm, image, plan))  # (views, g·g, D)
        if self.is_anyres(geo, plan):
            return self._pack_anyres(vlm, plan, features), notes
        return self._pack_grid(vlm, plan, features), notes

    def view_features(self, vlm: VLM, pixels: torch.Tensor) -> torch.Tensor:
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

    def _with_newlines(self, vlm: VLM, fmap: torch.Tensor) -> torch.Tensor:
        """(D, h, w) → (h·(w + 1), D): `image_newline` after every feature row, rows flattened in order."""
        import torch

        nl = vlm.model.model.image_newline
        nl = nl[:, None, None].expand(nl.shape[0], fmap.shape[1], 1).to(fmap.device, fmap.dtype)  # (D, h, 1)
        return torch.cat((fmap, nl), dim=-1).flatten(1, 2).transpose(0, 1)

    def _pack_anyres(self, vlm: VLM, plan: Plan, features: torch.Tensor) -> torch.Tensor:
        """LLaVA-NeXT / OneVision `pack_image_features` for one image, with the same tensor operations."""
        import torch
        import torch.nn.functional as F

        g = vlm.geometry.features_side
        rows, cols = plan.grid
        base, tiles = features[0], features[1:]  # (g·g, D), (rows·cols, g·g, D)
        fmap = tiles.view(rows, cols, g, g, -1).permute(4, 0, 2, 1, 3).contiguous()
        fmap = fmap.flatten(1, 2).flatten(2, 3)  # (D, rows·g, cols·g)
        m = _AnyresMap.of(plan, g)
        fmap = fmap[:, m.pad_r:m.pad_r + m.kept_r, m.pad_c:m.pad_c + m.kept_c]  # (D, kept_r, kept_c)
        if (m.out_r, m.out_c) != (m.kept_r, m.kept_c):
            fmap = F.interpolate(fmap[None], [m.out_r, m.out_c], mode="bilinear")[0]  # (D, out_r, out_c)
        return torch.cat((base, self._with_newlines(vlm, fmap)), dim=0)  # (g·g + out_r·(out_c + 1), D)

    def _pack_grid(self, vlm: VLM, plan: Plan, features: torch.Tensor) -> torch.Tensor:
        """Any other plan: a thumbnail block where the plan puts it, tiles as one feature map with newlines."""
        import torch

        g = vlm.geometry.features_side
        views, tile_at = plan.views, _tile_indices(plan)
        pieces = []
        for i, v in enumerate(views):
            if v.is_thumbnail:
                pieces.append(features[i])
            elif i == tile_at[0] and _fills_grid(plan):
                rows, cols = plan.grid
                fmap = features[tile_at].view(rows, cols, g, g, -1).permute(4, 0, 2, 1, 3).contiguous()
                pieces.append(self._with_newlines(vlm, fmap.flatten(1, 2).flatten(2, 3)))  # (D, rows·g, cols·g)
            elif not _fills_grid(plan):
                pieces.append(self._with_newlines(vlm, features[i].view(g, g, -1).permute(2, 0, 1)))
        return torch.cat(pieces, dim=0)

    # ---- attention modules

    def vision_has_cls(self, geo: LlavaGeometry) -> bool:
        return geo.select_strategy == "default"  # "default" drops the CLS token the tower puts first

    def feature_attention_layer(self, geo: LlavaGeometry, num_layers: int) -> int:
        from ...attention.capture import feature_attention_layer

        return feature_attention_layer(geo.feature_layer, num_layers)


@dataclass(frozen=True)
class _AnyresMap:
    """The tiles' (rows·g) × (cols·g) feature map of an anyres plan: kept after unpadding, then after pooling."""

    kept_r: int
    kept_c: int
    pad_r: int
    pad_c: int
    out_r: int
    out_c: int

    @classmethod
    def of(cls, plan: Plan, g: int) -> _AnyresMap:
        rows, cols = plan.grid
        w, h = plan.image_size
        kept_r, kept_c, pad_r, pad_c = unpadded_size(w, h, rows * g, cols * g,
                                                     round7=plan.params.get("pinpoint_order", "hw") == "hw")
        out_r, out_c = pooled_size(kept_r, kept_c, g, plan.params.get("max_features_tiles"))
        return cls(kept_r, kept_c, pad_r, pad_c, out_r, out_c)


def bilinear_taps(pad: int, kept: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """The two source rows (or columns) on the whole map, and their weights, that F.interpolate(mode="bilinear",
    align_corners=False) reads for each of `out` outputs from the `kept` rows starting at `pad`: (out, 2) int and
    (out, 2) float, weights summing to 1 (the second 0 where the sample falls on a row or past the last).

    PyTorch's rule (area_pixel_compute_source_index): source = (i + 0.5) · kept / out − 0.5, clamped at 0; rows
    floor(source) and the next one (none past the last), weighted by the distance to each.
    """
    src = np.maximum((np.arange(out, dtype=np.float32) + np.float32(0.5)) * np.float32(kept / out)
                     - np.float32(0.5), 0).astype(np.float64)  # float32, as PyTorch computes it for float maps
    lo = np.minimum(src.astype(np.int64), kept - 1)
    hi = np.minimum(lo + 1, kept - 1)
    frac = np.where(hi > lo, src - lo, 0.0)
    return np.stack((lo, hi), axis=1) + pad, np.stack((1.0 - frac, frac), axis=1)


def _pooled_footprint(fmap: _AnyresMap, g: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The footprint of an anyres layout whose tile map was pooled: the global view's g² features read their own
    cell; each pooled feature its 2 × 2 bilinear taps on the tiles' map (possibly across a tile seam); newlines
    none. In sequence order, as `LlavaAdapter.layout` writes the positions."""
    (rows_at, rows_w), (cols_at, cols_w) = (bilinear_taps(fmap.pad_r, fmap.kept_r, fmap.out_r),
                                            bilinear_taps(fmap.pad_c, fmap.kept_c, fmap.out_c))
    R = rows_at[:, None, :, None]  # (out_r, 1, 2, 1): whole-map rows
    C = cols_at[None, :, None, :]  # (1, out_c, 1, 2): whole-map columns
    R, C = np.broadcast_arrays(R, C)  # (out_r, out_c, 2, 2)
    weights = (rows_w[:, None, :, None] * cols_w[None, :, None, :]).reshape(fmap.out_r, fmap.out_c, 4)
    cells = np.stack((1 + (R // g) * cols + C // g, R % g, C % g), axis=-1).reshape(fmap.out_r, fmap.out_c, 4, 3)
    cells = np.concatenate((cells, np.full((fmap.out_r, 1, 4, 3), -1)), axis=1).reshape(-1, 4, 3)  # + newlines
    weights = np.concatenate((weights, np.zeros((fmap.out_r, 1, 4))), axis=1).reshape(-1, 4)
    base = np.arange(g * g)
    base_cells = np.zeros((g * g, 4, 3), dtype=np.int64)
    base_cells[:, 0] = np.stack((np.zeros_like(base), base // g, base % g), axis=1)
    base_weights = np.zeros((g * g, 4))
    base_weights[:, 0] = 1.0
    return np.concatenate((base_cells, cells)), np.concatenate((base_weights, weights))


def _encoder_sized(geo: LlavaGeometry, plan: Plan) -> bool:
    t = geo.tile_size
    return all(tuple(v.input_size) == (t, t) for v in plan.views)


def _tile_indices(plan: Plan) -> list[int]:
    """Indices in plan.views of the tiles (contiguous: a thumbnail is first or last)."""
    return [i for i, v in enumerate(plan.views) if not v.is_thumbnail]


def _fills_grid(plan: Plan) -> bool:
    """The plan's tiles are exactly its rows × cols grid, row-major."""
    rows, cols = plan.grid
    return [(t.row, t.col) for t in plan.tiles] == [(r, c) for r in range(rows) for c in range(cols)]

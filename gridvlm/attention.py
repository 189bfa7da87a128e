"""Where the model looks: attention capture (hooks that clean up after themselves) and mapping back onto tiles.

Two sources:

- **LLM → image.** `llm_attention` runs ONE extra forward pass over a finished reply's sequence (generation keeps
  its fast attention kernel). A forward pre-hook on each chosen decoder layer's attention module recomputes,
  from that module's own q/k projections and rotary embeddings, ``softmax(q·kᵀ/√d + mask)`` for the selected
  query rows only, one KV-head group at a time, keeps the visual columns and reduces the heads at once: at
  most (heads per KV head, rows, sequence) floats exist, never a (heads, sequence, sequence) matrix. The
  module then runs as usual (SDPA, flash …). Equal to transformers' ``output_attentions=True`` under eager
  attention (tested).
- **Vision encoder.** `vision_attention`: per view, CLS → patch attention (CLIP towers) or the mean attention
  each patch receives (SigLIP, no CLS) at the layer that produces the feature layer.

Mapping back: `map_to_views` turns a vector over visual positions into one map per view on its g × g feature
grid (+ the mass on newline positions, which are not pixels); `to_image` paints the tiles' maps over the
original image (the global view separately), dropping the parts of cells that lie in padding.

Hooks follow vit-pytorch's Recorder: a context manager whose exit (also on error) ejects every hook. A hook
records only forwards run by the thread that opened it: the model is shared by the app's users.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import GridVLMError
from .geometry import Box, Plan, Tile

HEADS = ("mean", "max")  # or a head index


class AttentionError(GridVLMError):
    """Attention cannot be captured as asked: unknown layers or heads, positions outside the sequence."""


# ---------------------------------------------------------------------------------------------------------------
# Finding the attention modules


def _model_of(vlm_or_model: Any) -> Any:
    return getattr(vlm_or_model, "model", None) if hasattr(vlm_or_model, "geometry") else vlm_or_model


def text_layers(vlm_or_model: Any) -> Sequence[Any]:
    """The language model's decoder layers (each has ``self_attn``) of a VLM, a VLM model or a plain LM."""
    model = _model_of(vlm_or_model)
    for path in ("model.language_model.layers", "language_model.layers", "model.layers", "layers",
                 "language_model.model.layers"):
        obj = model
        for name in path.split("."):
            obj = getattr(obj, name, None)
            if obj is None:
                break
        if obj is not None and len(obj) and hasattr(obj[0], "self_attn"):
            return obj
    raise AttentionError(f"cannot find the decoder layers of a {type(model).__name__}; pass a gridvlm VLM or a "
                         "LLaVA-NeXT / LLaVA-OneVision model")


def vision_layers(vlm_or_model: Any) -> Sequence[Any]:
    """The vision tower's encoder layers (CLIP / SigLIP)."""
    model = _model_of(vlm_or_model)
    tower = getattr(getattr(model, "model", model), "vision_tower", None)
    for owner in (tower, getattr(tower, "vision_model", None)):  # transformers 5 | 4 nesting
        layers = getattr(getattr(owner, "encoder", None), "layers", None)
        if layers is not None:
            return layers
    raise AttentionError(f"cannot find the vision tower's encoder layers of a {type(model).__name__}")


def resolve_layers(layers: Any, count: int) -> list[int]:
    """`layers` as sorted distinct indices in [0, count): None (all), an int, a (first, last) pair (inclusive),
    a range, a slice or any iterable of ints; negative indices count from the end."""
    if layers is None:
        picked = range(count)
    elif isinstance(layers, slice):
        picked = range(count)[layers]
    elif isinstance(layers, (int, np.integer)):
        picked = [int(layers)]
    elif isinstance(layers, tuple) and len(layers) == 2 and not isinstance(layers, range):
        first, last = (int(v) % count if -count <= int(v) < count else int(v) for v in layers)
        picked = range(first, last + 1)
    else:
        picked = [int(v) for v in layers]
    out = []
    for i in picked:
        if not -count <= i < count:
            raise AttentionError(f"layer {i} does not exist: the model has {count} layers (0…{count - 1})")
        out.append(i % count)
    if not out:
        raise AttentionError(f"no layers chosen from {layers!r}; the model has {count} layers (0…{count - 1})")
    return sorted(set(out))


def _check_heads(heads: Any, num_heads: int) -> str | int:
    if isinstance(heads, str) and heads.strip().lstrip("-").isdigit():
        heads = int(heads)
    if isinstance(heads, (int, np.integer)):
        if not -num_heads <= int(heads) < num_heads:
            raise AttentionError(f"head {heads} does not exist: the layers have {num_heads} heads "
                                 f"(0…{num_heads - 1})")
        return int(heads) % num_heads
    if heads not in HEADS:
        raise AttentionError(f"heads must be 'mean', 'max' or a head index, not {heads!r}")
    return heads


def _reduce_heads(weights, heads: str | int):
    """(heads, …) → (…): mean, max or one head."""
    if heads == "mean":
        return weights.mean(dim=0)
    if heads == "max":
        return weights.amax(dim=0)
    return weights[heads]


# ---------------------------------------------------------------------------------------------------------------
# Recorders


class _Recorder:
    """Hooks on attention modules that keep a reduced slice of each layer's weights; a context manager."""

    def __init__(self, modules: Sequence[Any], layer_ids: list[int]):
        self.layers = layer_ids
        self._modules = modules
        self._handles: list[Any] = []
        self._thread: int | None = None
        self._store: dict[int, Any] = {}

    def __enter__(self):
        self._thread = threading.get_ident()
        self._store.clear()
        try:
            for i in self.layers:
                self._handles.append(self._modules[i].register_forward_pre_hook(self._hook(i), with_kwargs=True))
        except BaseException:
            self.eject()
            raise
        return self

    def __exit__(self, *exc):
        self.eject()
        return False

    def eject(self) -> None:
        """Remove every hook (idempotent); what was recorded stays in `result`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def _hook(self, layer: int):
        def hook(module, args, kwargs):
            if threading.get_ident() != self._thread:  # another user's forward on the shared model
                return None
            import torch

            with torch.no_grad():
                self._store[layer] = self._record(module, args, kwargs).float().cpu()
            return None

        return hook

    def _record(self, module, args, kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def result(self) -> np.ndarray:
        missing = [i for i in self.layers if i not in self._store]
        if missing:
            raise AttentionError(f"layers {missing} did not run while the hooks were in place")
        return np.stack([self._store[i].numpy() for i in self.layers]).astype(np.float32)


class LLMAttentionRecorder(_Recorder):
    """Attention of chosen query rows to chosen key columns, per chosen decoder layer, heads reduced.

    `result`: float32 (layers, rows, cols). Rows and columns are sequence positions (batch of 1, no KV cache).
    """

    def __init__(self, vlm_or_model: Any, rows: Sequence[int], cols: Sequence[int], layers: Any = None,
                 heads: str | int = "mean"):
        modules = [layer.self_attn for layer in text_layers(vlm_or_model)]
        super().__init__(modules, resolve_layers(layers, len(modules)))
        first = modules[0]
        num_heads = getattr(first.config, "num_attention_heads", None) or first.q_proj.out_features // first.head_dim
        self.heads = _check_heads(heads, num_heads)
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self.cols = np.asarray(cols, dtype=np.int64).reshape(-1)

    def _record(self, module, args, kwargs):
        import torch

        hidden = kwargs.get("hidden_states", args[0] if args else None)  # (1, S, D)
        cache = kwargs.get("past_key_values")
        if cache is not None and cache.get_seq_length(module.layer_idx) > 0:
            raise AttentionError("attention capture needs the whole sequence in one pass, without a KV cache "
                                 "(run the model with use_cache=False)")
        if hidden.shape[0] != 1:
            raise AttentionError(f"attention capture takes one sequence at a time, not a batch of {hidden.shape[0]}")
        seq = hidden.shape[1]
        _check_positions("query rows", self.rows, seq)
        _check_positions("columns", self.cols, seq)
        rows = torch.as_tensor(self.rows, device=hidden.device)
        d = module.head_dim
        rotary = getattr(sys.modules[type(module).__module__], "apply_rotary_pos_emb")
        cos, sin = kwargs["position_embeddings"]  # (1, S, d)
        q = module.q_proj(hidden[:, rows]).view(1, len(rows), -1, d).transpose(1, 2)  # (1, H, R, d)
        k = module.k_proj(hidden).view(1, seq, -1, d).transpose(1, 2)  # (1, KV, S, d)
        q = rotary(q, q, cos[:, rows], sin[:, rows])[0]
        k = rotary(k, k, cos, sin)[0]
        heads, kv = q.shape[1], k.shape[1]
        group = heads // kv  # head h reads kv head h // group, as repeat_kv does
        window = getattr(module, "sliding_window", getattr(module.config, "sliding_window", None))  # Qwen2: per layer
        cols = torch.as_tensor(self.cols, device=hidden.device)
        mask = kwargs.get("attention_mask")
        out = None
        # one kv head at a time: at most (group, R, S) scores exist, then only (R, C) is kept
        for j in range(kv):
            if isinstance(self.heads, int) and self.heads // group != j:
                continue
            scores = (q[0, j * group:(j + 1) * group] @ k[0, j].T) * module.scaling  # (G, R, S)
            scores = _apply_mask(scores, mask, rows, seq, window, heads=slice(j * group, (j + 1) * group))
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32)[..., cols]  # (G, R, C)
            del scores
            if isinstance(self.heads, int):
                return weights[self.heads % group]  # (R, C)
            part = weights.sum(dim=0) if self.heads == "mean" else weights.amax(dim=0)  # (R, C)
            out = part if out is None else (out + part if self.heads == "mean" else torch.maximum(out, part))
        return out / heads if self.heads == "mean" else out  # (R, C)


def _check_positions(what: str, positions: np.ndarray, seq: int) -> None:
    if positions.size and (positions.min() < 0 or positions.max() >= seq):
        raise AttentionError(f"{what} must lie in the sequence's {seq} positions (0…{seq - 1}); got "
                             f"{int(positions.min())}…{int(positions.max())}")


def _apply_mask(scores, mask, rows, seq: int, sliding_window: int | None, heads: slice = slice(None)):
    """Add the layer's mask to (heads, R, S) scores of the selected rows: the model's own mask when given
    (bool: keep, float: add; batch 1, one or per-head), else causal (and the sliding window when the
    sequence is longer than it)."""
    import torch

    if mask is not None and not isinstance(mask, torch.Tensor):
        raise AttentionError(f"attention capture does not read {type(mask).__name__} masks; load the model with "
                             "attn_implementation='sdpa' or 'eager'")
    if mask is None:
        keys = torch.arange(seq, device=scores.device)
        keep = keys[None, :] <= rows[:, None]  # (R, S)
        if sliding_window is not None and seq > sliding_window:
            keep &= keys[None, :] > rows[:, None] - sliding_window
        return scores.masked_fill(~keep, float("-inf"))
    mask = mask[0, heads if mask.shape[1] > 1 else slice(None)][:, rows, :seq]  # (1 or G, R, S)
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask


class VisionAttentionRecorder(_Recorder):
    """Per view: CLS → patch attention when the tower has a CLS token, else the mean attention each patch
    receives; heads reduced. `result`: float32 (layers, views, patches)."""

    def __init__(self, vlm_or_model: Any, layers: Any = None, heads: str | int = "mean", has_cls: bool = True):
        modules = [layer.self_attn for layer in vision_layers(vlm_or_model)]
        super().__init__(modules, resolve_layers(layers, len(modules)))
        self.heads = _check_heads(heads, modules[0].num_heads)
        self.has_cls = has_cls

    def _record(self, module, args, kwargs):
        import torch

        hidden = kwargs.get("hidden_states", args[0] if args else None)  # (views, N, D)
        views, n, _ = hidden.shape
        heads, d = module.num_heads, module.head_dim
        out = []
        for v in range(views):  # one view's (heads, N, N) at a time
            k = module.k_proj(hidden[v]).view(n, heads, d).transpose(0, 1)  # (H, N, d)
            if self.has_cls:
                q = module.q_proj(hidden[v, :1]).view(1, heads, d).transpose(0, 1)  # (H, 1, d)
                w = torch.softmax((q @ k.transpose(1, 2)) * module.scale, dim=-1, dtype=torch.float32)  # (H, 1, N)
                w = w[:, 0, 1:]  # (H, N − 1): CLS → patches
            else:
                q = module.q_proj(hidden[v]).view(n, heads, d).transpose(0, 1)  # (H, N, d)
                w = torch.softmax((q @ k.transpose(1, 2)) * module.scale, dim=-1, dtype=torch.float32)  # (H, N, N)
                w = w.mean(dim=1)  # (H, N): mean attention each patch receives
            out.append(_reduce_heads(w, self.heads))
        return torch.stack(out)  # (views, patches)


def capture_llm_attention(vlm_or_model: Any, rows: Sequence[int], cols: Sequence[int], layers: Any = None,
                          heads: str | int = "mean") -> LLMAttentionRecorder:
    """A context manager recording, during the forward passes run inside it, the attention of query `rows` to
    key `cols` (sequence positions) on the chosen decoder `layers` (None: all) with `heads` reduced ("mean",
    "max" or a head index). ``.result``: (layers, rows, cols); hooks are removed on exit, also on error.

        with capture_llm_attention(vlm, rows=answer, cols=visual, layers=(10, 20)) as rec:
            vlm.model.model.language_model(inputs_embeds=embeds, use_cache=False)
        weights = rec.result
    """
    return LLMAttentionRecorder(vlm_or_model, rows, cols, layers, heads)


class _Stop(Exception):
    """Raised after the last chosen layer: the rest of the forward pass is not needed."""


def _stop_after(module):
    def hook(*_):
        raise _Stop

    return module.register_forward_hook(hook)


def llm_attention(vlm: Any, inputs: Any, visual_positions: Sequence[int], query_positions: Sequence[int],
                  layers: Any = None, heads: str | int = "mean") -> np.ndarray:
    """Attention from `query_positions` to `visual_positions` in one extra forward pass: (layers, rows, cols).

    `inputs`: the final sequence's inputs_embeds ((1, S, D) or (S, D) tensor, plan mode) — only the language
    model runs — or a dict of model inputs (input_ids, pixel_values, image_sizes …: native mode), run
    through the whole VLM. The pass stops after the last chosen layer, uses no KV cache, and keeps the
    model's attention implementation. For the attention "of" answer token k, ask for the row that wrote it
    (`writer_rows`).
    """
    import torch

    model = _model_of(vlm)
    rec = capture_llm_attention(vlm, query_positions, visual_positions, layers, heads)
    decoder = text_layers(vlm)
    stop = _stop_after(decoder[rec.layers[-1]])
    try:
        with rec, torch.inference_mode():
            try:
                if isinstance(inputs, dict):
                    model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
                else:
                    embeds = inputs if inputs.dim() == 3 else inputs[None]  # (1, S, D)
                    language_model = getattr(getattr(model, "model", model), "language_model", None)
                    if language_model is None:  # a plain causal LM
                        language_model = getattr(model, "model", model)
                    language_model(inputs_embeds=embeds.to(model.device, model.dtype), use_cache=False)
            except _Stop:
                pass
    finally:
        stop.remove()
    return rec.result


def writer_rows(prompt_tokens: int, answer_tokens: int) -> np.ndarray:
    """The query row that wrote each answer token: answer token k (k = 0…) was predicted at position
    prompt_tokens − 1 + k, which reads the prompt and answer tokens 0…k−1."""
    return np.arange(answer_tokens, dtype=np.int64) + prompt_tokens - 1


def feature_attention_layer(feature_layer: int | Sequence[int], num_layers: int) -> int:
    """The encoder layer (0-based) whose output is hidden state `feature_layer` (hidden_states has
    num_layers + 1 entries, the embeddings first); for a list, the deepest."""
    index = max(feature_layer) if not isinstance(feature_layer, int) else feature_layer
    index = index % (num_layers + 1) if index < 0 else index
    if not 1 <= index <= num_layers:
        raise AttentionError(f"vision_feature_layer {feature_layer} is the embedding output: no attention layer "
                             "made it")
    return index - 1


def vision_attention(vlm: Any, image: Any, plan: Plan | dict | str = "native", layers: Any = None,
                     heads: str | int = "mean") -> np.ndarray:
    """Vision-encoder attention of every view: (views, g, g), in `plan.views` order.

    CLIP towers (CLS token present): CLS → patch attention; SigLIP (no CLS): the mean attention each patch
    receives. `layers`: None = the layer producing the feature layer (e.g. layer L−2 for -2); several layers
    are averaged. Each map sums to 1 per layer for CLIP (the CLS→CLS share excluded: a little less).
    """
    import torch

    from .imaging import load_image
    from .models.visual import resolve_plan, view_pixels

    image = load_image(image)
    plan = resolve_plan(vlm, image.size, plan)
    geo = vlm.geometry
    encoder = vision_layers(vlm)
    if layers is None:
        layers = [feature_attention_layer(geo.feature_layer, len(encoder))]
    rec = VisionAttentionRecorder(vlm, layers, heads, has_cls=geo.select_strategy == "default")
    t = geo.tile_size
    exact = vlm.is_native(plan) or all(tuple(v.input_size) == (t, t) for v in plan.views)
    stop = _stop_after(encoder[rec.layers[-1]])
    try:
        with rec, torch.inference_mode():
            pixels = view_pixels(vlm, image, plan, exact=exact)  # (views, 3, t, t)
            try:
                vlm.model.model.vision_tower(pixels)
            except _Stop:
                pass
    finally:
        stop.remove()
    maps = rec.result.mean(axis=0)  # (views, patches)
    g = geo.features_side
    if maps.shape[1] != g * g:
        raise AttentionError(f"the vision tower gives {maps.shape[1]} patches per view, not {g}² = {g * g}")
    return maps.reshape(len(maps), g, g)


# ---------------------------------------------------------------------------------------------------------------
# Mapping a vector over visual positions back onto views and pixels


@dataclass(frozen=True, eq=False)
class ViewMaps:
    """A vector over visual positions laid out per view: sum(view_mass) + newline_mass == the vector's sum."""

    maps: tuple[np.ndarray, ...]  # (g, g) float64 per plan.views entry: mass of each feature cell
    present: tuple[np.ndarray, ...]  # (g, g) bool: cells that have a visual position (unpadding drops some)
    newline_mass: float  # mass on newline/separator positions: not pixels (an attention-sink signal)
    stride: tuple[float, float]  # (rows, cols) of feature cells one tile position covers (>1 after pooling)
    labels: tuple[str, ...]  # "global view" or "tile r,c", per view

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


def view_label(view: Tile) -> str:
    return "global view" if view.is_thumbnail else f"tile {view.row},{view.col}"


def _as_plan(plan: Plan | dict) -> Plan:
    return Plan.from_dict(plan) if isinstance(plan, dict) else plan


def _layout_arrays(layout: Any) -> dict[str, np.ndarray]:
    """A models.Layout, or its records() / a dict of columns (what a gr.State keeps), as numpy columns."""
    keys = ("view", "row", "col", "feat_row", "feat_col", "newline")
    if isinstance(layout, dict):
        cols = {k: np.asarray(layout[k]) for k in keys}
    elif isinstance(layout, list):
        cols = {k: np.asarray([r[k] for r in layout]) for k in keys}
    else:
        cols = {k: np.asarray(getattr(layout, k)) for k in keys}
    cols = {k: v.astype(bool if k == "newline" else np.int64) for k, v in cols.items()}
    return cols


def layout_columns(layout: Any) -> dict[str, list]:
    """A Layout as plain lists (JSON / gr.State friendly); `map_to_views` takes it back."""
    return {k: v.tolist() for k, v in _layout_arrays(layout).items()}


def _grid_side(lay: dict[str, np.ndarray]) -> int:
    feats = ~lay["newline"]
    if not feats.any():
        return 1
    return int(max(lay["feat_row"][feats].max(), lay["feat_col"][feats].max())) + 1


def _tile_stride(lay: dict[str, np.ndarray], plan: Plan, g: int) -> tuple[float, float]:
    """Feature cells per tile position along rows and columns: 1 unless the map was pooled (OneVision)."""
    views = plan.views
    feats = ~lay["newline"]
    tiles = feats & np.array([not views[v].is_thumbnail for v in lay["view"]], dtype=bool) if feats.any() else feats
    out = []
    for grid, feat in (("row", "feat_row"), ("col", "feat_col")):
        full = np.unique(lay[grid][tiles] * g + lay[feat][tiles])  # positions on the whole tile map
        steps = np.diff(full)
        if steps.size == 0 or steps.max() <= 1:
            out.append(1.0)
        else:
            out.append(float((full[-1] - full[0]) / (len(full) - 1)))
    return out[0], out[1]


def map_to_views(vector: Sequence[float], layout: Any, plan: Plan | dict) -> ViewMaps:
    """One map per view on its g × g feature grid, from a vector with one value per visual position.

    Each feature position adds its value to its (view, feat_row, feat_col) cell; newline positions add to
    `newline_mass`. Cells no position maps to (removed by unpadding, skipped by pooling) stay 0 and are
    False in `present`.
    """
    plan = _as_plan(plan)
    lay = _layout_arrays(layout)
    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    if len(values) != len(lay["view"]):
        raise AttentionError(f"the vector has {len(values)} values but the layout has {len(lay['view'])} visual "
                             "positions")
    g = _grid_side(lay)
    views = plan.views
    feats = ~lay["newline"]
    if feats.any() and lay["view"][feats].max() >= len(views):
        raise AttentionError(f"the layout names view {int(lay['view'][feats].max())} but the plan has "
                             f"{len(views)} views: layout and plan are from different images")
    maps = np.zeros((len(views), g, g))
    present = np.zeros((len(views), g, g), dtype=bool)
    v, r, c = lay["view"][feats], lay["feat_row"][feats], lay["feat_col"][feats]
    np.add.at(maps, (v, r, c), values[feats])
    present[v, r, c] = True
    return ViewMaps(
        maps=tuple(maps), present=tuple(present), newline_mass=float(values[~feats].sum()),
        stride=_tile_stride(lay, plan, g), labels=tuple(view_label(view) for view in views),
    )


def vision_view_maps(maps: np.ndarray, plan: Plan | dict) -> ViewMaps:
    """`vision_attention`'s (views, g, g) as ViewMaps (every cell present, no newlines)."""
    plan = _as_plan(plan)
    maps = np.asarray(maps, dtype=np.float64)
    return ViewMaps(tuple(maps), tuple(np.ones(maps.shape, dtype=bool)), 0.0, (1.0, 1.0),
                    tuple(view_label(v) for v in plan.views))


def cell_box(view: Tile, g: int, feat_row: float, feat_col: float, stride: tuple[float, float] = (1.0, 1.0),
             clip: bool = True) -> Box | None:
    """Original-image pixels a feature cell covers: the cell (or a stride-sized box around its centre) in the
    view's input pixels, clipped to where the image lies in the view (`content_box`), mapped onto `view.box`.
    None when the cell lies wholly in padding."""
    (bx0, by0, bx1, by1), (cx0, cy0, cx1, cy1) = view.box, view.content_box
    if cx1 <= cx0 or cy1 <= cy0:  # plans without content boxes: the whole input is content
        cx0, cy0, cx1, cy1 = 0.0, 0.0, float(view.input_size[0]), float(view.input_size[1])
    w, h = view.input_size
    sr, sc = stride
    x0, x1 = (feat_col + 0.5 - sc / 2) * w / g, (feat_col + 0.5 + sc / 2) * w / g
    y0, y1 = (feat_row + 0.5 - sr / 2) * h / g, (feat_row + 0.5 + sr / 2) * h / g
    if clip:
        x0, y0, x1, y1 = max(x0, cx0), max(y0, cy0), min(x1, cx1), min(y1, cy1)
        if x1 <= x0 or y1 <= y0:
            return None
    sx, sy = (bx1 - bx0) / (cx1 - cx0), (by1 - by0) / (cy1 - cy0)
    return (bx0 + (x0 - cx0) * sx, by0 + (y0 - cy0) * sy, bx0 + (x1 - cx0) * sx, by0 + (y1 - cy0) * sy)


def _cell_boxes(view_maps: ViewMaps, plan: Plan, which: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) original-pixel boxes and (N,) masses of the present cells of the chosen views."""
    boxes, masses = [], []
    for view, grid, present in zip(plan.views, view_maps.maps, view_maps.present):
        if view.is_thumbnail != (which == "global"):
            continue
        g = grid.shape[0]
        stride = (1.0, 1.0) if view.is_thumbnail else view_maps.stride
        for r, c in zip(*np.nonzero(present)):
            box = cell_box(view, g, r, c, stride)
            if box is not None and grid[r, c] != 0:
                boxes.append(box)
                masses.append(grid[r, c])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(masses, dtype=np.float64)


def padding_mass(view_maps: ViewMaps, plan: Plan | dict) -> float:
    """Mass on cells that lie wholly in padding: present in the sequence but not on the image."""
    plan = _as_plan(plan)
    lost = 0.0
    for view, grid, present in zip(plan.views, view_maps.maps, view_maps.present):
        stride = (1.0, 1.0) if view.is_thumbnail else view_maps.stride
        for r, c in zip(*np.nonzero(present)):
            if cell_box(view, grid.shape[0], r, c, stride) is None:
                lost += grid[r, c]
    return float(lost)


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


def to_image(view_maps: ViewMaps, plan: Plan | dict, out_size: tuple[int, int], which: str = "tiles") -> np.ndarray:
    """A (H', W') heatmap over the original image from the tiles' maps (`which="tiles"`) or the global view's
    (`which="global"`); `out_size` = (W', H').

    Each present cell spreads its mass evenly over the original pixels it shows (`cell_box`); the part of a
    cell in padding is dropped and its mass goes to the part on the image, so the heatmap's sum equals the
    chosen views' mass minus cells wholly in padding (`padding_mass`).
    """
    plan = _as_plan(plan)
    if which not in ("tiles", "global"):
        raise AttentionError(f"which must be 'tiles' or 'global', not {which!r}")
    out_w, out_h = (int(v) for v in out_size)
    if out_w < 1 or out_h < 1:
        raise AttentionError(f"out_size must be at least 1×1 pixels, not {out_w}×{out_h}")
    boxes, masses = _cell_boxes(view_maps, plan, which)
    if not len(masses):
        return np.zeros((out_h, out_w))
    w, h = plan.image_size
    wx = _overlaps(boxes[:, 0], boxes[:, 2], w, out_w)  # (N, W')
    wy = _overlaps(boxes[:, 1], boxes[:, 3], h, out_h)  # (N, H')
    return (wy * masses[:, None]).T @ wx  # (H', W')


def heat_size(image_size: tuple[int, int], long_side: int = 256) -> tuple[int, int]:
    """(W', H') with the image's aspect ratio and `long_side` pixels on the longer side."""
    w, h = image_size
    s = long_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def position_boxes(layout: Any, plan: Plan | dict) -> np.ndarray:
    """(positions, 4) original-pixel box each visual position shows (NaN for newlines and cells in padding)."""
    plan = _as_plan(plan)
    lay = _layout_arrays(layout)
    g = _grid_side(lay)
    stride = _tile_stride(lay, plan, g)
    out = np.full((len(lay["view"]), 4), np.nan)
    views = plan.views
    for i in np.nonzero(~lay["newline"])[0]:
        view = views[lay["view"][i]]
        box = cell_box(view, g, lay["feat_row"][i], lay["feat_col"][i], (1.0, 1.0) if view.is_thumbnail else stride)
        if box is not None:
            out[i] = box
    return out


# ---------------------------------------------------------------------------------------------------------------
# A finished reply, as the Chat tab keeps it, and the extra pass over it


def reply_record(vlm: Any, image: Any, plan: Plan | dict | str, sequence_ids: Sequence[int], prompt_tokens: int,
                 reply_id: str | None = None, visual_positions: Sequence[int] | None = None) -> dict[str, Any]:
    """What a chat keeps of one finished reply for the attention panel: plain values only (gr.State copies it).

    `sequence_ids`: the prompt with its image placeholder expanded to the visual positions (as
    `prepare_inputs(...).input_ids`) followed by the answer's token ids; `prompt_tokens`: the prompt's length.
    `image`: a path or a PIL image (kept as given: a path is cheaper to copy); "model" holds load_vlm's
    arguments. The embeddings are rebuilt from
    these with `encode` when attention is asked for, so nothing large is stored. `visual_positions`: where the
    image sits (`PreparedInputs.visual_positions`); None = the image-token positions of the prompt.
    """
    import uuid

    from .models.visual import resolve_plan

    ids = [int(i) for i in np.asarray(sequence_ids).reshape(-1)]
    size = _image_size(image)
    plan = resolve_plan(vlm, size, plan)
    text_cfg = vlm.model.config.text_config
    tower = vision_layers(vlm)
    answer = ids[prompt_tokens:]
    return {
        "id": reply_id or uuid.uuid4().hex,
        "model": {"model_id_or_path": vlm.model_id, "device": vlm.device,
                  "dtype": str(vlm.dtype).removeprefix("torch."), "quantization": vlm.quantization},
        "image": image,
        "plan": plan.to_dict(),
        "sequence_ids": ids,
        "prompt_tokens": int(prompt_tokens),
        "visual_positions": ([int(i) for i in visual_positions] if visual_positions is not None
                             else [i for i, t in enumerate(ids[:prompt_tokens]) if t == vlm.image_token_id]),
        "answer_tokens": [vlm.tokenizer.decode([t]) for t in answer],
        "text_layers": len(text_layers(vlm)),
        "text_heads": int(text_cfg.num_attention_heads),
        "vision_layers": len(tower),
        "vision_heads": int(tower[0].self_attn.num_heads),
        "vision_feature_attention_layer": feature_attention_layer(vlm.geometry.feature_layer, len(tower)),
    }


def _image_size(image: Any) -> tuple[int, int]:
    if hasattr(image, "size") and not callable(image.size):
        return tuple(image.size)
    from .imaging import load_image

    return load_image(image).size


def rebuild_inputs(vlm: Any, record: dict[str, Any]) -> tuple[Any, np.ndarray, Any]:
    """(inputs_embeds (1, S, D), visual positions, Layout) of a `reply_record`: the token embeddings with the
    visual span replaced by `encode(vlm, image, plan)`: for the native plan the model's own embeddings."""
    import torch

    plan = Plan.from_dict(record["plan"])
    visual = vlm.encode(record["image"], plan)
    positions = np.asarray(record["visual_positions"], dtype=np.int64)
    if len(positions) != len(visual):
        raise AttentionError(f"the reply has {len(positions)} visual positions but encoding its image with its plan "
                             f"gives {len(visual)}: the record does not belong to this model or image")
    ids = torch.tensor(record["sequence_ids"], device=vlm.device)[None]  # (1, S)
    with torch.inference_mode():
        embeds = vlm.model.get_input_embeddings()(ids)  # (1, S, D)
        embeds[0, torch.as_tensor(positions, device=vlm.device)] = visual.embeds.to(embeds.dtype)
    return embeds, positions, visual.layout


def query_rows(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(question rows, answer rows) of a reply: the prompt positions after the image, and the row that wrote
    each answer token (`writer_rows`)."""
    visual = record["visual_positions"]
    start = (max(visual) + 1) if visual else 0
    question = np.arange(start, record["prompt_tokens"], dtype=np.int64)
    answer = writer_rows(record["prompt_tokens"], len(record["answer_tokens"]))
    return question, answer

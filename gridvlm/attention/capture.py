"""Attention capture: torch hooks that record a reduced slice of the attention weights and clean up after themselves.

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

Where the attention modules are is the model family's adapter's to say (`gridvlm.models` adapters:
`text_layers`, `vision_layers`, `language_model`, `vision_tower`); a plain transformers model is searched
for them (`decoder_layers`, `encoder_layers`). torch is imported only when a capture runs.

Hooks follow vit-pytorch's Recorder: a context manager whose exit (also on error) ejects every hook. A hook
records only forwards run by the thread that opened it: the model is shared by the app's users.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geometry import Plan
from .errors import AttentionError

if TYPE_CHECKING:
    from ..imaging import ImageSource

HEADS = ("mean", "max")  # or a head index


# ---------------------------------------------------------------------------------------------------------------
# Finding the attention modules


def _is_vlm(obj: Any) -> bool:
    """A gridvlm.models.VLM (its family adapter knows where the modules are), not a transformers model."""
    return hasattr(obj, "family") and hasattr(obj, "geometry")


def _model_of(vlm_or_model: Any) -> Any:
    return vlm_or_model.model if _is_vlm(vlm_or_model) else vlm_or_model


def _find(model: Any, paths: Sequence[str], ok) -> Any:
    for path in paths:
        obj = model
        for name in path.split("."):
            obj = getattr(obj, name, None)
            if obj is None:
                break
        if obj is not None and ok(obj):
            return obj
    return None


def decoder_layers(model: Any) -> Sequence[Any]:
    """The decoder layers (each has ``self_attn``) of a transformers VLM or plain causal LM, found by the usual
    attribute paths."""
    layers = _find(model, ("model.language_model.layers", "language_model.layers", "model.layers", "layers",
                           "language_model.model.layers"), lambda obj: len(obj) and hasattr(obj[0], "self_attn"))
    if layers is None:
        raise AttentionError(f"cannot find the decoder layers of a {type(model).__name__}; pass a gridvlm VLM or a "
                             "model of a family gridvlm.models runs")
    return layers


def encoder_layers(model: Any) -> Sequence[Any]:
    """The vision tower's encoder layers (CLIP / SigLIP nesting of transformers 5 and 4)."""
    layers = _find(model, ("model.vision_tower.encoder.layers", "model.vision_tower.vision_model.encoder.layers",
                           "vision_tower.encoder.layers", "vision_tower.vision_model.encoder.layers"),
                   lambda obj: True)
    if layers is None:
        raise AttentionError(f"cannot find the vision tower's encoder layers of a {type(model).__name__}")
    return layers


def text_layers(vlm_or_model: Any) -> Sequence[Any]:
    """The language model's decoder layers (each has ``self_attn``) of a VLM, a VLM model or a plain LM."""
    if _is_vlm(vlm_or_model):
        return vlm_or_model.family.text_layers(vlm_or_model.model)
    return decoder_layers(vlm_or_model)


def vision_layers(vlm_or_model: Any) -> Sequence[Any]:
    """The vision tower's encoder layers (each has ``self_attn``)."""
    if _is_vlm(vlm_or_model):
        return vlm_or_model.family.vision_layers(vlm_or_model.model)
    return encoder_layers(vlm_or_model)


def _language_model(vlm_or_model: Any) -> Any:
    """The module that takes inputs_embeds and runs the decoder layers."""
    if _is_vlm(vlm_or_model):
        return vlm_or_model.family.language_model(vlm_or_model.model)
    model = vlm_or_model
    inner = getattr(model, "model", model)
    return getattr(inner, "language_model", None) or inner  # a VLM's language model, or a plain causal LM's body


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
        self._queries_keys = (vlm_or_model.family.text_queries_keys if _is_vlm(vlm_or_model)
                              else text_queries_keys)
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
        q, k = self._queries_keys(module, hidden, rows, kwargs["position_embeddings"])
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


def text_queries_keys(module: Any, hidden: Any, rows: Any, position_embeddings: Any) -> tuple[Any, Any]:
    """(queries of `rows` (1, H, R, d), keys of every position (1, KV, S, d)) of a decoder attention module, as
    its own forward computes them: projections, the per-head q/k norms where the module has them (Qwen3,
    Gemma 3), and the rotary embedding of the module's own modelling file (Qwen2-VL's multimodal sections are
    already folded into `position_embeddings` there)."""
    d = module.head_dim
    seq = hidden.shape[1]
    rotary = getattr(sys.modules[type(module).__module__], "apply_rotary_pos_emb")
    cos, sin = position_embeddings  # (1, S, d)
    q = module.q_proj(hidden[:, rows]).view(1, len(rows), -1, d)  # (1, R, H, d)
    k = module.k_proj(hidden).view(1, seq, -1, d)  # (1, S, KV, d)
    if getattr(module, "q_norm", None) is not None:
        q = module.q_norm(q)
    if getattr(module, "k_norm", None) is not None:
        k = module.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    q = rotary(q, q, cos[:, rows], sin[:, rows])[0]
    k = rotary(k, k, cos, sin)[0]
    return q, k


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


def _identity(x):
    return x


def vision_attention_module(layer: Any) -> Any:
    """A vision encoder layer's attention module: `self_attn` (CLIP, SigLIP) or `attention` (InternViT)."""
    module = getattr(layer, "self_attn", None)
    return module if module is not None else layer.attention


class VisionAttentionRecorder(_Recorder):
    """Per view: CLS → patch attention when the tower has a CLS token, else the mean attention each patch
    receives; heads reduced. `result`: float32 (layers, views, patches)."""

    def __init__(self, vlm_or_model: Any, layers: Any = None, heads: str | int = "mean", has_cls: bool = True):
        modules = [vision_attention_module(layer) for layer in vision_layers(vlm_or_model)]
        super().__init__(modules, resolve_layers(layers, len(modules)))
        self.heads = _check_heads(heads, modules[0].num_heads)
        self.has_cls = has_cls

    def _record(self, module, args, kwargs):
        import torch

        hidden = kwargs.get("hidden_states", args[0] if args else None)  # (views, N, D)
        views, n, _ = hidden.shape
        heads, d = module.num_heads, module.head_dim
        out = []
        # InternViT normalises q and k over the whole width before splitting heads (Identity when it does not)
        q_norm, k_norm = getattr(module, "q_norm", _identity), getattr(module, "k_norm", _identity)
        for v in range(views):  # one view's (heads, N, N) at a time
            k = k_norm(module.k_proj(hidden[v])).view(n, heads, d).transpose(0, 1)  # (H, N, d)
            if self.has_cls:
                q = q_norm(module.q_proj(hidden[v, :1])).view(1, heads, d).transpose(0, 1)  # (H, 1, d)
                w = torch.softmax((q @ k.transpose(1, 2)) * module.scale, dim=-1, dtype=torch.float32)  # (H, 1, N)
                w = w[:, 0, 1:]  # (H, N − 1): CLS → patches
            else:
                q = q_norm(module.q_proj(hidden[v])).view(n, heads, d).transpose(0, 1)  # (H, N, d)
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
    """A hook that ends the capture's own pass after `module`; forwards run by other threads (other users'
    replies on the shared model) go on untouched."""
    owner = threading.get_ident()

    def hook(*_):
        if threading.get_ident() == owner:
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
                    _language_model(vlm)(inputs_embeds=embeds.to(model.device, model.dtype), use_cache=False)
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


def vision_attention(vlm: Any, image: ImageSource, plan: Plan | str = "native", layers: Any = None,
                     heads: str | int = "mean") -> np.ndarray | list[np.ndarray]:
    """Vision-encoder attention of every view on its patch grid, in `plan.views` order (what the family's
    adapter feeds the tower for this plan): (views, rows, cols), or a list of (rows, cols) maps when the views'
    patch grids differ.

    Towers with a CLS token (CLIP): CLS → patch attention; without (SigLIP and the native-resolution towers):
    the mean attention each patch receives. `layers`: None = the layer producing the features the LLM reads
    (e.g. layer L−2 for vision_feature_layer -2); several layers are averaged. The family's adapter runs it
    (`ModelAdapter.vision_attention`): towers that see every view as one batch entry share
    `batched_views_attention`; windowed or packed towers (Qwen) have their own.
    """
    from ..imaging import load_image
    from ..models.visual import resolve_plan

    image = load_image(image)
    plan = resolve_plan(vlm, image.size, plan)
    return vlm.family.vision_attention(vlm, image, plan, layers, heads)


def batched_views_attention(vlm: Any, image: Any, plan: Plan, layers: Any = None,
                            heads: str | int = "mean") -> np.ndarray:
    """`vision_attention` for towers that take the views as a batch (views, 3, H, W) and attend within a view."""
    import torch

    from ..models.visual import view_pixels

    family, geo = vlm.family, vlm.geometry
    encoder = vision_layers(vlm)
    if layers is None:
        layers = [family.feature_attention_layer(geo, len(encoder))]
    rec = VisionAttentionRecorder(vlm, layers, heads, has_cls=family.vision_has_cls(geo))
    stop = _stop_after(encoder[rec.layers[-1]])
    try:
        with rec, torch.inference_mode():
            pixels = view_pixels(vlm, image, plan)  # what encode feeds the tower
            try:
                family.vision_tower(vlm.model)(pixels)
            except _Stop:
                pass
    finally:
        stop.remove()
    maps = rec.result.mean(axis=0)  # (views, patches)
    grids = family.patch_grids(geo, plan)
    if [r * c for r, c in grids] != [maps.shape[1]] * len(maps):
        raise AttentionError(f"the vision tower gives {maps.shape[1]} patches per view, not the {grids} the "
                             f"{family.name} adapter expects")
    return maps.reshape(len(maps), *grids[0])

"""Where each visual position's pixels come from, read from the real transformers model's forward.

The layout gridvlm computes (which view and feature cell each visual position is, and the pixels that cell's
patches see) must not be tested against the same arithmetic. This probe asks the model itself:

1. `patches_isolated(vlm)`: the vision tower's attention output projections are zeroed for the block, so every
   patch token depends on its own patch only (residual connections carry it through; MLPs and norms act per
   token). What still mixes tokens is exactly what the family's layout describes: pooling, pixel shuffle,
   patch mergers, newline or separator embeddings (which depend on no pixel at all).
2. `language_inputs(vlm, inputs)`: the model's own forward runs up to its language model, whose
   `inputs_embeds` are caught with autograd on: (S, D), differentiable in `pixel_values`.
3. `owners(...)`: two backward passes of random projections, Σ_i (i + 1)·⟨e_i, u⟩ and Σ_i ⟨e_i, u⟩; where each
   pixel feeds at most one position the ratio of their gradients is that position's index + 1, exactly.
   Pixels no position sees have a zero gradient (−1); pixels several positions share (bilinear pooling) give a
   non-integer ratio (−2). `support(...)` is one backward pass for one position, for shared pixels.

Only the language model's input is read, so the test holds whatever the LLM does later (deepstack, M-RoPE).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

UNSEEN, SHARED = -1, -2
_OUT_NAMES = ("out_proj", "o_proj", "proj", "dense", "projection_layer", "wo")


class _Caught(Exception):
    pass


def _attention_outputs(vlm) -> list[torch.nn.Linear]:
    """The output projection of every attention module of the vision tower (found by name, as modelling files
    call them), so that attention adds nothing to the residual stream."""
    tower = vlm.family.vision_tower(vlm.model)
    found = []
    for name, module in tower.named_modules():
        last = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if (isinstance(module, torch.nn.Linear) and last in _OUT_NAMES
                and any(key in parent.rsplit(".", 1)[-1].lower() for key in ("attn", "attention"))):
            found.append(module)
    if not found:
        raise AssertionError(f"no attention output projection found in {type(tower).__name__}")
    return found


def _float32_norms(vlm) -> list[torch.nn.Module]:
    """LLaMA/T5-style RMSNorms before the language model (e.g. Qwen2.5-VL's vision blocks): they compute in
    float32 whatever the model's dtype, which would spoil the float64 gradient ratios."""
    inside_lm = {id(m) for m in vlm.family.language_model(vlm.model).modules()}
    return [m for m in vlm.model.modules() if id(m) not in inside_lm and type(m).__name__.endswith("RMSNorm")
            and hasattr(m, "variance_epsilon") and isinstance(getattr(m, "weight", None), torch.nn.Parameter)]


def _rms_norm_in_own_dtype(module):
    """The same normalisation (weight · x / √(mean x² + ε)), in the input's dtype."""
    def forward(x):
        return module.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon))
    return forward


@contextlib.contextmanager
def patches_isolated(vlm, modules: Sequence[torch.nn.Linear] | None = None) -> Iterator[None]:
    """For the block: the model in float64 (so gradient ratios are exact to ~1e-12, not float32's ~1e-4) with the
    vision tower's attention output projections zeroed; norms that compute in float32 whatever the model's dtype
    compute in float64 too (LLaMA-style RMSNorms before the language model are replaced; a float64 tensor's
    `.float()` stays float64, for Gemma's norms). Afterwards the model's weights and dtype are as before (float32
    values survive the round trip through float64 unchanged). Test-only: `.float()` is patched process-wide."""
    dtype = vlm.model.dtype
    modules = list(modules) if modules is not None else _attention_outputs(vlm)
    saved = [(m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone()) for m in modules]
    norms = _float32_norms(vlm)
    to_float = torch.Tensor.float

    def keep_float64(tensor, *args, **kwargs):
        return tensor if tensor.dtype == torch.float64 and not args and not kwargs else to_float(tensor, *args,
                                                                                                   **kwargs)

    try:
        torch.Tensor.float = keep_float64
        for norm in norms:
            norm.forward = _rms_norm_in_own_dtype(norm)
        vlm.model.to(torch.float64)
        with torch.no_grad():
            for m in modules:
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
        yield
    finally:
        torch.Tensor.float = to_float
        for norm in norms:
            del norm.forward  # the class's own forward again
        vlm.model.to(dtype)
        with torch.no_grad():
            for m, (w, b) in zip(modules, saved):
                m.weight.copy_(w.to(dtype))
                if b is not None:
                    m.bias.copy_(b.to(dtype))


def language_inputs(vlm, inputs: dict[str, Any], pixel_key: str = "pixel_values") -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel values with requires_grad, the language model's inputs_embeds (S, D)) from the model's own forward."""
    pixels = inputs[pixel_key].detach().to(vlm.model.dtype).clone().requires_grad_(True)
    caught: list[torch.Tensor] = []

    def catch(module, args, kwargs):
        caught.append(kwargs["inputs_embeds"])
        raise _Caught

    lm = vlm.family.language_model(vlm.model)
    handle = lm.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.enable_grad():
            try:
                vlm.model(**{**inputs, pixel_key: pixels}, use_cache=False)
            except _Caught:
                pass
    finally:
        handle.remove()
    assert caught, "the language model never ran"
    return pixels, caught[0][0]


def owners(pixels: torch.Tensor, embeds: torch.Tensor, positions: Sequence[int], seed: int = 0) -> np.ndarray:
    """For every element of `pixels`, the index into `positions` of the one visual position it feeds; UNSEEN
    where none does, SHARED where several do."""
    gen = torch.Generator().manual_seed(seed)
    rows = embeds[torch.as_tensor(list(positions))].to(torch.float64)  # (P, D)
    u = torch.randn(rows.shape[1], generator=gen, dtype=torch.float64)
    per_position = rows @ u  # (P,)
    weights = torch.arange(1, len(positions) + 1, dtype=torch.float64)
    g1, = torch.autograd.grad((per_position * weights).sum(), pixels, retain_graph=True)
    g0, = torch.autograd.grad(per_position.sum(), pixels, retain_graph=True)
    g0, g1 = g0.double().numpy(), g1.double().numpy()
    out = np.full(g0.shape, UNSEEN, dtype=np.int64)
    seen = np.abs(g0) > 1e-12 * max(1.0, float(np.abs(g0).max()))
    ratio = np.where(seen, g1 / np.where(seen, g0, 1.0), 0.0)
    nearest = np.rint(ratio)
    # float64 rounding grows as |g0| shrinks (a near-cancelling gradient): the tolerance follows it
    gmax = float(np.abs(g0).max()) or 1.0
    tolerance = np.minimum(0.25, 1e-9 * np.maximum(1.0, nearest) * gmax / np.where(seen, np.abs(g0), 1.0))
    exact = seen & (np.abs(ratio - nearest) <= tolerance)
    out[exact] = nearest[exact].astype(np.int64) - 1
    out[seen & ~exact] = SHARED
    return out


def support(pixels: torch.Tensor, embeds: torch.Tensor, position: int, seed: int = 0) -> np.ndarray:
    """bool, shaped as `pixels`: the elements visual position `position` (a sequence index) depends on."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(embeds.shape[1], generator=gen, dtype=torch.float64)
    g, = torch.autograd.grad((embeds[position].to(torch.float64) @ u), pixels, retain_graph=True)
    g = g.abs().double().numpy()
    return g > 1e-12 * max(1.0, float(g.max()))


def box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), end-exclusive, of a 2-D bool mask's True elements; None when there are none."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

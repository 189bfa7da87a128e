"""Where each visual position's pixels come from, read from the real transformers model's forward.

The layout gridvlm computes (which view and feature cell each visual position is, and the pixels that cell's
patches see) must not be tested against the same arithmetic. This probe asks the model itself:

1. `patches_isolated(vlm)`: the vision tower's attention output projections are zeroed for the block, so every
   patch token depends on its own patch only (residual connections carry it through; MLPs and norms act per
   token). What still mixes tokens is exactly what the family's layout describes: pooling, pixel shuffle,
   patch mergers, newline or separator embeddings (which depend on no pixel at all).
2. `language_inputs(vlm, inputs)`: the model's own forward runs up to its language model, whose
   `inputs_embeds` are caught with autograd on: (S, D), differentiable in `pixel_values`.
3. `owners(...)`: which pixels each position depends on, from gradient supports: per bit of the position index,
   one backward pass of a random projection of the positions with that bit set and one of those with it clear.
   A pixel one position sees lies in exactly one of each pair, which spells the index; pixels no position sees
   have no gradient (−1); pixels several positions share (bilinear pooling) lie in both of some pair (−2).
   Supports, not gradient ratios: exact even where the model computes in float32 inside (RMSNorms do).
   `support(...)` is one backward pass for one position, for shared pixels.

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


@contextlib.contextmanager
def patches_isolated(vlm, modules: Sequence[torch.nn.Linear] | None = None) -> Iterator[None]:
    """For the block: the model in float64 (no real dependence falls below the support threshold) with the
    vision tower's attention output projections zeroed; afterwards its weights and dtype as before (float32
    values survive the round trip through float64 unchanged)."""
    dtype = vlm.model.dtype
    modules = list(modules) if modules is not None else _attention_outputs(vlm)
    saved = [(m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone()) for m in modules]
    try:
        vlm.model.to(torch.float64)
        with torch.no_grad():
            for m in modules:
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
        yield
    finally:
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
    where none does, SHARED where several do.

    Read from gradient supports only (which elements a sum of positions depends on at all), never from gradient
    values, so float32 steps inside a float64 model (RMSNorms compute in float32) cannot blur it: for each bit b
    of the position index, one backward pass over the positions with bit b set and one over those with it clear;
    an element fed by one position lies in exactly one of the two for every bit, and its index is the bits where
    it lies in the first. An element fed by two positions lies in both for a bit where their indices differ."""
    gen = torch.Generator().manual_seed(seed)
    rows = embeds[torch.as_tensor(list(positions))].to(torch.float64)  # (P, D)
    u = torch.randn(rows.shape[1], generator=gen, dtype=torch.float64)
    per_position = rows @ u  # (P,)
    index = torch.arange(len(positions))

    def depends(mask: torch.Tensor) -> np.ndarray:
        if not mask.any():
            return np.zeros(pixels.shape, dtype=bool)
        g, = torch.autograd.grad(per_position[mask].sum(), pixels, retain_graph=True)
        g = g.abs().double().numpy()
        return g > 1e-12 * max(1.0, float(g.max()))

    seen = depends(index >= 0)
    code = np.zeros(pixels.shape, dtype=np.int64)
    shared = np.zeros(pixels.shape, dtype=bool)
    for b in range(max(1, (len(positions) - 1).bit_length())):
        on = (index >> b) & 1 == 1
        with_bit, without = depends(on), depends(~on)
        shared |= with_bit & without
        code |= with_bit.astype(np.int64) << b
    out = np.full(pixels.shape, UNSEEN, dtype=np.int64)
    out[seen] = code[seen]
    out[seen & shared] = SHARED
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

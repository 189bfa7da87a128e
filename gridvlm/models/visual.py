"""Plan mode: any gridvlm plan's views → the model's vision tower → the visual token sequence the LLM reads.

Generic over model families: the family's adapter lays the sequence out (`layout`: which view and feature
cell, or newline / separator, each position is — arithmetic on the plan) and encodes the views
(`encode`: vision tower, projector, the family's packing), in the same order. With the model's own plan the
embeddings equal the model's own path, value for value. Any other plan is marked `out_of_distribution`: the
model was never trained on images cut that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..attention.mapping import Layout
from ..geometry import Plan
from .errors import ModelError

if TYPE_CHECKING:
    import torch

    from ..imaging import ImageSource
    from .loading import VLM

NATIVE = "native"  # the plan argument meaning "the model's own processing"


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


def resolve_plan(vlm: VLM, image_size: tuple[int, int], plan: Plan | str) -> Plan:
    """`plan` as a Plan: "native" (the model's own) or a Plan, checked against the image's size."""
    if isinstance(plan, str):
        if plan != NATIVE:
            raise ModelError(f"plan must be 'native' or a gridvlm Plan, not {plan!r}")
        return vlm.native_plan(image_size)
    if not isinstance(plan, Plan):
        raise ModelError(f"plan must be 'native' or a gridvlm Plan (Plan.from_dict turns a plan dict into one), "
                         f"not {type(plan).__name__}")
    if tuple(plan.image_size) != tuple(image_size):
        raise ModelError(f"the plan was made for a {plan.image_size[0]}×{plan.image_size[1]} image but this image is "
                         f"{image_size[0]}×{image_size[1]}; plan this image again")
    return plan


def image_size(image: ImageSource) -> tuple[int, int]:
    """(w, h) of an image source, without decoding a PIL image passed in."""
    if hasattr(image, "size") and not callable(image.size):
        return tuple(image.size)
    from ..imaging import load_image

    return load_image(image).size


def encode(vlm: VLM, image: ImageSource, plan: Plan | str = NATIVE) -> VisualSequence:
    """The visual token sequence of `image` cut as `plan`, and what each position is.

    `image`: anything gridvlm.load_image reads. `plan`: "native" or a Plan. With the native plan the embeddings
    equal the model's own path (processor → vision tower → projector → packing) and their number equals
    `plan.token_count`.
    """
    import torch

    from ..imaging import load_image

    image = load_image(image)
    plan = resolve_plan(vlm, image.size, plan)
    native = vlm.is_native(plan)
    notes: tuple[str, ...] = ()
    if not native:
        notes = (f"plan '{plan.strategy}' is not {vlm.family.name}'s own processing of this image: the model was "
                 "not trained on images cut this way (out of distribution)",)
    layout = vlm.family.layout(vlm.geometry, plan)
    with torch.inference_mode():
        embeds, more = vlm.family.encode(vlm, image, plan)  # (positions, D)
    if len(layout) != embeds.shape[0]:  # pragma: no cover - a bug in the adapter, not bad input
        raise AssertionError(f"{vlm.family.name}: the layout has {len(layout)} positions but the sequence has "
                             f"{embeds.shape[0]}")
    return VisualSequence(embeds, layout, plan, out_of_distribution=not native, notes=notes + tuple(more))


def count_positions(vlm: VLM, plan: Plan) -> int:
    """How many visual positions `encode(vlm, image, plan)` gives, without running the model."""
    return len(vlm.family.layout(vlm.geometry, plan))


def view_pixels(vlm: VLM, image: ImageSource, plan: Plan | str = NATIVE, exact: bool | None = None) -> torch.Tensor:
    """The plan's views as the vision tower takes them (what `encode` feeds it), normalised with the checkpoint's
    mean/std, on the model's device and dtype, in `plan.views` order.

    `exact`: None = as `encode` does (the family decides when resampling must match the reference processor);
    True/False force the exact or the fast path.
    """
    from ..imaging import load_image

    image = load_image(image)
    return vlm.family.view_pixels(vlm, image, resolve_plan(vlm, image.size, plan), exact)


def splice_visual(vlm: VLM, ids: Sequence[int] | torch.Tensor, positions: Sequence[int],
                  visual: torch.Tensor) -> torch.Tensor:
    """(1, S, D) inputs_embeds: the token embeddings of `ids` (S,) with `positions` replaced by the visual
    sequence's rows (len(positions), D), in the model's dtype on its device."""
    import torch

    ids = torch.as_tensor(ids, device=vlm.device).reshape(1, -1)  # (1, S)
    with torch.inference_mode():
        embeds = vlm.model.get_input_embeddings()(ids)  # (1, S, D)
        embeds[0, torch.as_tensor(np.asarray(positions), device=vlm.device)] = visual.to(embeds.dtype)
    return embeds

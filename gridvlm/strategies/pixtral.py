"""Pixtral and Mistral 3 (Mistral-Small-3.1): one view, aspect kept, longest edge capped, sides rounded UP to the
patch; `[IMG]` per token in rows, each row closed by `[IMG_BREAK]`, the last by `[IMG_END]`.

Re-read from transformers 5.23: `models/pixtral/image_processing_pil_pixtral.py` (`_num_image_tokens`,
`get_resize_output_image_size`), `models/pixtral/processing_pixtral.py` (`replace_image_token`) and
`models/mistral3/configuration_mistral3.py` (Mistral-Small-3.1: vision image_size 1540, patch 14,
spatial_merge_size 2 — the model's patch merger maps 2×2 patches to one token and drops an odd last row/column).
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import PlanError
from ..geometry import Plan
from .gemma import single_view_plan
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register
from .reference import (
    CLIP, MISTRAL3_VIT, MISTRAL_NEMO_12B, MISTRAL_SMALL_24B, PIXTRAL_VIT, ReferenceModel,
)


def pixtral_size_trace(w: int, h: int, longest_edge: int, q: int) -> tuple[int, int, tuple]:
    """`pixtral_size` with its path: (w, h, (ratio, (w', h') before the rounding, shrunk?))."""
    ratio = max(h / longest_edge, w / longest_edge)
    shrunk = ratio > 1
    if shrunk:
        h, w = int(math.floor(h / ratio)), int(math.floor(w / ratio))
    return ((w - 1) // q + 1) * q, ((h - 1) // q + 1) * q, (ratio, (w, h), shrunk)


def pixtral_size(w: int, h: int, longest_edge: int, q: int) -> tuple[int, int]:
    """(w, h) of the resize: scaled down (floor) so neither side exceeds longest_edge, then each side rounded UP
    to a multiple of q (get_resize_output_image_size; small images are only rounded, never upscaled)."""
    rw, rh, _ = pixtral_size_trace(w, h, longest_edge, q)
    return rw, rh


def _pixtral_planner(name: str):
    def planner(w: int, h: int, p: dict[str, Any]) -> Plan:
        rw, rh = pixtral_size(w, h, p["longest_edge"], p["resize_patch_size"])
        if rw <= 0 or rh <= 0:
            raise PlanError(f"{name}: a {w}×{h} image shrinks to an empty {max(rw, 0)}×{max(rh, 0)} image at "
                            f"longest_edge {p['longest_edge']}; its aspect ratio must stay below {p['longest_edge']}:1")
        cell = p["patch_size"] * p["spatial_merge_size"]
        nh, nw = rh // cell, rw // cell
        if nh == 0:
            # replace_image_token writes no row, then sets replace_tokens[-1]: IndexError in the reference
            raise PlanError(f"{name}: a {w}×{h} image is resized to {rw}×{rh}, less than one {cell}-px token row; "
                            f"the processor fails (IndexError). Images need a resized height of at least {cell} px")
        notes = []
        if rh % cell or rw % cell:
            notes.append(f"the {p['spatial_merge_size']}×{p['spatial_merge_size']} patch merger drops the last "
                         f"{rw % cell} px columns and {rh % cell} px rows of the {rw}×{rh} view (no token covers them)")
        if nw == 0:
            notes.append(f"the {rw}-px wide view is narrower than one {cell}-px token: no [IMG] token, only the "
                         f"{nh} row markers")
        if cell != p["resize_patch_size"]:
            aw, ah = pixtral_size(w, h, p["longest_edge"], cell)
            if (aw, ah) != (rw, rh):
                notes.append(f"transformers' PixtralProcessor.__call__ passes patch_size·spatial_merge_size = {cell} "
                             f"to the image processor, which then resizes to {aw}×{ah} ({(ah // cell) * (aw // cell)} "
                             f"tokens), not the image processor's own {rw}×{rh} (resize_patch_size={cell} "
                             "reproduces that path)")
        # [IMG_BREAK] after each token row but the last, which ends with [IMG_END]: nh marker tokens
        return single_view_plan(name, w, h, p, (rw, rh), (nh, nw), text_tokens=nh, notes=tuple(notes))
    return planner


def _pixtral_explainer(name: str):
    plan_it = _pixtral_planner(name)

    def explain_it(w: int, h: int, p: dict[str, Any]) -> Explanation:
        found = plan_it(w, h, p)  # refuses what the planner refuses
        edge, q = p["longest_edge"], p["resize_patch_size"]
        rw, rh, (ratio, (sw, sh), shrunk) = pixtral_size_trace(w, h, edge, q)
        cell = p["patch_size"] * p["spatial_merge_size"]
        nh, nw = rh // cell, rw // cell
        tokens = {"tokens": float(found.token_count), "token rows": float(nh), "token cols": float(nw)}
        merger = (f"; the {p['spatial_merge_size']}×{p['spatial_merge_size']} merger drops {rw % cell} px of width "
                  f"and {rh % cell} px of height" if rh % cell or rw % cell else "")
        keep = Candidate(f"within longest_edge {edge}: each side rounded up to a multiple of {q}"
                         + ("" if shrunk else f": {rw}×{rh}"),
                         {"max(W, H) / longest_edge": ratio, **({} if shrunk else tokens)}, chosen=not shrunk,
                         grid=None if shrunk else found.grid,
                         note=(f"not taken: {max(w, h)} > {edge}" if shrunk else "never upscaled" + merger))
        shrink = Candidate(f"shrunk by {ratio:.4g} (sides floored: {sw}×{sh}), then rounded up to a multiple of {q}"
                           + (f": {rw}×{rh}" if shrunk else "") if shrunk else
                           "shrink by max(W, H) / longest_edge, then round up",
                           {"max(W, H) / longest_edge": ratio, **(tokens if shrunk else {})}, chosen=shrunk,
                           grid=found.grid if shrunk else None,
                           note=(merger.lstrip("; ") if shrunk else f"not taken: {max(w, h)} ≤ {edge}"))
        rule = (f"{'Pixtral' if name == 'pixtral' else 'Mistral 3'} shrinks the image only when a side exceeds "
                f"longest_edge {edge} (by max(W, H)/{edge}, sides floored), then rounds each side UP to a multiple of "
                f"{q}; tokens are {cell}-px cells, one [IMG_BREAK] / [IMG_END] per row.")
        why = (f"{max(w, h)} > {edge}, so it shrinks by {ratio:.4f} to {sw}×{sh}" if shrunk else
               f"{max(w, h)} ≤ {edge}, so it keeps its size")
        decision = (f"{why} and rounds up to {rw}×{rh}: {nh}×{nw} tokens of {cell} px = {found.token_count} "
                    f"+ {nh} row markers" + merger)
        return Explanation(name, (w, h), rule, (keep, shrink), decision)

    return explain_it


def _longest_edge_values(p: dict[str, Any], _max_tokens: int) -> range:
    q = p["resize_patch_size"]
    return range(q, 16384 + 1, q)


for _name, _edge, _patch, _merge, _summary, _model, _order in (
    ("pixtral", 1024, 16, 1,
     "Pixtral: aspect kept, longest edge ≤ 1024, sides rounded up to 16 px; one token per 16-px patch, "
     "[IMG_BREAK] after each row, [IMG_END] last",
     ReferenceModel(PIXTRAL_VIT, MISTRAL_NEMO_12B), 310),  # mistral-community/pixtral-12b
    ("mistral3", 1540, 14, 2,
     "Mistral-Small-3.1 (Mistral 3): Pixtral's resize with longest edge 1540 and 14-px rounding; the 2×2 patch "
     "merger gives one token per 28 px (odd last row/column dropped)",
     ReferenceModel(MISTRAL3_VIT, MISTRAL_SMALL_24B), 311),  # mistralai/Mistral-Small-3.1-24B-Instruct-2503
):
    register(StrategyInfo(
        name=_name,
        family="native resolution",
        summary=_summary,
        reference="Agrawal et al. 2024, Pixtral 12B; transformers models/pixtral image_processing_pil_pixtral.py : "
                  "get_resize_output_image_size, processing_pixtral.py : replace_image_token"
                  + ("; models/mistral3/configuration_mistral3.py" if _name == "mistral3" else ""),
        params={
            "longest_edge": ParamSpec("int", _edge, "longest side after the resize (size.longest_edge)",
                                      min=1, max=16384),
            "patch_size": ParamSpec("int", _patch, "ViT patch side", min=1, max=64),
            "spatial_merge_size": ParamSpec("int", _merge, "k × k patches merged into one token (1 = none)",
                                            min=1, max=8),
            "resize_patch_size": ParamSpec("int", _patch, "the sides are rounded up to multiples of this "
                                                          "(the image processor's patch_size)", min=1, max=256),
        },
        budget="longest_edge, in steps of resize_patch_size",
        planner=_pixtral_planner(_name),
        knob=BudgetKnob("longest_edge", "longest edge", _longest_edge_values, monotone=True),
        pixels=PixelRecipe(CLIP, resample="bicubic"),  # PixtralImageProcessorPil: BICUBIC, OpenAI CLIP mean/std
        reference_model=_model,
        row_break_token="[IMG_BREAK]",  # the last row's is [IMG_END]
        vectors=(_name,),
        order=_order,
        explainer=_pixtral_explainer(_name),
    ))

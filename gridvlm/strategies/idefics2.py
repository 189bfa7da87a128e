"""Idefics2: the image resized to a shortest/longest-edge band (aspect kept), 64 perceiver tokens per view;
optionally split into 4 quadrants of the original image plus the whole image, last.

Re-read from transformers 5.23: `models/idefics2/image_processing_pil_idefics2.py` (`get_resize_output_image_size`,
`split_images`, `_preprocess`) and `models/idefics2/processing_idefics2.py` (the `<fake_token_around_image>` /
`<image>` expansion). The rule differs from Idefics3's (`grids.py`), which rounds up to whole tiles: nothing shared.
"""

from __future__ import annotations

from typing import Any

from ..errors import PlanError
from ..geometry import Plan, make_tile, whole
from .gemma import square_grid
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register
from .reference import MISTRAL_7B, SIGLIP, SIGLIP_SO400M, ReferenceModel


def idefics2_size_trace(w: int, h: int, shortest_edge: int, longest_edge: int) -> tuple[int, int, tuple]:
    """`idefics2_size` with its path: (w, h, (branch, (w, h) after the cap)); branch is "kept" (the long side is
    within longest_edge), "width capped" or "height capped"."""
    if h == 0:
        raise PlanError("idefics2 cannot resize an image of height 0 (the reference divides by it)")
    aspect, branch = w / h, "kept"
    if w >= h and w > longest_edge:
        w, h, branch = longest_edge, int(longest_edge / aspect), "width capped"
    elif h > w and h > longest_edge:
        h, w, branch = longest_edge, int(longest_edge * aspect), "height capped"
    return max(w, shortest_edge), max(h, shortest_edge), (branch, (w, h))


def idefics2_size(w: int, h: int, shortest_edge: int, longest_edge: int) -> tuple[int, int]:
    """(w, h) after get_resize_output_image_size: the long side capped at longest_edge (int() of the aspect),
    then each side raised to at least shortest_edge (the aspect is not kept there)."""
    rw, rh, _ = idefics2_size_trace(w, h, shortest_edge, longest_edge)
    return rw, rh


def _idefics2_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    lo, hi, n = p["shortest_edge"], p["longest_edge"], p["tokens_per_view"]
    grid = square_grid(n)
    whole_size = idefics2_size(w, h, lo, hi)
    if not p["do_image_splitting"]:
        tile = make_tile(0, 0, 0, whole((w, h)), whole_size, n, grid)
        # <fake_token_around_image> <image>×64 <fake_token_around_image>
        return Plan("idefics2", p, (w, h), (1, 1), None, (tile,), None, None, n, {"tiles": n}, text_tokens=2)
    if h // 2 == 0:
        raise PlanError(f"idefics2: splitting a {w}×{h} image gives quadrants of height 0, which the reference "
                        "cannot resize (ZeroDivisionError); images need a height of at least 2 px to split")
    mw, mh = w // 2, h // 2
    tiles = []
    for r, (y0, y1) in enumerate(((0, mh), (mh, h))):
        for c, (x0, x1) in enumerate(((0, mw), (mw, w))):
            size = idefics2_size(x1 - x0, y1 - y0, lo, hi)
            tiles.append(make_tile(len(tiles), r, c, (x0, y0, x1, y1), size, n, grid))
    thumb = make_tile(4, -1, -1, whole((w, h)), whole_size, n, grid)
    notes = ()
    if mw == 0:
        notes = (f"a {w}-px wide image splits into quadrants of width 0 and {w}; the reference still resizes "
                 f"each to at least {lo} px",)
    # five fake-token pairs around the views collapse to 6 <fake_token_around_image>
    return Plan("idefics2", p, (w, h), (2, 2), None, tuple(tiles), thumb, "last", 5 * n,
                {"tiles": 4 * n, "thumbnail": n}, text_tokens=6, notes=notes)


def _idefics2_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    found = _idefics2_plan(w, h, p)  # refuses what the planner refuses
    lo, hi = p["shortest_edge"], p["longest_edge"]
    rw, rh, (branch, (cw, ch)) = idefics2_size_trace(w, h, lo, hi)
    split = p["do_image_splitting"]
    raised = [side for side, before in (("width", cw), ("height", ch)) if before < lo]
    raise_note = (f"then the {' and '.join(raised)} raised to shortest_edge {lo} (aspect not kept)" if raised else "")
    tail = ""
    if split:
        sizes = ", ".join(f"{t.input_size[0]}×{t.input_size[1]}" for t in found.tiles)
        tail = f"; split: 4 quadrants of the original resized to {sizes} by the same rule, the whole image last"
    tokens = {"tokens": float(found.token_count), "views": float(found.num_views)}
    branches = (
        ("kept", f"long side within longest_edge {hi}: size kept",
         f"not taken: the long side {max(w, h)} > {hi}"),
        ("width capped", f"width ≥ height and > {hi}: width {hi}, height int({hi} / aspect)",
         "not taken: " + (f"the long side {max(w, h)} ≤ {hi}" if max(w, h) <= hi else
                          "the height is the longer side")),
        ("height capped", f"height > width and > {hi}: height {hi}, width int({hi} · aspect)",
         "not taken: " + (f"the long side {max(w, h)} ≤ {hi}" if max(w, h) <= hi else
                          "the width is at least the height (the width test comes first)")),
    )
    candidates = []
    for name, label, other in branches:
        chosen = name == branch
        candidates.append(Candidate(
            label + (f" → {rw}×{rh}" if chosen else ""),
            {"long side": float(max(w, h)), "longest_edge": float(hi), **(tokens if chosen else {})},
            chosen=chosen, grid=found.grid if chosen else None,
            note="; ".join(x for x in (raise_note, tail.lstrip("; ")) if x) if chosen else other))
    rule = (f"Idefics2 caps the long side at longest_edge {hi} (the short side int() of the aspect; the width test "
            f"comes first, so a square is width-capped), then raises each side to at least shortest_edge {lo}. "
            + ("With do_image_splitting the 4 quadrants and the whole image each get that resize."
               if split else "One view, 64 perceiver tokens."))
    why = {"kept": f"the long side {max(w, h)} ≤ {hi}, so the size is kept",
           "width capped": f"the width {w} ≥ the height and > {hi}, so it is capped to {cw}×{ch}",
           "height capped": f"the height {h} > the width and > {hi}, so it is capped to {cw}×{ch}"}[branch]
    decision = (why + (f", {raise_note}: {rw}×{rh}" if raise_note else "") + f"{tail}; "
                f"{found.num_views} view{'s' * (found.num_views != 1)} × {p['tokens_per_view']} = "
                f"{found.token_count} tokens")
    return Explanation("idefics2", (w, h), rule, tuple(candidates), decision)


register(StrategyInfo(
    name="idefics2",
    family="variable slices",
    summary="Idefics2: aspect kept within 378–980 px, 64 perceiver tokens; optional split into 4 quadrants of the "
            "original plus the whole image last (320 tokens)",
    reference="Laurençon et al. 2024, What matters when building vision-language models? (Idefics2); transformers "
              "models/idefics2 image_processing_pil_idefics2.py : get_resize_output_image_size, split_images",
    params={
        "do_image_splitting": ParamSpec("bool", False, "4 quadrants + the whole image (the 8B checkpoints' "
                                                       "fine-tuning setting; off by default)"),
        "shortest_edge": ParamSpec("int", 378, "each side is raised to at least this (size.shortest_edge)",
                                   min=1, max=10**4),
        "longest_edge": ParamSpec("int", 980, "the long side is capped at this (size.longest_edge)",
                                  min=1, max=10**4),
        "tokens_per_view": ParamSpec("int", 64, "perceiver latents per view (image_seq_len)", min=1, max=10**5),
    },
    budget="do_image_splitting: 64 tokens without, 320 with",
    planner=_idefics2_plan,
    knob=BudgetKnob("do_image_splitting", "split into quadrants", lambda p, n: [False, True], monotone=True),
    # Idefics2ImageProcessorPil: BILINEAR, IMAGENET_STANDARD mean/std 0.5 (HuggingFaceM4/idefics2-8b likewise);
    # pixel_values there are zero-padded to the largest view, with a pixel_attention_mask
    pixels=PixelRecipe(SIGLIP, resample="bilinear", crop_first=True),
    reference_model=ReferenceModel(SIGLIP_SO400M, MISTRAL_7B),  # HuggingFaceM4/idefics2-8b
    vectors=("idefics2", "idefics2_split"),
    order=320,
    explainer=_idefics2_explain,
))

"""Ovis2: the fewest tiles whose pieces, each shrunk to fit 448 px, still cover 90 % of the image.

Two readings of one rule (families-2.md §17):

* ``variant="original"`` — AIDC-AI/Ovis v2.0 ``ovis/model/visual_tokenizer/base_visual_tokenizer.py``
  ``BaseVisualTokenizer.preprocess_image`` L107-201 (``_get_best_grid``, ``_partition``, ``_covering_area``,
  ``_preprocess``) and ``construct_image_placeholders`` L94-105. The image is cut into ``rows × cols`` pieces of
  the original image (``row_height = H // rows``, ``col_width = W // cols``, the last row / column takes the
  remainder); every piece, and the whole image before them, is letterboxed into 448²: long side 448, short side
  ``int(short / long · 448)``, centred at ``(448 − short) // 2``; the padding is 0 in normalised units.
* ``variant="transformers"`` — transformers 5.23 ``models/ovis2/image_processing_pil_ovis2.py``
  ``get_min_tile_covering_grid`` L101 and ``Ovis2ImageProcessorPil.crop_image_to_patches`` L180-240. The same
  covering grid ``(a, b)`` is unpacked as ``num_columns, num_rows = (a, b)`` (L203), so the layout is transposed:
  the whole image is squashed to ``448·a × 448·b`` (w × h) and cut into ``b`` rows × ``a`` columns; the
  thumbnail is the whole image squashed to 448². ``processing_ovis2.py`` ``replace_image_token`` L43-56 writes
  the placeholders.

Both: 448/14 = 32 patches, 2×2 merge → 16 × 16 = 256 visual tokens per view; the thumbnail comes first when
there is more than one tile. Markers: ``<IMG_START>`` 256 atoms ``<IMG_GRID>``, then per tile 256 atoms with
``<IMG_COL>`` between the tiles of a row and ``<IMG_ROW>`` between rows, then ``<IMG_END>``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, make_tile, whole
from .grids import resized_grid_plan
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register
from .reference import AIMV2_HUGE_448, CLIP, QWEN2_7B, ReferenceModel

# round(255 · CLIP mean): the original pads with 0 after normalising, i.e. with the mean colour
NORMALISED_ZERO_RGB = (123, 117, 104)


@lru_cache(maxsize=16)
def covering_candidates(max_tiles: int) -> tuple[tuple[int, int], ...]:
    """(a, b) with a·b ≤ max_tiles, a outer, stably sorted by a·b — the order both references evaluate."""
    grids = [(a, b) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1) if a * b <= max_tiles]
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def split_spans(length: int, parts: int) -> list[tuple[int, int]]:
    """Integer (start, end) of `parts` pieces of `length`: `length // parts` each, the last takes the rest."""
    step = length // parts
    return [(i * step, length if i == parts - 1 else (i + 1) * step) for i in range(parts)]


def _covered(w: int, h: int, side: int) -> float:
    """Area of a w × h piece after shrinking its long side to `side` (never enlarged), as both codes compute it."""
    w, h = max(w, h), min(w, h)
    if w > side:
        h = h / w * side
        w = side
    return w * h


def covering_grid(w: int, h: int, side: int, max_tiles: int, threshold: float) -> tuple[int, int]:
    """(a, b): pieces in `a` rows × `b` columns of the original image whose covered share exceeds `threshold`
    with the fewest pieces (then the largest share, then the first); else the largest share (then the fewest)."""
    return covering_search(w, h, side, max_tiles, threshold)[0]


@lru_cache(maxsize=4096)
def covering_search(w: int, h: int, side: int, max_tiles: int, threshold: float):
    """(best (a, b), every candidate's ((a, b), covered share) in order, whether any share exceeds the threshold)."""
    area = w * h
    good, every = [], []
    for a, b in covering_candidates(max_tiles):
        rows, cols = split_spans(h, a), split_spans(w, b)
        ratio = sum(_covered(x1 - x0, y1 - y0, side) for y0, y1 in rows for x0, x1 in cols) / area
        every.append(((a, b), ratio))
        if ratio > threshold:
            good.append(((a, b), ratio))
    if good:
        return min(good, key=lambda g: (g[0][0] * g[0][1], -g[1]))[0], tuple(every), True
    return min(every, key=lambda g: (-g[1], g[0][0] * g[0][1]))[0], tuple(every), False


def _ovis2_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    _ovis2_plan(w, h, p)  # the reference's refusals
    t, thr, hf = p["tile_size"], p["covering_threshold"], p["variant"] == "transformers"
    best, every, covered = covering_search(w, h, t, p["max_tiles"], thr)
    share = dict(every)[best]
    candidates = []
    for (a, b), ratio in every:
        grid = (b, a) if hf else (a, b)
        chosen = (a, b) == best
        note = ""
        if covered and ratio > thr and not chosen:
            n, nb = a * b, best[0] * best[1]
            note = ("covers enough, but more pieces than the winner" if n > nb else
                    "covers enough with as few pieces, but a smaller share than the winner" if ratio < share else
                    "covers enough with as few pieces and the same share; the first one wins")
        elif chosen and covered and sum(r > thr and g[0] * g[1] == a * b for g, r in every) > 1:
            note = "fewest pieces; among grids with that many, the largest share (then the first)"
        elif chosen and not covered:
            note = f"no grid covers more than {thr:g}: the largest share wins (then the fewest pieces)"
        layout = f"{a}×{b} pieces of the image" + (f", laid out as {b}×{a} tiles (the processor transposes)"
                                                   if hf else "")
        candidates.append(Candidate(layout, {"covered share": ratio, "pieces": a * b}, chosen, grid, note))
    rule = (f"the image is cut into a rows × b cols pieces (a·b ≤ {p['max_tiles']}); each piece is shrunk to fit "
            f"{t} px (never enlarged) and the share of the image's pixels they keep is the score; among grids "
            f"keeping more than {thr:g} the fewest pieces win (then the largest share, then the first), else the "
            "largest share" + ("; transformers' processor unpacks (a, b) as (cols, rows), so the tiles are the "
                               "transposed b×a layout" if hf else ""))
    a, b = best
    if covered:
        decision = (f"{sum(r > thr for _, r in every)} grids keep more than {thr:g} of the image; {a}×{b} does it "
                    f"with the fewest pieces ({a * b}, share {share:.4g})")
    else:
        decision = (f"no grid keeps more than {thr:g} of the image, so the largest share wins: {a}×{b} "
                    f"({share:.4g})")
    if hf:
        decision += f"; the transformers processor lays it out as {b}×{a} tiles"
    return Explanation("ovis2", (w, h), rule, tuple(candidates), decision + ".")


def letterbox(w: int, h: int, side: int) -> tuple[int, int, int, int]:
    """Where the original's `_preprocess` puts a w × h crop inside side²: long side `side`, short side
    int(short / long · side), centred with a floor offset."""
    if w == h:
        return (0, 0, side, side)
    if w > h:
        nh = int(h / w * side)
        y = (side - nh) // 2
        content = (0, y, side, y + nh)
    else:
        nw = int(w / h * side)
        x = (side - nw) // 2
        content = (x, 0, x + nw, side)
    if content[2] <= content[0] or content[3] <= content[1]:
        raise PlanError(
            f"ovis2 (original): a {w}×{h} piece is too thin to resize to {side} px on its long side — its short "
            f"side would be 0 px and the reference's image processor refuses it; images up to about "
            f"{side}:1 work")
    return content


def _markers(rows: int, cols: int) -> int:
    """<IMG_START>, <IMG_GRID>, <IMG_END>, plus <IMG_COL> between tiles of a row and <IMG_ROW> between rows."""
    return 3 + (rows * (cols - 1) + (rows - 1) if rows * cols > 1 else 0)


def _ovis2_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t, n = p["tile_size"], p["tokens_per_view"]
    g = math.isqrt(n)
    grid = (g, g) if g * g == n else (1, n)
    a, b = covering_grid(w, h, t, p["max_tiles"], p["covering_threshold"])
    if p["variant"] == "transformers":
        rows, cols = b, a  # num_columns, num_rows = get_min_tile_covering_grid(...)
        thumb = "first" if rows * cols > 1 else None
        return resized_grid_plan("ovis2", w, h, p, rows, cols, t, n, grid, thumb, text_tokens=_markers(rows, cols))
    rows, cols = a, b
    tiled = rows * cols > 1
    tiles = []
    for r, (y0, y1) in enumerate(split_spans(h, rows)):
        for c, (x0, x1) in enumerate(split_spans(w, cols)):
            tiles.append(make_tile(len(tiles) + tiled, r, c, (x0, y0, x1, y1), (t, t), n, grid,
                                   content_box=letterbox(x1 - x0, y1 - y0, t)))
    thumb = make_tile(0, -1, -1, whole((w, h)), (t, t), n, grid, content_box=letterbox(w, h, t)) if tiled else None
    tokens = {"thumbnail": n, "tiles": n * len(tiles)} if tiled else {"tiles": n}
    return Plan("ovis2", p, (w, h), (rows, cols), None, tuple(tiles), thumb, "first" if tiled else None,
                sum(tokens.values()), tokens, text_tokens=_markers(rows, cols))


register(StrategyInfo(
    name="ovis2",
    family="resize-and-tile",
    summary="Ovis2: the fewest (≤ 9) tiles whose pieces, shrunk to 448 px, cover > 90 % of the image; global view "
            "first; 256 tokens per view. 'original' letterboxes pieces of the image, 'transformers' squashes the "
            "image onto the transposed grid as the installed processor does",
    reference="Lu et al. 2024, Ovis; AIDC-AI/Ovis v2.0 base_visual_tokenizer.py preprocess_image; transformers "
              "models/ovis2 image_processing_pil_ovis2.py get_min_tile_covering_grid + crop_image_to_patches",
    params={
        "variant": ParamSpec("str", "transformers", "'transformers': the installed Ovis2ImageProcessorPil (grid "
                                                    "transposed, tiles squashed); 'original': AIDC-AI/Ovis v2.0 "
                                                    "(pieces letterboxed)", choices=("transformers", "original")),
        "tile_size": ParamSpec("int", 448, "vision encoder input side (aimv2-huge-patch14-448)", min=14, max=4096),
        "max_tiles": ParamSpec("int", 9, "most tiles (max_partition / max_patches)", min=1, max=36),
        "covering_threshold": ParamSpec("float", 0.9, "share of the image the pieces must cover", min=0.0, max=1.0),
        "tokens_per_view": ParamSpec("int", 256, "tokens per view ((448/14)² / 4, image_seq_length)",
                                     min=1, max=10**5),
    },
    budget="max_tiles",
    planner=_ovis2_plan,
    explainer=_ovis2_explain,
    knob=BudgetKnob("max_tiles", "most tiles", lambda p, n: range(1, 37), monotone=False),
    # CLIP mean/std (Ovis2ImageProcessorPil and the original's CLIPImageProcessor), bicubic; the original pads
    # with 0 after normalising, i.e. with the mean colour, and crops each piece before resizing it (the
    # transformers variant's views are the whole image or canvas cuts, which crop_first leaves alone)
    pixels=PixelRecipe(CLIP, resample="bicubic", pad_colour=NORMALISED_ZERO_RGB, crop_first=True),
    # AIDC-AI/Ovis2-8B: aimv2-huge-patch14-448 + Qwen2.5-7B (the same shape as Qwen2-7B)
    reference_model=ReferenceModel(AIMV2_HUGE_448, QWEN2_7B),
    vectors=("ovis2_hf", "ovis2_original"),
    order=440,
))

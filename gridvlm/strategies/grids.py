"""Resize-and-tile grids: the whole image is resized (aspect ratio not kept) to rows·T × cols·T and cut.

UReader / DocOwl 1.5 (shape-adaptive anchors), InternVL (closest aspect ratio), Idefics3 / SmolVLM
(longest edge, then round up to tiles), the naive fixed grid and LLaVA-Mini's quadrants. They differ
in how the grid is chosen and where the global view goes.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..errors import PlanError
from ..geometry import Plan, cut_canvas, make_tile, squashed_view, to_float32, whole
from .registry import (
    BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, at_most, register, subset_knob,
)
from .reference import (
    CLIP, CLIP_L_224, CLIP_L_336, IMAGENET, INTERNLM2_7B, INTERNVIT_300M, LLAMA3_8B, LLAMA_7B, SIGLIP,
    SIGLIP_SO400M, SMOLLM2_1_7B, VICUNA_7B, ReferenceModel,
)


def resized_grid_plan(name: str, w: int, h: int, p: dict, rows: int, cols: int, tile: int, per_view: int,
                      token_grid: tuple[int, int], thumbnail: str | None, text_tokens: int = 0,
                      stride: int | None = None, canvas: tuple[int, int] | None = None) -> Plan:
    """Plan for an image resized to fill a rows × cols grid of `tile` px tiles, plus an optional squashed thumbnail."""
    stride = stride or tile
    canvas = canvas or ((cols - 1) * stride + tile, (rows - 1) * stride + tile)
    content = (0, 0, canvas[0], canvas[1])
    first = 1 if thumbnail == "first" else 0
    tiles = cut_canvas(canvas, content, (w, h), rows, cols, (tile, tile), first, per_view, token_grid,
                       stride=(stride, stride))
    thumb = None
    if thumbnail:
        thumb = squashed_view(0 if first else len(tiles), (w, h), (tile, tile), per_view, token_grid)
    tokens = {"tiles": per_view * len(tiles)}
    if thumb:
        tokens = {"thumbnail": per_view, **tokens}
    return Plan(name, p, (w, h), (rows, cols), canvas, tuple(tiles), thumb, thumbnail if thumb else None,
                sum(tokens.values()), tokens, text_tokens=text_tokens, content_box=content)


# ---------------------------------------------------------------------------------------------
# UReader / DocOwl 1.5


_EPS32 = to_float32(1e-5)


def _iou_f32(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of boxes [0, 0, w, h] anchored at the origin, as torchvision-style box_iou computes it in float32."""
    inter = min(a[0], b[0]) * min(a[1], b[1])
    union = a[0] * a[1] + b[0] * b[1] - inter
    return to_float32(to_float32(inter) / to_float32(to_float32(union) + _EPS32))


def anchor_scores(w: int, h: int, anchors: list[list[int]], tile: int) -> list[tuple[float, float, float]]:
    """(shape IoU, resolution IoU, score = 100·shape IoU + IoU) of every anchor, in float32 as UReader's
    anchor_rank computes them, in the anchors' order."""
    ratio = to_float32(h / w)
    scored = []
    for r, c in anchors:
        aw, ah = c * tile, r * tile
        shape_h = int(to_float32(ratio * to_float32(aw)))  # assigned into an int64 tensor: truncation
        shape_iou, iou = _iou_f32((aw, ah), (aw, shape_h)), _iou_f32((aw, ah), (w, h))
        scored.append((shape_iou, iou, to_float32(to_float32(shape_iou * 100) + iou)))
    return scored


def _first_argmax(scores: list[float]) -> int:
    """Index of the highest score, the first one on ties (torch argmax over the anchors)."""
    best, best_score = 0, -math.inf
    for i, score in enumerate(scores):
        if score > best_score:
            best, best_score = i, score
    return best


def anchor_rank(w: int, h: int, anchors: list[list[int]], tile: int) -> int:
    """Index of the anchor (rows, cols) that UReader's shape-adaptive cropping picks: shape first, then size."""
    return _first_argmax([s for _, _, s in anchor_scores(w, h, anchors, tile)])


UREADER_ANCHORS = [
    [1, 1], [1, 2], [2, 1], [1, 3], [3, 1], [1, 4], [2, 2], [4, 1], [1, 5], [5, 1], [1, 6], [2, 3], [3, 2],
    [6, 1], [1, 7], [7, 1], [1, 8], [2, 4], [4, 2], [8, 1], [1, 9], [3, 3], [9, 1], [1, 10], [2, 5], [5, 2],
    [10, 1], [1, 11], [11, 1], [2, 6], [3, 4], [4, 3], [6, 2], [2, 7], [7, 2], [3, 5], [5, 3], [2, 8], [4, 4],
    [8, 2], [2, 9], [3, 6], [6, 3], [9, 2], [2, 10], [4, 5], [5, 4], [10, 2],
]  # rows × cols, configs/sft/release.yaml order
DOCOWL_GRID_9 = [
    [1, 1], [1, 2], [2, 1], [1, 3], [3, 1], [2, 2], [1, 4], [4, 1], [1, 5], [5, 1], [1, 6], [6, 1], [2, 3],
    [3, 2], [1, 7], [7, 1], [4, 2], [2, 4], [1, 8], [8, 1], [3, 3], [1, 9], [9, 1],
]  # rows × cols, DocOwl1.5 processor.py grid_dict['grid_9']


def _shape_adaptive_plan(name: str, markers: bool):
    def planner(w: int, h: int, p: dict[str, Any]) -> Plan:
        rows, cols = p["anchors"][anchor_rank(w, h, p["anchors"], p["tile_size"])]
        g = math.isqrt(p["tokens_per_view"])
        grid = (g, g) if g * g == p["tokens_per_view"] else (1, p["tokens_per_view"])
        # DocOwl 1.5 puts <global_img> / <crop_img_row{r}_col{c}> before each view's <|image|>
        text = (rows * cols + 1) if markers else 0
        return resized_grid_plan(name, w, h, p, rows, cols, p["tile_size"], p["tokens_per_view"], grid, "first",
                                 text_tokens=text)
    return planner


def _tiles_label(rows: int, cols: int, tile: int) -> str:
    return f"{rows}×{cols} tiles on a {cols * tile}×{rows * tile} canvas"


def _shape_adaptive_explainer(name: str):
    def explainer(w: int, h: int, p: dict[str, Any]) -> Explanation:
        anchors, t = p["anchors"], p["tile_size"]
        scored = anchor_scores(w, h, anchors, t)
        best = _first_argmax([s for _, _, s in scored])
        top = scored[best][2]
        tied = [i for i, (_, _, s) in enumerate(scored) if s == top and i != best]
        candidates = []
        for i, ((r, c), (shape_iou, iou, score)) in enumerate(zip(anchors, scored)):
            note = ""
            if i == best and tied:
                note = (f"ties {', '.join(f'{anchors[j][0]}×{anchors[j][1]}' for j in tied)} on the score; "
                        "argmax keeps the first in the anchor list")
            elif i in tied:
                note = (f"ties the winner {anchors[best][0]}×{anchors[best][1]} on the score but comes later in "
                        "the anchor list; argmax keeps the first")
            candidates.append(Candidate(
                _tiles_label(r, c, t),
                {"shape IoU": shape_iou, "resolution IoU": iou, "score (100·shape IoU + IoU)": score},
                chosen=i == best, grid=(r, c), note=note))
        r, c = anchors[best]
        decision = (f"{r}×{c} (anchor {best + 1} of {len(anchors)}) has the highest score {top:.6g}: shape IoU "
                    f"{scored[best][0]:.4g}, resolution IoU {scored[best][1]:.4g}")
        if tied:
            decision += (f"; {len(tied)} later anchor{'s' * (len(tied) != 1)} tie on the score and the reference "
                         "(torch argmax) keeps the first one in the list")
        decision += f". The image is stretched to {c * t}×{r * t}, cut into {r}×{c} tiles, the global view first."
        rule = (f"{name} scores every anchor grid (rows×cols of {t}-px tiles) by 100·shape IoU + resolution IoU "
                "(float32 box IoUs at the origin: the anchor against the image's aspect at the anchor's width, and "
                "against the image's own size); the highest wins, the first in the list on ties.")
        return Explanation(name, (w, h), rule, tuple(candidates), decision)
    return explainer


for _name, _anchors, _tile, _tokens, _summary, _ref, _vectors, _order in (
    ("ureader", UREADER_ANCHORS, 224, 65,
     "UReader shape-adaptive cropping: the anchor grid (≤ 20 tiles of 224 px) that best matches shape, then "
     "size; image stretched onto it; squashed global view first; 65 tokens per view",
     "Ye et al. 2023, UReader; X-PLUG/mPLUG-DocOwl UReader doc_processor.py anchor_rank, configs/sft/release.yaml",
     ("ureader",), 80),
    ("docowl-1.5", DOCOWL_GRID_9, 448, 256,
     "DocOwl 1.5: shape-adaptive cropping over ≤ 9 tiles of 448 px, squashed global view first, H-Reducer to "
     "256 tokens per view, crop-position text markers",
     "Hu et al. 2024, mPLUG-DocOwl 1.5; X-PLUG/mPLUG-DocOwl DocOwl1.5/mplug_docowl/processor.py",
     ("docowl15",), 90),
):
    register(StrategyInfo(
        name=_name,
        family="resize-and-tile",
        summary=_summary,
        reference=_ref,
        params={
            "anchors": ParamSpec("pairs", _anchors, "candidate grids as [rows, cols], in the reference's order"),
            "tile_size": ParamSpec("int", _tile, "vision encoder input side", min=14, max=4096),
            "tokens_per_view": ParamSpec("int", _tokens, "visual tokens per view after the model's compression",
                                         min=1, max=10**5),
        },
        budget="anchors: the anchor list restricted to grids of at most k tiles",
        planner=_shape_adaptive_plan(_name, markers=_name == "docowl-1.5"),
        explainer=_shape_adaptive_explainer(_name),
        knob=subset_knob("anchors"),
        pixels=PixelRecipe(CLIP),  # UReader doc_processor / DocOwl1.5 DocProcessor Normalize (CLIP ViT-L/14)
        # UReader: mPLUG-Owl (ViT-L/14 + LLaMA-7B); DocOwl1.5: mPLUG-Owl2's ViT-L/14 + LLaMA-7B
        reference_model=ReferenceModel(CLIP_L_224, LLAMA_7B),
        vectors=_vectors,
        order=_order,
    ))


# ---------------------------------------------------------------------------------------------
# InternVL


INTERNVL_CLOSER, INTERNVL_TIE_TAKEN = "closer", "tie taken"
INTERNVL_TIE_REFUSED, INTERNVL_FARTHER = "tie refused", "farther"


def aspect_ratio_search(w: int, h: int, ratios, tile: int):
    """`find_closest_aspect_ratio` step by step (InternVL, GOT-OCR2 and the tilers built on it, Phi-4-MM, LFM2-VL,
    DeepSeek-OCR; each passes its own candidate order): the nearest w/h wins; on
    an exact tie the later (bigger) grid replaces the best so far only when the image has more than half its pixels.

    Returns (best (cols, rows), steps): one (ratio, distance, outcome, best before it) per ratio in the given
    order, outcome "closer", "tie-taken", "tie-kept" or "farther" — what the planner took and `explain` shows.
    """
    aspect, area = w / h, w * h
    best, best_diff = (1, 1), float("inf")
    steps = []
    for ratio in ratios:
        diff = abs(aspect - ratio[0] / ratio[1])
        before = best
        if diff < best_diff:
            best, best_diff, outcome = ratio, diff, "closer"
        elif diff == best_diff:
            if area > 0.5 * tile * tile * ratio[0] * ratio[1]:
                best, outcome = ratio, "tie-taken"
            else:
                outcome = "tie-kept"
        else:
            outcome = "farther"
        steps.append((ratio, diff, outcome, before))
    return best, steps


def internvl_ratios(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """InternVL's and GOT-OCR2's candidate grids (cols, rows): cols outer, rows inner, min ≤ cols·rows ≤ max, stably
    sorted by cols·rows (get_all_supported_aspect_ratios)."""
    pairs = [(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1)
             if min_tiles <= c * r <= max_tiles]
    return tuple(sorted(pairs, key=lambda cr: cr[0] * cr[1]))


_INTERNVL_OUTCOMES = {"closer": INTERNVL_CLOSER, "tie-taken": INTERNVL_TIE_TAKEN, "tie-kept": INTERNVL_TIE_REFUSED,
                      "farther": INTERNVL_FARTHER}


def internvl_candidates(w: int, h: int, tile: int, min_tiles: int, max_tiles: int
                        ) -> tuple[list[tuple[int, int, float, str]], tuple[int, int]]:
    """InternVL's find_closest_aspect_ratio, step by step: every (cols, rows, aspect distance, what happened) in
    the order it weighs them (by tile count, width-major inside one count), and the (cols, rows) it ends with.

    What happened is INTERNVL_CLOSER (a new closest, taken), INTERNVL_TIE_TAKEN / INTERNVL_TIE_REFUSED (equal
    distance: the bigger grid is taken only if W·H > 0.5·T²·c·r) or INTERNVL_FARTHER.
    """
    best, steps = aspect_ratio_search(w, h, internvl_ratios(min_tiles, max_tiles), tile)
    return [(c, r, diff, _INTERNVL_OUTCOMES[outcome]) for (c, r), diff, outcome, _ in steps], best


def internvl_grid(w: int, h: int, tile: int, min_tiles: int, max_tiles: int) -> tuple[int, int]:
    """(cols, rows) closest in aspect ratio; on a tie the bigger grid wins only if the image has the pixels."""
    return internvl_candidates(w, h, tile, min_tiles, max_tiles)[1]


def internvl_explanation(name: str, w: int, h: int, tile: int, min_tiles: int, max_tiles: int) -> Explanation:
    """Why InternVL's rule (also GOT-OCR2's and the other tilers that reuse it) picks its grid for a W×H image."""
    steps, best = internvl_candidates(w, h, tile, min_tiles, max_tiles)
    area, aspect = w * h, w / h
    winner = next(i for i, (c, r, _, _) in reversed(list(enumerate(steps))) if (c, r) == best)
    best_c, best_r = best
    best_d = steps[winner][2]
    candidates = []
    holder = None  # the grid held as closest when each candidate is weighed
    for i, (c, r, d, what) in enumerate(steps):
        need = 0.5 * tile * tile * c * r
        if what == INTERNVL_CLOSER:
            note = "closest so far: taken"
        elif what == INTERNVL_TIE_TAKEN:
            note = (f"ties {holder[1]}×{holder[0]} on aspect distance; area rule: W·H = {area:,} > 0.5·T²·tiles = "
                    f"{need:,.0f}, so the bigger grid is taken")
        elif what == INTERNVL_TIE_REFUSED:
            note = (f"ties {holder[1]}×{holder[0]} on aspect distance; area rule: W·H = {area:,} ≤ "
                    "0.5·T²·tiles = "
                    f"{need:,.0f}, the image lacks the pixels, {holder[1]}×{holder[0]} stays")
        else:
            note = ""
        if what in (INTERNVL_CLOSER, INTERNVL_TIE_TAKEN):
            holder = (c, r)
        candidates.append(Candidate(
            _tiles_label(r, c, tile),
            {"grid aspect (cols/rows)": c / r, "aspect distance": d, "tiles": c * r,
             "area rule (0.5·T²·tiles)": need},
            chosen=i == winner, grid=(r, c), note=note))
    decision = (f"{best_r}×{best_c} ({best_c * best_r} tile{'s' * (best_c * best_r != 1)}) is the closest to the "
                f"image's aspect {aspect:.4g}: distance {best_d:.4g}")
    ties = [(c, r, what) for c, r, d, what in steps if d == best_d and (c, r) != best]
    taken = [f"{r}×{c}" for c, r, what in ties if what != INTERNVL_TIE_REFUSED and c * r < best_c * best_r]
    refused = [f"{r}×{c}" for c, r, what in ties if what == INTERNVL_TIE_REFUSED]
    if steps[winner][3] == INTERNVL_TIE_TAKEN:
        decision += (f"; it ties {', '.join(taken)} and the area rule takes the bigger grid because the image has the "
                     f"pixels (W·H = {area:,} > 0.5·T²·{best_c * best_r} = "
                     f"{0.5 * tile * tile * best_c * best_r:,.0f})")
    if refused:
        decision += (f"; {', '.join(refused)} tie{'s' * (len(refused) == 1)} on distance but the area rule refuses "
                     f"{'it' if len(refused) == 1 else 'them'}: W·H = {area:,} is not above 0.5·T²·tiles")
    if len(steps) and steps[winner][3] == INTERNVL_CLOSER and not refused and not ties:
        decision += "; no other grid ties it"
    decision += "."
    rule = (f"{name} weighs every grid of {min_tiles}–{max_tiles} {tile}-px tiles by tile count (rows×cols, width-"
            "major within a count), keeping the one whose cols/rows is closest to W/H; on an equal distance the "
            "bigger grid replaces it only if W·H > 0.5·T²·tiles (the area rule).")
    return Explanation(name, (w, h), rule, tuple(candidates), decision)


def _internvl_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t = p["tile_size"]
    cols, rows = internvl_grid(w, h, t, p["min_tiles"], p["max_tiles"])
    g = math.isqrt(p["tokens_per_view"])
    grid = (g, g) if g * g == p["tokens_per_view"] else (1, p["tokens_per_view"])
    thumb = "last" if p["thumbnail"] and rows * cols != 1 else None
    return resized_grid_plan("internvl", w, h, p, rows, cols, t, p["tokens_per_view"], grid, thumb, text_tokens=2)


register(StrategyInfo(
    name="internvl",
    family="resize-and-tile",
    summary="InternVL dynamic tiling: the grid of ≤ 12 448-px tiles closest to the image's aspect ratio, image "
            "stretched onto it, squashed thumbnail last (none for 1×1); 256 tokens per view",
    reference="Chen et al. 2024, InternVL 1.5; OpenGVLab/InternVL dataset.py dynamic_preprocess, transformers "
              "models/got_ocr2 get_optimal_tiled_canvas",
    params={
        "min_tiles": ParamSpec("int", 1, "fewest tiles", min=1, max=64),
        "max_tiles": ParamSpec("int", 12, "most tiles (model-card default; training used 6, checkpoints carry "
                                          "max_dynamic_patch)", min=1, max=64),
        "thumbnail": ParamSpec("bool", True, "append the squashed whole image when the grid is not 1×1"),
        "tile_size": ParamSpec("int", 448, "vision encoder input side", min=14, max=4096),
        "tokens_per_view": ParamSpec("int", 256, "tokens per view after pixel shuffle ((448/14)² / 4)",
                                     min=1, max=10**5),
    },
    budget="max_tiles",
    planner=_internvl_plan,
    explainer=lambda w, h, p: internvl_explanation("internvl", w, h, p["tile_size"], p["min_tiles"], p["max_tiles"]),
    knob=BudgetKnob("max_tiles", "most tiles", lambda p, n: range(p["min_tiles"], 65), monotone=False),
    check=at_most("internvl", "min_tiles", "max_tiles"),
    pixels=PixelRecipe(IMAGENET),  # InternVL build_transform IMAGENET_MEAN/STD; OpenGVLab/InternVL3-*-hf
    reference_model=ReferenceModel(INTERNVIT_300M, INTERNLM2_7B),  # OpenGVLab/InternVL2_5-8B
    vectors=("internvl_hf", "internvl_original", "internvl_hf_class"),
    order=100,
))


# ---------------------------------------------------------------------------------------------
# Idefics3 / SmolVLM

MAX_IMAGE_SIZE = 4096  # transformers' Idefics3 cap on the resized longest edge


def idefics3_sizes(w: int, h: int, longest_edge: int, tile: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((w1, h1) after the longest-edge resize, (w2, h2) after rounding up to whole tiles)."""
    aspect = w / h
    if w >= h:
        w1, h1 = longest_edge, int(longest_edge / aspect)
        h1 += h1 % 2
    else:
        h1, w1 = longest_edge, int(longest_edge * aspect)
        w1 += w1 % 2
    w1, h1 = max(w1, 1), max(h1, 1)
    aspect = w1 / h1
    if w1 >= h1 and w1 > MAX_IMAGE_SIZE:
        w1, h1 = MAX_IMAGE_SIZE, max(int(MAX_IMAGE_SIZE / aspect), 1)
    elif h1 > w1 and h1 > MAX_IMAGE_SIZE:
        h1, w1 = MAX_IMAGE_SIZE, max(int(MAX_IMAGE_SIZE * aspect), 1)
    aspect = w1 / h1
    if w1 >= h1:
        w2 = math.ceil(w1 / tile) * tile
        h2 = math.ceil(int(w2 / aspect) / tile) * tile
    else:
        h2 = math.ceil(h1 / tile) * tile
        w2 = math.ceil(int(h2 * aspect) / tile) * tile
    return (w1, h1), (w2, h2)


def idefics3_branch(name: str, w: int, h: int, p: dict[str, Any]
                    ) -> tuple[tuple[int, int], tuple[int, int], bool]:
    """(longest-edge size, tile-rounded size, whether the image is split): the branch Idefics3's processor takes."""
    t = p["tile_size"]
    first, (w2, h2) = idefics3_sizes(w, h, p["longest_edge"], t)
    if w2 < 1 or h2 < 1:
        raise PlanError(f"{name}: a {w}×{h} image rounds to an empty {w2}×{h2} image at longest_edge "
                        f"{p['longest_edge']}")
    return first, (w2, h2), p["do_image_splitting"] and (w2 > t or h2 > t)


def _idefics_plan(name: str):
    def planner(w: int, h: int, p: dict[str, Any]) -> Plan:
        t, n = p["tile_size"], p["tokens_per_tile"]
        g = math.isqrt(n)
        grid = (g, g) if g * g == n else (1, n)
        _, (w2, h2), split = idefics3_branch(name, w, h, p)
        if split:
            rows, cols = h2 // t, w2 // t
            # per row: rows·(cols·(<fake><row_r_col_c>) + '\n'), then '\n<fake><global-img>' … '<fake>'
            return resized_grid_plan(name, w, h, p, rows, cols, t, n, grid, "last",
                                     text_tokens=3 + rows * (2 * cols + 1), canvas=(w2, h2))
        tile = make_tile(0, 0, 0, whole((w, h)), (t, t), n, grid)
        return Plan(name, p, (w, h), (1, 1), None, (tile,), None, None, n, {"tiles": n}, text_tokens=3)
    return planner


def _idefics_explainer(name: str):
    def explainer(w: int, h: int, p: dict[str, Any]) -> Explanation:
        t, n, edge = p["tile_size"], p["tokens_per_tile"], p["longest_edge"]
        (w1, h1), (w2, h2), split = idefics3_branch(name, w, h, p)
        rows, cols = h2 // t, w2 // t
        scale = edge / max(w, h)
        steps = (f"longest edge to {edge} ({'up' if scale > 1 else 'down' if scale < 1 else 'no'}scaling ×"
                 f"{scale:.3g}, the short side rounded up to even): {w1}×{h1}; rounded up to whole {t}-px tiles: "
                 f"{w2}×{h2}")
        split_note = ("" if split else "not taken: " + ("do_image_splitting is False" if not p["do_image_splitting"]
                                                        else f"the rounded image fits one {t}-px tile"))
        one_note = ("" if not split else f"not taken: the rounded image {w2}×{h2} is larger than one {t}×{t} tile")
        candidates = (
            Candidate(f"split: {rows}×{cols} tiles on a {w2}×{h2} canvas + global view last",
                      {"canvas width": w2, "canvas height": h2, "tiles": rows * cols, "views": rows * cols + 1,
                       "visual tokens": n * (rows * cols + 1)},
                      chosen=split, grid=(rows, cols), note=split_note),
            Candidate(f"no split: the whole image squashed to one {t}×{t} view",
                      {"views": 1, "visual tokens": n}, chosen=not split, grid=(1, 1), note=one_note),
        )
        if split:
            decision = (f"{steps}; that is larger than one tile, so it is split into {rows}×{cols} tiles and the "
                        f"resized image squashed to {t}×{t} is appended last: {rows * cols + 1} views.")
            if scale > 1:
                decision += f" Small images are upscaled first: the {w}×{h} image is enlarged to {w1}×{h1}."
        elif not p["do_image_splitting"]:
            decision = "do_image_splitting is False: one squashed view, whatever the size."
        else:
            decision = f"{steps}; that fits one {t}×{t} tile, so the image is one squashed view."
        rule = (f"{name} resizes the longest edge to {edge} (up or down), rounds both sides up to whole {t}-px tiles "
                f"(aspect stretched by under a tile), and splits only if the result is larger than one tile; the "
                "grid is the rounded size in tiles.")
        return Explanation(name, (w, h), rule, candidates, decision)
    return explainer


# SigLIP mean/std 0.5 and Lanczos (Idefics3ImageProcessorPil; checkpoints carry "resample": 1). The global view
# squashes the already-resized canvas, not the original.
_IDEFICS_PIXELS = PixelRecipe(SIGLIP, resample="lanczos", thumbnail_from_canvas=True)


def _idefics_pixels(base: PixelRecipe, plan: Plan) -> PixelRecipe:
    """The reference resizes twice (longest edge first, then the tile-rounded size); the exact path does too."""
    first, _ = idefics3_sizes(*plan.image_size, plan.params["longest_edge"], plan.params["tile_size"])
    return replace(base, first_resize=first)


for _name, _edge, _tile, _tokens, _summary, _reference_model, _vectors, _order in (
    ("idefics3", 1456, 364, 169,
     "Idefics3: longest edge resized to 1456 (up or down), rounded up to whole 364-px tiles, global view last; "
     "169 tokens per view",
     ReferenceModel(SIGLIP_SO400M, LLAMA3_8B), ("idefics3",), 130),  # HuggingFaceM4/Idefics3-8B-Llama3
    ("smolvlm", 1536, 384, 81,
     "SmolVLM: Idefics3's splitting with 384-px tiles and longest edge 1536 (SmolVLM2-256M/500M: 2048/512/64); "
     "81 tokens per view",
     ReferenceModel(SIGLIP_SO400M, SMOLLM2_1_7B), ("smolvlm_instruct", "smolvlm2_256m"), 140),  # SmolVLM-Instruct
):
    register(StrategyInfo(
        name=_name,
        family="resize-and-tile",
        summary=_summary,
        reference="Laurençon et al. 2024, Idefics3 / Marafioti et al. 2025, SmolVLM; transformers models/idefics3 "
                  "image_processing_pil_idefics3.py",
        params={
            "longest_edge": ParamSpec("int", _edge, "the image's longest edge is resized to this (size.longest_edge)",
                                      min=1, max=MAX_IMAGE_SIZE),
            "tile_size": ParamSpec("int", _tile, "tile side (max_image_size.longest_edge)", min=14, max=4096),
            "tokens_per_tile": ParamSpec("int", _tokens, "tokens per view after pixel shuffle (image_seq_len)",
                                         min=1, max=10**5),
            "do_image_splitting": ParamSpec("bool", True, "split into tiles; False = one squashed view"),
        },
        budget="longest_edge, in whole tiles",
        planner=_idefics_plan(_name),
        explainer=_idefics_explainer(_name),
        pixels=_IDEFICS_PIXELS,
        pixels_for=_idefics_pixels,
        reference_model=_reference_model,
        vectors=_vectors,
        order=_order,
        knob=BudgetKnob("longest_edge", "longest edge in tiles",
                        lambda p, n: [k * p["tile_size"] for k in range(1, MAX_IMAGE_SIZE // p["tile_size"] + 1)],
                        monotone=True),
    ))


# ---------------------------------------------------------------------------------------------
# The naive fixed grid (teaching baseline, no reference code)


def fixed_grid_shape(w: int, h: int, p: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int], int]:
    """((rows, cols) the image needs: ceil(H/T) × ceil(W/T), (rows, cols) used, the per-side clamp ⌊√max_tiles⌋);
    explicit rows/cols replace the automatic ones."""
    t = p["tile_size"]
    side = math.isqrt(p["max_tiles"])
    need = (math.ceil(h / t), math.ceil(w / t))
    rows = p["rows"] if p["rows"] is not None else min(need[0], side)
    cols = p["cols"] if p["cols"] is not None else min(need[1], side)
    return need, (rows, cols), side


def _fixed_grid_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t, o = p["tile_size"], p["overlap"]
    _, (rows, cols), _ = fixed_grid_shape(w, h, p)
    if rows * cols > p["max_tiles"]:
        raise PlanError(f"fixed-grid: rows × cols = {rows}×{cols} = {rows * cols} tiles exceeds max_tiles="
                        f"{p['max_tiles']}; lower rows/cols or raise max_tiles")
    stride = t - o
    g = t // p["patch_size"]
    per_view = g * g
    extent = ((cols - 1) * stride + t, (rows - 1) * stride + t)
    thumbnail = "last" if p["thumbnail"] else None
    if p["resize"]:
        return resized_grid_plan("fixed-grid", w, h, p, rows, cols, t, per_view, (g, g), thumbnail,
                                 stride=stride, canvas=extent)
    if (cols - 1) * stride >= w or (rows - 1) * stride >= h:
        raise PlanError(f"fixed-grid: a {rows}×{cols} grid of {t}-px tiles (stride {stride}) leaves whole tiles "
                        f"outside a {w}×{h} image; use fewer rows/cols or resize=True")
    # Tiles are cut from the original pixels; a tile running past the edge is zero-padded there.
    content = (0, 0, w, h)
    first = 0
    tiles = cut_canvas(extent, content, (w, h), rows, cols, (t, t), first, per_view, (g, g), stride=(stride, stride))
    covered = (min(w, extent[0]), min(h, extent[1]))
    notes = ()
    if covered != (w, h):
        notes = (f"the clamped {rows}×{cols} grid covers only {covered[0]}×{covered[1]} of the {w}×{h} image",)
    thumb = squashed_view(len(tiles), (w, h), (t, t), per_view, (g, g)) if thumbnail else None
    tokens = {"tiles": per_view * len(tiles), **({"thumbnail": per_view} if thumb else {})}
    return Plan("fixed-grid", p, (w, h), (rows, cols), extent, tuple(tiles), thumb, thumbnail, sum(tokens.values()),
                tokens, content_box=content, notes=notes)


def _fixed_grid_explainer(w: int, h: int, p: dict[str, Any]) -> Explanation:
    _fixed_grid_plan(w, h, p)  # refuses what the planner refuses (too many tiles, tiles off the image)
    t = p["tile_size"]
    (need_r, need_c), (rows, cols), side = fixed_grid_shape(w, h, p)
    auto = (min(need_r, side), min(need_c, side))
    given = p["rows"] is not None or p["cols"] is not None

    def coverage(r: int, c: int) -> float:
        if p["resize"]:
            return 1.0
        stride = t - p["overlap"]
        return min(w, (c - 1) * stride + t) * min(h, (r - 1) * stride + t) / (w * h)

    def scores(r: int, c: int) -> dict[str, float]:
        return {"rows": r, "cols": c, "tiles": r * c, "image covered": coverage(r, c)}

    clamped = auto != (need_r, need_c)
    candidates = [Candidate(f"the grid the image needs: ceil(H/{t})×ceil(W/{t}) = {need_r}×{need_c}",
                            scores(need_r, need_c), chosen=not clamped and not given, grid=(need_r, need_c),
                            note=f"clamped: more than ⌊√max_tiles⌋ = {side} per side" if clamped else "")]
    if clamped:
        candidates.append(Candidate(f"clamped to at most {side} per side: {auto[0]}×{auto[1]}", scores(*auto),
                                    chosen=not given, grid=auto,
                                    note=f"max_tiles = {p['max_tiles']} allows ⌊√{p['max_tiles']}⌋ = {side} per "
                                         "side"))
    if given:
        candidates.append(Candidate(f"as given (rows={p['rows']}, cols={p['cols']}): {rows}×{cols}",
                                    scores(rows, cols), chosen=True, grid=(rows, cols),
                                    note="explicit rows/cols replace the automatic ones"))
    if given:
        decision = f"rows/cols were given, so the grid is {rows}×{cols}"
    elif clamped:
        decision = (f"the image needs {need_r}×{need_c} tiles of {t} px, but each side is clamped to "
                    "⌊√max_tiles⌋ = "
                    f"{side}: {rows}×{cols}")
    else:
        decision = f"the image needs {need_r}×{need_c} tiles of {t} px, within the clamp of {side} per side"
    cover = coverage(rows, cols)
    if cover < 1:
        decision += f"; the tiles are cut from the original pixels and cover only {cover:.1%} of the image"
    decision += "."
    rule = (f"fixed-grid takes ceil(H/T) rows and ceil(W/T) columns of {t}-px tiles, each clamped to "
            "⌊√max_tiles⌋ (explicit rows/cols replace them); nothing is scored.")
    return Explanation("fixed-grid", (w, h), rule, tuple(candidates), decision)


def _check_fixed_grid(p: dict[str, Any]) -> None:
    t = p["tile_size"]
    if not 0 <= p["overlap"] <= t / 2:
        raise PlanError(f"fixed-grid: overlap must be between 0 and tile_size/2 = {t // 2} px, got {p['overlap']}")


register(StrategyInfo(
    name="fixed-grid",
    family="fixed grid",
    summary="Naive fixed grid: cut the original pixels into 336-px tiles (or resize onto the grid), optional "
            "overlap and squashed thumbnail last; 576 tokens per view",
    reference="the 'LLaVA Image Grid Slicing Strategy' write-up (teaching baseline; no reference code)",
    params={
        "tile_size": ParamSpec("int", 336, "tile side", min=14, max=4096),
        "rows": ParamSpec("int", None, "grid rows; None = ceil(height / tile_size), clamped", min=1, max=64,
                          nullable=True),
        "cols": ParamSpec("int", None, "grid columns; None = ceil(width / tile_size), clamped", min=1, max=64,
                          nullable=True),
        "max_tiles": ParamSpec("int", 16, "most tiles; the automatic grid clamps each side to floor(√max_tiles)",
                               min=1, max=1024),
        "overlap": ParamSpec("int", 0, "pixels shared by neighbouring tiles (stride = tile_size − overlap)",
                             min=0, max=2048),
        "resize": ParamSpec("bool", False, "resize the whole image onto the grid first (aspect not kept)"),
        "thumbnail": ParamSpec("bool", False, "append the whole image squashed to one tile, last"),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
    },
    budget="max_tiles",
    planner=_fixed_grid_plan,
    explainer=_fixed_grid_explainer,
    pixels=PixelRecipe(CLIP),  # a teaching baseline on LLaVA's CLIP ViT-L/14-336 tiles
    reference_model=ReferenceModel(CLIP_L_336, VICUNA_7B),  # a LLaVA-1.5-7B style model fed a fixed grid
    order=20,
    # max_tiles acts through floor(√max_tiles) per side, so only perfect squares give different plans
    knob=BudgetKnob("max_tiles", "most tiles", lambda p, n: [k * k for k in range(1, 33)], monotone=False),
    check=_check_fixed_grid,
))


# ---------------------------------------------------------------------------------------------
# LLaVA-Mini


def _llava_mini_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t = p["tile_size"]
    g = t // p["patch_size"]
    tiles = []
    for r in range(2):
        for c in range(2):
            box = (c * w / 2, r * h / 2, (c + 1) * w / 2, (r + 1) * h / 2)
            tiles.append(make_tile(1 + len(tiles), r, c, box, (t, t), 0, (g, g)))
    thumb = make_tile(0, -1, -1, whole((w, h)), (t, t), 0, (g, g))
    n = p["compression_tokens"]
    note = (f"5 views × {g * g} = {5 * g * g} vision features go into the modality pre-fusion module and the query "
            f"compressor; the LLM receives {n} visual token{'s' if n != 1 else ''}",)
    return Plan("llava-mini", p, (w, h), (2, 2), None, tuple(tiles), thumb, "first", n, {"compressed": n},
                notes=note)


register(StrategyInfo(
    name="llava-mini",
    family="fixed grid",
    summary="LLaVA-Mini high resolution: 2×2 quadrants plus the whole image at 336 px, all 5×576 features "
            "compressed to 1 visual token for the LLM",
    reference="Zhang et al. 2025, LLaVA-Mini (ictnlp/LLaVA-Mini)",
    params={
        "compression_tokens": ParamSpec("int", 1, "visual tokens the query compressor outputs (paper headline: 1)",
                                        min=1, max=4096),
        "tile_size": ParamSpec("int", 336, "vision encoder input side", min=14, max=4096),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
    },
    budget="compression_tokens, at most one per vision feature of a view",
    planner=_llava_mini_plan,
    pixels=PixelRecipe(CLIP),  # ictnlp/LLaVA-Mini: CLIP ViT-L/14-336
    # the paper's setting is LLaVA-1.5-7B-like; the released ICTNLP/llava-mini-llama-3.1-8b uses Llama-3.1-8B
    reference_model=ReferenceModel(CLIP_L_336, VICUNA_7B),
    order=150,
    knob=BudgetKnob("compression_tokens", "compressed tokens",
                    lambda p, n: range(1, min(n, (p["tile_size"] // p["patch_size"]) ** 2) + 1), monotone=True),
))

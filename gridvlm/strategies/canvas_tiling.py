"""Tiled canvases of today's models: Llama 3.2 Vision (Mllama), Llama 4, Aya Vision, Command A Vision
(Cohere2-Vision), DeepSeek-OCR-2 and Perception-LM.

Each picks a rows × cols canvas of square tiles by its own rule, resizes the image onto it (aspect kept and
padded for Mllama / Llama 4, squashed for the others) and cuts the tiles row-major. Aya Vision and
DeepSeek-OCR-2 choose the grid with GOT-OCR2's `get_optimal_tiled_canvas`, which is InternVL's rule
(`grids.aspect_ratio_search` over `grids.internvl_ratios`). Mllama and Llama 4 share `best_fit_canvas` (the least upscaling, else the least
downscaling, then the smallest area).
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from typing import Any, Callable

from ..errors import PlanError
from ..geometry import Plan, cut_canvas, make_tile, squashed_view, to_float32, whole
from .grids import aspect_ratio_search, internvl_ratios, resized_grid_plan
from .phi import ASPECT_RULE, aspect_candidates
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, at_most, register
from .reference import (
    AYA_EXPANSE_8B, CLIP, COMMAND_A, DEEPSEEK_3B_MOE, LLAMA3_8B, LLAMA4_SCOUT, LLAMA4_VIT, MLLAMA_VIT, PE_G_14,
    SAM_VIT_B_16, SIGLIP, SIGLIP2_SO400M_16, SIGLIP_SO400M, ReferenceModel,
)


def _exact(x: float) -> float:
    return x


def best_fit_canvas(w: int, h: int, canvases: list[tuple[int, int]], largest: bool = False,
                    cast: Callable[[float], float] = _exact) -> int:
    return best_fit_search(w, h, canvases, largest, cast)[0]


def best_fit_search(w: int, h: int, canvases: list[tuple[int, int]], largest: bool = False,
                    cast: Callable[[float], float] = _exact) -> tuple[int, list[float], float, bool]:
    """Index of the (canvas_w, canvas_h) the image fits best without distortion (Mllama / Llama 4).

    scale = min(canvas_h / h, canvas_w / w); among scales ≥ 1 the smallest (the largest when `largest`), else the
    largest; equal scales go to the smallest area, the first on equal area. `cast` rounds each division as the
    reference's dtype does (float32 for Llama 4's torch tensors). Returns (index, every canvas' scale, the scale
    chosen, whether any canvas upscales) — what `best_fit_canvas` takes and `explain` shows.
    """
    scales = []
    for cw, ch in canvases:
        sw, sh = cast(cw / w), cast(ch / h)
        scales.append(sw if sh > sw else sh)
    up = [s for s in scales if s >= 1]
    chosen = (max(up) if largest else min(up)) if up else max(scales)
    best = None
    for i, s in enumerate(scales):
        if s == chosen and (best is None or canvases[i][0] * canvases[i][1] < canvases[best][0] * canvases[best][1]):
            best = i
    return best, scales, chosen, bool(up)


def _best_fit_explain(name: str, w: int, h: int, arrangements, t: int, largest: bool = False,
                      cast: Callable[[float], float] = _exact, extra_rule: str = "") -> Explanation:
    canvases = [(c * t, r * t) for r, c in arrangements]
    index, scales, chosen, up = best_fit_search(w, h, canvases, largest, cast)
    tied = [i for i, sc in enumerate(scales) if sc == chosen]
    candidates = []
    for i, ((r, c), (cw, ch), sc) in enumerate(zip(arrangements, canvases, scales)):
        note = ""
        if i in tied and i != index:
            note = (f"same scale as the winner; its canvas area {cw * ch} is larger" if cw * ch > canvases[index][0]
                    * canvases[index][1] else "same scale and area as the winner, which comes first")
        elif i == index and len(tied) > 1:
            note = f"smallest canvas area among the {len(tied)} canvases at scale {sc:.6g}"
        elif up and sc < 1:
            note = "would shrink the image; only upscaling canvases compete"
        candidates.append(Candidate(f"{r}×{c} tiles on a {cw}×{ch} canvas",
                                    {"scale": sc, "canvas area": cw * ch}, i == index, (r, c), note))
    r, c = arrangements[index]
    which = "largest" if largest else "smallest"
    if up:
        n_up = sum(sc >= 1 for sc in scales)
        decision = (f"{n_up} canvas{'es' * (n_up != 1)} hold{'s' * (n_up == 1)} the image at scale ≥ 1 (no shrinking); the "
                    f"reference takes the {which} such scale, {chosen:.6g}")
    else:
        decision = (f"every canvas would shrink the image, so the reference takes the largest scale (the least "
                    f"shrinking), {chosen:.6g}")
    if len(tied) > 1:
        decision += (f"; {', '.join(f'{arrangements[i][0]}×{arrangements[i][1]}' for i in tied)} share it and the "
                     f"smallest canvas area wins (the first on equal area)")
    rule = (f"each canvas of rows×cols {t}-px tiles is scored by the scale that fits the image inside it with the "
            f"aspect kept, min(canvas_w / W, canvas_h / H); among scales ≥ 1 the {which} wins, else the largest; "
            "equal scales go to the smallest canvas area, then the first listed" + extra_rule)
    return Explanation(name, (w, h), rule, tuple(candidates), decision + f": {r}×{c} tiles.")


def _tokens_grid(n: int) -> tuple[int, int]:
    g = math.isqrt(n)
    return (g, g) if g * g == n else (1, n)


def _tile_count(name: str, fewest: int, most: int, fewest_help: str = "fewest tiles (min_patches)") -> dict:
    """The min_tiles / max_tiles parameters, their check and the max_tiles budget knob of a GOT-OCR2-style tiler."""
    return {
        "params": {"min_tiles": ParamSpec("int", fewest, fewest_help, min=1, max=64),
                   "max_tiles": ParamSpec("int", most, "most tiles (max_patches)", min=1, max=64)},
        "knob": BudgetKnob("max_tiles", "most tiles", lambda p, n: range(p["min_tiles"], 65)),
        "check": at_most(name, "min_tiles", "max_tiles"),
    }


def _padded_canvas_plan(name: str, w: int, h: int, p: dict, rows: int, cols: int, t: int, new_wh: tuple[int, int],
                        per_tile: int, token_grid: tuple[int, int], thumbnail: bool, tokens: dict[str, int],
                        text_tokens: int, notes: tuple[str, ...] = ()) -> Plan:
    """The image resized (aspect kept) to `new_wh` at the canvas' top left, zero-padded, cut into rows × cols."""
    canvas = (cols * t, rows * t)
    content = (0, 0, new_wh[0], new_wh[1])
    tiles = cut_canvas(canvas, content, (w, h), rows, cols, (t, t), 0, per_tile, token_grid)
    thumb = squashed_view(len(tiles), (w, h), (t, t), per_tile, token_grid) if thumbnail else None
    return Plan(name, p, (w, h), (rows, cols), canvas, tuple(tiles), thumb, "last" if thumb else None,
                sum(tokens.values()), tokens, text_tokens=text_tokens, content_box=content, notes=notes)


# ---------------------------------------------------------------------------------------------
# Mllama (Llama 3.2 Vision)


@lru_cache(maxsize=32)
def mllama_arrangements(max_tiles: int) -> tuple[tuple[int, int], ...]:
    """get_all_supported_aspect_ratios: (a, b) for a, b in 1..max with a·b ≤ max, read as (rows, cols)."""
    return tuple((a, b) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1) if a * b <= max_tiles)


def _mllama_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t = p["tile_size"]
    arrangements = mllama_arrangements(p["max_image_tiles"])
    index = best_fit_canvas(w, h, [(c * t, r * t) for r, c in arrangements])
    rows, cols = arrangements[index]
    cw, ch = cols * t, rows * t
    # get_image_size_fit_to_canvas: target side clipped to [tile, canvas], aspect kept, floor, at least 1
    tw, th = min(max(w, t), cw), min(max(h, t), ch)
    if tw / w < th / h:
        new_w, new_h = tw, min(math.floor(h * (tw / w)) or 1, th)
    else:
        new_w, new_h = min(math.floor(w * (th / h)) or 1, tw), th
    g = t // p["patch_size"]
    per_tile = g * g + 1  # + the class token
    n = rows * cols
    note = (f"aspect_ratio_id {index + 1} ({rows}×{cols}); cross-attention: the {n * per_tile} vision states are "
            f"attended to by the text, not spliced into it; the prompt keeps one <|image|> token",)
    return _padded_canvas_plan("mllama", w, h, p, rows, cols, t, (new_w, new_h), per_tile, (g, g), False,
                               {"tiles": g * g * n, "class_tokens": n}, 1, note)


register(StrategyInfo(
    name="mllama",
    family="cross-attention tiles",
    summary="Llama 3.2 Vision: up to 4 tiles of 560 px on the canvas needing the least up- (else down-) scaling, "
            "image resized with its aspect kept and zero-padded; 1601 cross-attended states per tile",
    reference="Meta 2024, Llama 3.2 Vision; transformers models/mllama/image_processing_pil_mllama.py "
              "get_optimal_tiled_canvas, get_image_size_fit_to_canvas",
    params={
        "tile_size": ParamSpec("int", 560, "tile side (size; the class default is 224)", min=14, max=4096),
        "max_image_tiles": ParamSpec("int", 4, "most tiles", min=1, max=16),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
    },
    budget="max_image_tiles",
    planner=_mllama_plan,
    explainer=lambda w, h, p: _best_fit_explain("mllama", w, h, mllama_arrangements(p["max_image_tiles"]),
                                                p["tile_size"]),
    knob=BudgetKnob("max_image_tiles", "most tiles", lambda p, n: range(1, 17)),
    # Llama-3.2-11B-Vision preprocessor_config: CLIP mean/std, resample 2 (bilinear); pad with 0 before normalising
    pixels=PixelRecipe(CLIP, resample="bilinear"),
    reference_model=ReferenceModel(MLLAMA_VIT, LLAMA3_8B),  # Llama-3.2-11B-Vision: Llama-3.1-8B text
    vectors=("mllama",),
    order=250,
))


# ---------------------------------------------------------------------------------------------
# Llama 4


@lru_cache(maxsize=64)
def llama4_arrangements(max_patches: int) -> tuple[tuple[int, int], ...]:
    """find_supported_resolutions: (rows, cols) for n = max…1, factor pairs grouped by rows/cols (first seen)."""
    groups: dict[float, list[tuple[int, int]]] = {}
    for n in range(max_patches, 0, -1):
        for f in sorted({d for i in range(1, math.isqrt(n) + 1) if n % i == 0 for d in (i, n // i)}):
            groups.setdefault(f / (n // f), []).append((f, n // f))
    return tuple(rc for group in groups.values() for rc in group)


def _llama4_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t, to_max = p["tile_size"], p["resize_to_max_canvas"]
    arrangements = llama4_arrangements(p["max_patches"])
    # get_best_fit divides int64 tensors: float32 scales
    rows, cols = arrangements[best_fit_canvas(w, h, [(c * t, r * t) for r, c in arrangements], to_max, to_float32)]
    cw, ch = cols * t, rows * t
    # the upscaling cap: a side grows only to max(side, tile); python's min keeps the first argument on a tie,
    # and a value taken from the canvas is a tensor, so its divisions happen in float32
    if to_max:
        (tw, w_f32), (th, h_f32) = (cw, True), (ch, True)
    else:
        tw, w_f32 = (cw, True) if cw < max(w, t) else (max(w, t), False)
        th, h_f32 = (ch, True) if ch < max(h, t) else (max(h, t), False)
    sw = to_float32(tw / w) if w_f32 else tw / w
    sh = to_float32(th / h) if h_f32 else th / h
    if w_f32 or h_f32:
        sw, sh = to_float32(sw), to_float32(sh)  # compared as float32
    if sw < sh:
        new_w, new_h = tw, min(math.floor(to_float32(h * sw) if w_f32 else h * sw), th)
    else:
        new_w, new_h = min(math.floor(to_float32(w * sh) if h_f32 else w * sh), tw), th
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    g = t // p["patch_size"]
    downsample = round(1 / p["pixel_shuffle_ratio"] ** 2)
    per_view = g * g // downsample
    side = g * p["pixel_shuffle_ratio"]
    grid = (int(side), int(side)) if side == int(side) and int(side) ** 2 == per_view else _tokens_grid(per_view)
    n = rows * cols
    tokens = {"tiles": per_view * n}
    if n > 1:
        tokens["thumbnail"] = per_view
    text = 3 + rows * (cols - 1) + rows if n > 1 else 3
    notes = ()
    if n > 1:
        notes = (f"prompt: <|image_start|>, {rows} row{'s' if rows > 1 else ''} of {cols} tile{'s' if cols > 1 else ''} "
                 "with a <|tile_x_separator|> between neighbouring tiles and a <|tile_y_separator|> after each row, "
                 "then <|image|> before the global view and <|image_end|>",)
    return _padded_canvas_plan("llama4", w, h, p, rows, cols, t, (new_w, new_h), per_view, grid, n > 1, tokens, text,
                               notes)


def _check_llama4(p: dict[str, Any]) -> None:
    if (p["tile_size"] // p["patch_size"]) ** 2 // round(1 / p["pixel_shuffle_ratio"] ** 2) < 1:
        raise PlanError("llama4: tile_size / patch_size is too small for pixel_shuffle_ratio "
                        f"{p['pixel_shuffle_ratio']}: no token per tile is left")


register(StrategyInfo(
    name="llama4",
    family="resize-and-tile",
    summary="Llama 4: up to 16 tiles of 336 px on the canvas needing the least up- (else down-) scaling, image "
            "kept at its aspect, upscaled at most to 336, zero-padded; global view last; 144 tokens per view",
    reference="Meta 2025, Llama 4; transformers models/llama4/image_processing_llama4.py find_supported_resolutions, "
              "get_best_fit, get_max_res_without_distortion; processing_llama4.py _prompt_split_image",
    params={
        "tile_size": ParamSpec("int", 336, "tile side (size)", min=14, max=4096),
        "max_patches": ParamSpec("int", 16, "most tiles", min=1, max=64),
        "resize_to_max_canvas": ParamSpec("bool", False, "pick the canvas allowing the largest upscaling"),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
        "pixel_shuffle_ratio": ParamSpec("float", 0.5, "pixel shuffle ratio (tokens per view ÷ 1/ratio²)",
                                         min=0.125, max=1.0),
    },
    budget="max_patches",
    planner=_llama4_plan,
    explainer=lambda w, h, p: _best_fit_explain(
        "llama4", w, h, llama4_arrangements(p["max_patches"]), p["tile_size"], p["resize_to_max_canvas"],
        to_float32, " (scales in float32, as the reference's int64 tensor division gives them)"),
    knob=BudgetKnob("max_patches", "most tiles", lambda p, n: range(1, 65)),
    check=_check_llama4,
    # Llama4ImageProcessor (torchvision backend): mean/std 0.5, bilinear, pad 0 before normalising (in bfloat16)
    pixels=PixelRecipe(SIGLIP, resample="bilinear"),
    reference_model=ReferenceModel(LLAMA4_VIT, LLAMA4_SCOUT),  # Llama-4-Scout-17B-16E
    vectors=("llama4",),
    order=255,
))


# ---------------------------------------------------------------------------------------------
# Aya Vision (GOT-OCR2 tiling)


@lru_cache(maxsize=64)
def got_ocr2_search(w: int, h: int, tile: int, min_tiles: int, max_tiles: int):
    """GOT-OCR2's get_optimal_tiled_canvas (InternVL's rule) step by step: ((cols, rows), steps)."""
    return aspect_ratio_search(w, h, internvl_ratios(min_tiles, max_tiles), tile)


def _aya_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    t = p["tile_size"]
    candidates, decision = aspect_candidates(w, h, t, got_ocr2_search(w, h, t, p["min_tiles"], p["max_tiles"]))
    rule = (f"GOT-OCR2 / InternVL tiling over {p['min_tiles']}…{p['max_tiles']} tiles of {t} px (cols outer, "
            f"sorted by tile count): " + ASPECT_RULE)
    return Explanation("aya-vision", (w, h), rule, tuple(candidates), decision)


def _aya_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t, n = p["tile_size"], p["tokens_per_tile"]
    cols, rows = got_ocr2_search(w, h, t, p["min_tiles"], p["max_tiles"])[0]
    tiled = rows * cols > 1
    # <|START_OF_IMG|>, TILE_k before each tile, TILE_GLOBAL before the last view, <|END_OF_IMG|>
    plan = resized_grid_plan("aya-vision", w, h, p, rows, cols, t, n, _tokens_grid(n), "last" if tiled else None,
                             text_tokens=3 + rows * cols if tiled else 3)
    if not tiled:
        return plan
    note = (f"prompt: <|START_OF_IMG|>, TILE_1 … TILE_{rows * cols} (TILE + plain-text _k) before the tiles, "
            "TILE_GLOBAL before the thumbnail, <|END_OF_IMG|>",)
    return replace(plan, notes=note)


_AYA_TILES = _tile_count("aya-vision", 1, 12)
register(StrategyInfo(
    name="aya-vision",
    family="resize-and-tile",
    summary="Aya Vision: GOT-OCR2 / InternVL tiling with ≤ 12 tiles of 364 px, image squashed onto the grid, "
            "thumbnail last (none for 1×1); 169 tokens per view",
    reference="Cohere 2025, Aya Vision; transformers models/got_ocr2/image_processing_pil_got_ocr2.py "
              "get_optimal_tiled_canvas, models/aya_vision/processing_aya_vision.py replace_image_token",
    params={
        "tile_size": ParamSpec("int", 364, "tile side (img_size / size)", min=14, max=4096),
        **_AYA_TILES["params"],
        "tokens_per_tile": ParamSpec("int", 169, "tokens per view ((364/14)² / 4 after pixel shuffle)",
                                     min=1, max=10**5),
    },
    budget="max_tiles",
    planner=_aya_plan,
    explainer=_aya_explain,
    knob=_AYA_TILES["knob"],
    check=_AYA_TILES["check"],
    # CohereLabs/aya-vision-8b preprocessor_config (GotOcr2ImageProcessor): mean/std 0.5, resample 3 (bicubic)
    pixels=PixelRecipe(SIGLIP, resample="bicubic"),
    reference_model=ReferenceModel(SIGLIP_SO400M, AYA_EXPANSE_8B),  # siglip2-so400m-patch14-384 + Aya Expanse 8B
    vectors=("aya_vision",),
    order=260,
))


# ---------------------------------------------------------------------------------------------
# Cohere2-Vision (Command A Vision)


@lru_cache(maxsize=64)
def cohere2_arrangements(max_tiles: int) -> tuple[tuple[int, int], ...]:
    """(cols, rows), cols outer, rows inner, cols·rows ≤ max, stably sorted by cols·rows."""
    pairs = [(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1) if c * r <= max_tiles]
    return tuple(sorted(pairs, key=lambda cr: cr[0] * cr[1]))


def cohere2_grid(w: int, h: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """(cols, rows) needing the least upscaling; when every canvas downscales, the least downscaling."""
    arrangements, _, index, _ = cohere2_search(w, h, tile, max_tiles)
    return arrangements[index]


def cohere2_search(w: int, h: int, tile: int, max_tiles: int):
    """(arrangements, each one's scale, the index taken, whether every canvas downscales)."""
    arrangements = cohere2_arrangements(max_tiles)
    need = [min(c * tile / w, r * tile / h) for c, r in arrangements]
    if all(s < 1 for s in need):
        return arrangements, need, need.index(max(need)), True
    return arrangements, need, [1e10 if s < 1 else s for s in need].index(min(s for s in need if s >= 1)), False


def least_scale_explain(name: str, w: int, h: int, grids, scales, index: int, all_down: bool, rule: str,
                        label: Callable[[int, int], str]) -> Explanation:
    """Cohere2-Vision / Molmo2: the least upscale wins (first on ties); if every grid shrinks, the least shrinking.
    `grids` are (rows, cols)."""
    chosen = scales[index]
    tied = [i for i, sc in enumerate(scales) if sc == chosen]
    candidates = []
    for i, ((r, c), sc) in enumerate(zip(grids, scales)):
        note = ""
        if i in tied and i != index:
            note = "same scale as the winner, which comes first"
        elif i == index and len(tied) > 1:
            note = f"first of the {len(tied)} grids at scale {sc:.6g}"
        elif not all_down and sc < 1:
            note = "would shrink the image; set aside (1e10) while any grid upscales"
        candidates.append(Candidate(label(r, c), {"scale": sc, "tiles": r * c}, i == index, (r, c), note))
    r, c = grids[index]
    if all_down:
        decision = f"every grid would shrink the image, so the least shrinking one wins (scale {chosen:.6g})"
    else:
        n_up = sum(sc >= 1 for sc in scales)
        decision = (f"{n_up} grid{'s' * (n_up != 1)} hold{'s' * (n_up == 1)} the image without shrinking; the smallest upscale "
                    f"wins (scale {chosen:.6g})")
    if len(tied) > 1:
        decision += (f"; {', '.join(f'{grids[i][0]}×{grids[i][1]}' for i in tied)} tie on it and the first in the "
                     "list is kept")
    return Explanation(name, (w, h), rule, tuple(candidates), decision + f": {r}×{c}.")


def _cohere2_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    t = p["tile_size"]
    arrangements, scales, index, all_down = cohere2_search(w, h, t, p["max_tiles"])
    rule = (f"each grid of cols×rows {t}-px tiles (cols outer, ≤ {p['max_tiles']} tiles, sorted by tile count) is "
            "scored by min(cols·tile / W, rows·tile / H); the smallest scale ≥ 1 wins (the least upscaling, first "
            "on ties); if every grid is below 1, the largest (the least downscaling); min_tiles is ignored")
    return least_scale_explain("cohere2-vision", w, h, [(r, c) for c, r in arrangements], scales, index, all_down,
                               rule, lambda r, c: f"{r}×{c} tiles on a {c * t}×{r * t} canvas")


def _cohere2_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t, n = p["tile_size"], p["tokens_per_tile"]
    cols, rows = cohere2_grid(w, h, t, p["max_tiles"])
    views = rows * cols + (rows * cols > 1)
    # <|START_OF_IMG|> + per view (patches + <|IMG_LINE_BREAK|>) + <|END_OF_IMG|>
    plan = resized_grid_plan("cohere2-vision", w, h, p, rows, cols, t, n, _tokens_grid(n),
                             "last" if views > 1 else None, text_tokens=2 + views)
    return replace(plan, notes=(f"prompt: <|START_OF_IMG|>, an <|IMG_LINE_BREAK|> token after each of the {views} "
                                "view" + ("s" if views > 1 else "") + ", <|END_OF_IMG|>",))


_COHERE2_TILES = _tile_count("cohere2-vision", 1, 12,
                             "fewest tiles (min_patches; the reference's canvas choice ignores it)")
register(StrategyInfo(
    name="cohere2-vision",
    family="resize-and-tile",
    summary="Command A Vision: the grid of ≤ 12 512-px tiles needing the least upscaling (else the least "
            "downscaling), image squashed onto it, thumbnail last; 256 tokens per view",
    reference="Cohere 2025, Command A Vision; transformers models/cohere2_vision/image_processing_cohere2_vision.py "
              "get_optimal_tiled_canvas, processing_cohere2_vision.py replace_image_token",
    params={
        "tile_size": ParamSpec("int", 512, "tile side (size)", min=14, max=4096),
        **_COHERE2_TILES["params"],
        "tokens_per_tile": ParamSpec("int", 256, "tokens per view (processor patch_size 16 → 16²)",
                                     min=1, max=10**5),
    },
    budget="max_tiles",
    planner=_cohere2_plan,
    explainer=_cohere2_explain,
    knob=_COHERE2_TILES["knob"],
    check=_COHERE2_TILES["check"],
    # Cohere2VisionImageProcessor class: OpenAI CLIP mean/std, bicubic (torchvision backend)
    pixels=PixelRecipe(CLIP, resample="bicubic"),
    reference_model=ReferenceModel(SIGLIP2_SO400M_16, COMMAND_A),  # CohereLabs/command-a-vision-07-2025
    vectors=("cohere2_vision",),
    order=265,
))


# ---------------------------------------------------------------------------------------------
# DeepSeek-OCR-2


DEEPSEEK_PATCH, DEEPSEEK_DOWNSAMPLE = 16, 4  # DeepseekOcr2Processor: SAM patch 16, 16× token compression


def _deepseek_ocr2_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    size, t = p["size"], p["tile_size"]
    g_global = math.ceil(size / DEEPSEEK_PATCH / DEEPSEEK_DOWNSAMPLE)
    g_local = math.ceil(t / DEEPSEEK_PATCH / DEEPSEEK_DOWNSAMPLE)
    # global view: longest side to `size` (Python round), pad_to_square centred with gray 127
    s = size / max(w, h)
    nw, nh = round(w * s), round(h * s)
    if nw < 1 or nh < 1:
        raise PlanError(f"deepseek-ocr-2: a {w}×{h} image resizes to {nw}×{nh} for the {size}-px global view "
                        f"(round({min(w, h)}·{size}/{max(w, h)}) = 0); the reference cannot resize to an empty "
                        "image — use a short side of at least half max(w, h)/size px")
    sq = max(nw, nh)
    ox, oy = (sq - nw) // 2, (sq - nh) // 2
    tiled = max(w, h) > t
    index = 0
    tiles, grid, canvas, content = [], (1, 1), None, None
    if tiled:
        cols, rows = got_ocr2_search(w, h, t, p["min_tiles"], p["max_tiles"])[0]
        grid, canvas = (rows, cols), (cols * t, rows * t)
        content = (0, 0, canvas[0], canvas[1])
        tiles = cut_canvas(canvas, content, (w, h), rows, cols, (t, t), 0, g_local ** 2, (g_local, g_local))
        index = len(tiles)
    row = -1 if tiled else 0
    view = make_tile(index, row, row, whole((w, h)), (sq, sq), g_global ** 2, (g_global, g_global),
                     content_box=(ox, oy, ox + nw, oy + nh))
    tokens = {"tiles": g_local ** 2 * len(tiles), "thumbnail": g_global ** 2} if tiled else {"tiles": g_global ** 2}
    tokens["separators"] = 1  # the model's view_separator embedding after the global view
    if not tiled:
        tiles = [view]
    return Plan("deepseek-ocr-2", p, (w, h), grid, canvas, tuple(tiles), view if tiled else None,
                "last" if tiled else None, sum(tokens.values()), tokens, content_box=content)


def gate_candidate(label: str, side: float, limit: int, tiled: bool, what: str) -> Candidate:
    """The no-tiles branch of a reference that tiles only large images (DeepSeek-OCR, DeepSeek-OCR-2, LFM2-VL)."""
    note = f"{what} {side:g} > {limit}: the image is tiled" if tiled else f"{what} {side:g} ≤ {limit}: not tiled"
    return Candidate(label, {what: side, "limit": limit}, not tiled, (1, 1), note)


def _deepseek_ocr2_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    _deepseek_ocr2_plan(w, h, p)  # the reference's refusals
    t, size = p["tile_size"], p["size"]
    tiled = max(w, h) > t
    gate = gate_candidate(f"no tiles: the {size}-px global view only", max(w, h), t, tiled, "longest side")
    rule = (f"images whose longest side exceeds {t} px are tiled by GOT-OCR2 / InternVL's rule over "
            f"{p['min_tiles']}…{p['max_tiles']} tiles of {t} px: " + ASPECT_RULE)
    if not tiled:
        return Explanation("deepseek-ocr-2", (w, h), rule, (gate,),
                           f"the longest side, {max(w, h)} px, is at most {t}: one {size}-px global view, no tiles.")
    candidates, decision = aspect_candidates(w, h, t, got_ocr2_search(w, h, t, p["min_tiles"], p["max_tiles"]))
    return Explanation("deepseek-ocr-2", (w, h), rule, (gate, *candidates),
                       f"the longest side, {max(w, h)} px, exceeds {t}, so the image is tiled; " + decision)


_DEEPSEEK_TILES = _tile_count("deepseek-ocr-2", 2, 6)
register(StrategyInfo(
    name="deepseek-ocr-2",
    family="resize-and-tile",
    summary="DeepSeek-OCR-2: images over 768 px get 2–6 tiles of 768 px (InternVL rule, squashed), plus a "
            "1024-px global view padded to a square with gray; 144 tokens per tile, 256 global, 1 separator",
    reference="DeepSeek-AI 2026, DeepSeek-OCR 2; transformers models/deepseek_ocr2/"
              "image_processing_pil_deepseek_ocr2.py _preprocess, get_optimal_tiled_canvas; "
              "processing_deepseek_ocr2.py replace_image_token",
    params={
        "size": ParamSpec("int", 1024, "global view side", min=64, max=4096),
        "tile_size": ParamSpec("int", 768, "tile side; images whose longest side exceeds it are tiled",
                               min=64, max=4096),
        **_DEEPSEEK_TILES["params"],
    },
    budget="max_tiles",
    planner=_deepseek_ocr2_plan,
    explainer=_deepseek_ocr2_explain,
    knob=_DEEPSEEK_TILES["knob"],
    check=_DEEPSEEK_TILES["check"],
    # DeepseekOcr2ImageProcessorPil: mean/std 0.5, bicubic, background_color 127
    pixels=PixelRecipe(SIGLIP, resample="bicubic", pad_colour=(127, 127, 127)),
    # deepseek-ai/DeepSeek-OCR-2: SAM-base first stage (the Qwen2-based second stage is not counted) + DeepSeek-3B-MoE
    reference_model=ReferenceModel(SAM_VIT_B_16, DEEPSEEK_3B_MOE),
    vectors=("deepseek_ocr2",),
    order=270,
))


# ---------------------------------------------------------------------------------------------
# Perception-LM


@lru_cache(maxsize=64)
def perception_lm_ratios(max_tiles: int) -> dict[float, tuple[tuple[int, int], ...]]:
    """_find_supported_aspect_ratios: n_w/n_h -> (n_w, n_h) arrangements, n = max…1, first-seen order."""
    groups: dict[float, list[tuple[int, int]]] = {}
    for n in range(max_tiles, 0, -1):
        for x in sorted({d for i in range(1, math.isqrt(n) + 1) if n % i == 0 for d in (i, n // i)}):
            groups.setdefault(x / (n // x), []).append((x, n // x))
    return {k: tuple(v) for k, v in groups.items()}


def _fit_short_side(w: int, h: int, cw: int, ch: int) -> float:
    """_get_image_height_width: the side compared (width when w/h < 1, else height) after an aspect-kept fit."""
    scale = w / h
    factor = min(cw / w, ch / h)
    if scale > 1.0:
        return math.floor(factor * w / scale)  # new_h
    new_h = factor * h
    return math.floor(new_h * scale) if scale < 1.0 else new_h


def perception_lm_grid(w: int, h: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """(n_w, n_h): the holding canvas where the resized short side is largest (later wins ties), else the
    closest aspect ratio."""
    return perception_lm_search(w, h, tile, max_tiles)[0]


def perception_lm_search(w: int, h: int, tile: int, max_tiles: int):
    """(best (n_w, n_h), [((n_w, n_h), resized short side or None when the canvas does not hold the image)],
    {ratio key: distance} of the no-fit fallback (empty when a canvas holds the image))."""
    if max_tiles <= 1:
        return (1, 1), [], {}
    ratios = perception_lm_ratios(max_tiles)
    best, best_side, sides = None, None, []
    for group in ratios.values():
        for nw, nh in group:
            side = None
            if nw * tile >= w and nh * tile >= h:
                side = _fit_short_side(w, h, nw * tile, nh * tile)
                if best is None or side >= best_side:
                    best, best_side = (nw, nh), side
            sides.append(((nw, nh), side))
    if best is not None:
        return best, sides, {}
    target = w / h
    if target >= 1:
        dist = {k: abs(k - target) for k in ratios if k <= target}
        key = min(dist, key=dist.get)
        return max(ratios[key], key=lambda a: a[0]), sides, dist
    dist = {k: abs(1 / k - 1 / target) for k in ratios if k > target}
    key = min(dist, key=dist.get)
    return max(ratios[key], key=lambda a: a[1]), sides, dist


def _perception_lm_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    t, most = p["tile_size"], p["max_num_tiles"]
    best, sides, dist = perception_lm_search(w, h, t, most)
    rule = (f"arrangements of n_w × n_h {t}-px tiles (n = {most} down to 1, grouped by ratio): among canvases that "
            "hold the image (both sides ≥), the one where the image, resized to fit with its aspect kept, has the "
            "largest short side wins, a later arrangement winning ties (≥); if none holds it, the closest ratio key "
            "(≤ W/H for landscape, > W/H for portrait) and in it the arrangement with the most tiles along the long "
            "side")
    if not sides:
        only = Candidate("1×1 tile (max_num_tiles ≤ 1)", {"tiles": 1}, True, (1, 1), "max_num_tiles ≤ 1: no choice")
        return Explanation("perception-lm", (w, h), rule, (only,), "max_num_tiles ≤ 1 allows only one tile.")
    ratios = perception_lm_ratios(most)
    key_of = {a: k for k, group in ratios.items() for a in group}
    best_side = dict(sides)[best]
    candidates = []
    for (nw, nh), side in sides:
        chosen = (nw, nh) == best
        scores: dict[str, float] = {"tiles": nw * nh}
        note = ""
        if side is not None:
            scores["resized short side"] = side
            if side == best_side and not chosen:
                note = "ties the winner's short side; a later arrangement takes it (≥)"
            elif chosen and sum(s == best_side for _, s in sides) > 1:
                note = "the last of the arrangements tied on the largest short side (ties go to the later one)"
        else:
            note = "canvas smaller than the image"
            k = key_of[(nw, nh)]
            if k in dist:
                scores["ratio distance"] = dist[k]
                if chosen:
                    note = "no canvas holds the image: the closest ratio key, most tiles along the long side"
        candidates.append(Candidate(f"{nh}×{nw} tiles on a {nw * t}×{nh * t} canvas", scores, chosen, (nh, nw),
                                    note))
    nw, nh = best
    if not dist:
        n_tied = sum(s == best_side for _, s in sides)
        decision = (f"{sum(s is not None for _, s in sides)} canvases hold the image; {nh}×{nw} gives the largest "
                    f"resized short side, {best_side:g} px")
        if n_tied > 1:
            decision += f" ({n_tied} arrangements tie on it; the reference keeps the later one, ≥)"
    else:
        decision = (f"no canvas of ≤ {most} tiles holds the {w}×{h} image, so the ratio key closest to its aspect wins "
                    f"(distance {min(dist.values()):.4g}) and, within it, {nh}×{nw}, the arrangement with the most "
                    "tiles along the long side")
    return Explanation("perception-lm", (w, h), rule, tuple(candidates), decision + ".")


def _perception_lm_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    t = p["tile_size"]
    g = t // p["patch_size"] // p["pooling_ratio"]
    nw, nh = perception_lm_grid(w, h, t, p["max_num_tiles"])
    return resized_grid_plan("perception-lm", w, h, p, nh, nw, t, g * g, (g, g), "first")


def _check_perception_lm(p: dict[str, Any]) -> None:
    if p["tile_size"] // p["patch_size"] // p["pooling_ratio"] < 1:
        raise PlanError(f"perception-lm: tile_size {p['tile_size']} leaves no token after patch_size "
                        f"{p['patch_size']} and pooling_ratio {p['pooling_ratio']}")


register(StrategyInfo(
    name="perception-lm",
    family="resize-and-tile",
    summary="Perception-LM: the canvas of ≤ 36 448-px tiles that holds the image with the largest short side "
            "(else the closest aspect ratio), image squashed onto it, thumbnail first, always; 256 tokens per view",
    reference="Cho et al. 2025, PerceptionLM; transformers models/perception_lm/image_processing_perception_lm.py "
              "_fit_image_to_canvas, _find_closest_aspect_ratio; processing_perception_lm.py replace_image_token",
    params={
        "tile_size": ParamSpec("int", 448, "tile side", min=14, max=4096),
        "max_num_tiles": ParamSpec("int", 36, "most tiles", min=1, max=64),
        "patch_size": ParamSpec("int", 14, "ViT patch side (the processor default is None; 14 not verified)",
                                min=1, max=64),
        "pooling_ratio": ParamSpec("int", 2, "2-D pooling of the projected tokens", min=1, max=16),
    },
    budget="max_num_tiles",
    planner=_perception_lm_plan,
    explainer=_perception_lm_explain,
    knob=BudgetKnob("max_num_tiles", "most tiles", lambda p, n: range(1, 65)),
    check=_check_perception_lm,
    # PerceptionLMImageProcessor class (torchvision backend): mean/std 0.5, bicubic
    pixels=PixelRecipe(SIGLIP, resample="bicubic"),
    reference_model=ReferenceModel(PE_G_14, LLAMA3_8B),  # facebook/Perception-LM-8B: PE G/14 + Llama-3.1-8B
    vectors=("perception_lm",),
    order=275,
))

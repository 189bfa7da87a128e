"""DeepSeek-OCR: one padded (or squashed) global view per mode; Gundam adds 640-px tiles (families-2.md §18).

Re-read from deepseek-ai/DeepSeek-OCR (remote code, not in transformers), ``DeepSeek-OCR-master/DeepSeek-OCR-vllm``:

* ``config.py`` L1-12: the five modes (tiny 512/512, small 640/640, base 1024/1024, large 1280/1280 without
  cropping; gundam base 1024, tiles 640, cropping) and ``MIN_CROPS = 2``, ``MAX_CROPS = 6`` ("max:9").
* ``process/image_process.py`` ``tokenize_with_images`` L330-435: an image with both sides ≤ 640 is never tiled;
  otherwise, with cropping, ``dynamic_preprocess`` L45-83 picks (cols, rows) by InternVL's closest-aspect rule
  over ``sorted(set(...), key=cols·rows)`` (L50-54; the set's own order decides among equal products) with the
  tie-break ``area > 0.5 · 640² · cols · rows`` (``find_closest_aspect_ratio`` L11-25), squashes the image to
  (640·cols, 640·rows) and cuts it row-major. The global view is ``ImageOps.pad(image, (base, base),
  color=(127, 127, 127))`` (aspect kept, ``round`` for the short side and the offset); tiny and small first
  squash the image to image_size² (L382-384), so their global view is the squashed image.
* ``deepseek_ocr.py`` ``get_num_image_tokens`` L61-106 and the expansion L424-432: q = ceil(base / 16 / 4)
  gives q rows of q features + 1 newline each for the global view, the tiles (10·rows) rows of (10·cols)
  features + 1 newline each, and one ``view_seperator``; the model puts the tiles first, then the global view,
  then the separator (L364-467). Every position is an ``<image>`` placeholder: no marker tokens.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from ..geometry import Plan, cut_canvas, make_tile, whole
from .anyres import pad_contain
from .canvas_tiling import gate_candidate
from .grids import aspect_ratio_search
from .phi import ASPECT_RULE, aspect_candidates
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, at_most, register
from .reference import DEEPSEEK_3B_MOE, SAM_VIT_B_16, SIGLIP, ReferenceModel

# mode: (base_size, image_size, crop_mode), config.py L2-6
MODES = {
    "tiny": (512, 512, False),
    "small": (640, 640, False),
    "base": (1024, 1024, False),
    "large": (1280, 1280, False),
    "gundam": (1024, 640, True),
}
PATCH, DOWNSAMPLE = 16, 4  # DeepseekOCRProcessor.patch_size, .downsample_ratio
NO_TILES_UP_TO = 640  # tokenize_with_images L363: both sides <= 640 -> crop_ratio [1, 1] (a literal, not IMAGE_SIZE)


@lru_cache(maxsize=64)
def crop_candidates(min_crops: int, max_crops: int) -> tuple[tuple[int, int], ...]:
    """(cols, rows) in dynamic_preprocess's order: the set's iteration order, stably sorted by cols·rows."""
    ratios = set((i, j) for n in range(min_crops, max_crops + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                 if min_crops <= i * j <= max_crops)
    return tuple(sorted(ratios, key=lambda x: x[0] * x[1]))


def crop_grid(w: int, h: int, tile: int, min_crops: int, max_crops: int) -> tuple[int, int]:
    """(cols, rows) closest to the image's aspect ratio; on a tie a later grid wins if the image has the pixels."""
    return aspect_ratio_search(w, h, crop_candidates(min_crops, max_crops), tile)[0]


def _deepseek_ocr_explain(w: int, h: int, p: dict[str, Any]) -> Explanation:
    base, tile, crop = MODES[p["mode"]]
    how = "squashed" if tile <= 640 and not crop else "grey-padded"
    if not crop:
        only = Candidate(f"one {base}×{base} global view ({how})", {"views": 1}, True, (1, 1),
                         f"mode {p['mode']} never tiles")
        return Explanation("deepseek-ocr", (w, h), f"mode {p['mode']} makes one {base}-px global view ({how}); "
                           "only the gundam mode tiles", (only,),
                           f"mode {p['mode']} has no choice to make: one {base}×{base} view.")
    tiled = w > NO_TILES_UP_TO or h > NO_TILES_UP_TO
    gate = gate_candidate(f"no tiles: the {base}-px global view only", max(w, h), NO_TILES_UP_TO, tiled,
                          "longest side")
    rule = (f"gundam: an image with a side over {NO_TILES_UP_TO} px is tiled by InternVL's rule over "
            f"{p['min_crops']}…{p['max_crops']} tiles of {tile} px (a set, sorted by tile count), plus the "
            f"{base}-px global view: " + ASPECT_RULE)
    if not tiled:
        return Explanation("deepseek-ocr", (w, h), rule, (gate,),
                           f"both sides are at most {NO_TILES_UP_TO} px: the {base}-px global view only.")
    candidates, decision = aspect_candidates(
        w, h, tile, aspect_ratio_search(w, h, crop_candidates(p["min_crops"], p["max_crops"]), tile))
    return Explanation("deepseek-ocr", (w, h), rule, (gate, *candidates),
                       f"a side exceeds {NO_TILES_UP_TO} px, so the image is tiled; " + decision)


def _features(side: int) -> int:
    return math.ceil((side // PATCH) / DOWNSAMPLE)


def _deepseek_ocr_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    base, tile, crop = MODES[p["mode"]]
    q, q2 = _features(base), _features(tile)
    cols = rows = 1
    if crop and (w > NO_TILES_UP_TO or h > NO_TILES_UP_TO):
        cols, rows = crop_grid(w, h, tile, p["min_crops"], p["max_crops"])
    tiled = cols > 1 or rows > 1
    if tile <= 640 and not crop:
        content = (0, 0, base, base)  # squashed to image_size² first; ImageOps.pad then has nothing to pad
    else:
        content = pad_contain(w, h, base, base)
    tokens = {"tiles": q2 * q2 * rows * cols, "tile_newlines": q2 * rows} if tiled else {}
    tokens.update({"thumbnail": q * q, "thumbnail_newlines": q, "separator": 1})
    total = sum(tokens.values())
    if not tiled:
        view = make_tile(0, 0, 0, whole((w, h)), (base, base), q * q, (q, q), content_box=content)
        return Plan("deepseek-ocr", p, (w, h), (1, 1), None, (view,), None, None, total, tokens)
    canvas = (tile * cols, tile * rows)
    tiles = cut_canvas(canvas, (0, 0, *canvas), (w, h), rows, cols, (tile, tile), 0, q2 * q2, (q2, q2))
    view = make_tile(rows * cols, -1, -1, whole((w, h)), (base, base), q * q, (q, q), content_box=content)
    return Plan("deepseek-ocr", p, (w, h), (rows, cols), canvas, tuple(tiles), view, "last", total, tokens,
                content_box=(0, 0, *canvas))


register(StrategyInfo(
    name="deepseek-ocr",
    family="resize-and-tile",
    summary="DeepSeek-OCR: one global view per mode (tiny 512² / small 640² squashed, base 1024² / large 1280² "
            "grey-padded); Gundam adds 2…6 640-px tiles for images over 640 px, global view last, then a "
            "separator; 16× compressed features with newlines",
    reference="Wei et al. 2025, DeepSeek-OCR; deepseek-ai/DeepSeek-OCR DeepSeek-OCR-vllm "
              "process/image_process.py tokenize_with_images + dynamic_preprocess, deepseek_ocr.py "
              "get_num_image_tokens",
    params={
        "mode": ParamSpec("str", "gundam", "tiny (512, squashed), small (640, squashed), base (1024, padded), "
                                           "large (1280, padded), gundam (1024 padded + 640-px tiles)",
                          choices=tuple(MODES)),
        "min_crops": ParamSpec("int", 2, "fewest Gundam tiles (MIN_CROPS)", min=1, max=9),
        "max_crops": ParamSpec("int", 6, "most Gundam tiles (MAX_CROPS; the config says max 9)", min=1, max=9),
    },
    budget="mode, from tiny to gundam (Gundam with the given max_crops)",
    planner=_deepseek_ocr_plan,
    explainer=_deepseek_ocr_explain,
    knob=BudgetKnob("mode", "DeepSeek-OCR mode", lambda p, n: tuple(MODES), monotone=False),
    check=at_most("deepseek-ocr", "min_crops", "max_crops"),
    # ImageTransform mean/std 0.5; ImageOps.pad colour int(255 · 0.5); PIL's default bicubic everywhere
    pixels=PixelRecipe(SIGLIP, resample="bicubic", pad_colour=(127, 127, 127)),
    reference_model=ReferenceModel(SAM_VIT_B_16, DEEPSEEK_3B_MOE),  # deepseek-ai/DeepSeek-OCR
    vectors=("deepseek_ocr_tiny", "deepseek_ocr_small", "deepseek_ocr_base", "deepseek_ocr_large",
             "deepseek_ocr_gundam"),
    order=441,
))

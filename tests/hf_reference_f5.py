"""Reference results from the installed transformers' OWN Ovis2 and InternVL code (5.23, PIL backends).

For tests/test_against_f5.py. As in `hf_reference` (whose `no_resampling`, `_dummy`, `_box_in` and
`_quiet_channel_guess` are reused): sizes, grids and crops come from transformers' functions and processor
methods, run with the final pixel resampling stubbed out where only shapes are needed; token counts come from
the real processors (`Ovis2Processor`, `InternVLProcessor`) with a tokenizer built locally (a byte-level BPE
trained on two sentences, wrapped in `PreTrainedTokenizerFast` with the processors' special tokens, notes.md
trap 9), counted in the `input_ids` they return.

Which transformers code backs what
  ovis2 (variant "transformers")  models/ovis2/image_processing_pil_ovis2.py get_min_tile_covering_grid,
        Ovis2ImageProcessorPil.crop_image_to_patches / __call__; processing_ovis2.Ovis2Processor.__call__
        (replace_image_token)
  internvl  models/got_ocr2/image_processing_pil_got_ocr2.py get_optimal_tiled_canvas,
        GotOcr2ImageProcessorPil; models/internvl/processing_internvl.InternVLProcessor.__call__
InternVLProcessor's __init__ insists on a video processor, whose base class cannot load without torchvision; the
processor is built with `video_processor=None` and only that one class check skipped (`_processor`).
Not in transformers: Ovis2's original code (AIDC-AI/Ovis) and DeepSeek-OCR (remote code).
"""

from __future__ import annotations

import functools
from unittest import mock

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers import processing_utils as _processing_utils
from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.image_utils import SizeDict
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorPil,
    get_optimal_tiled_canvas,
)
from transformers.models.internvl.processing_internvl import InternVLProcessor
from transformers.models.ovis2.image_processing_pil_ovis2 import Ovis2ImageProcessorPil, get_min_tile_covering_grid
from transformers.models.ovis2.processing_ovis2 import Ovis2Processor

from hf_reference import _box_in, _dummy, _quiet_channel_guess, no_resampling

OVIS2_MARKERS = ("<IMG_START>", "<IMG_GRID>", "<IMG_COL>", "<IMG_ROW>", "<IMG_END>")
INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                   "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}


@functools.lru_cache(maxsize=4)
def local_tokenizer(specials: tuple[tuple[str, str], ...], extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE trained here; `specials` become named special tokens, `extra` plain special ones."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["describe the image please", "hello world"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=dict(specials))
    if extra:
        fast.add_special_tokens({"additional_special_tokens": list(extra)})
    return fast


def _processor(cls, **kwargs):
    """`cls(**kwargs)` with the video-processor class check skipped (its base class needs torchvision)."""
    check = _processing_utils.ProcessorMixin.check_argument_for_proper_class

    def lenient(self, name, argument):
        return type(argument) if name == "video_processor" and argument is None else check(self, name, argument)

    with mock.patch.object(_processing_utils.ProcessorMixin, "check_argument_for_proper_class", lenient):
        return cls(**kwargs)


def _count(ids, tokenizer, token: str) -> int:
    return ids.count(tokenizer.convert_tokens_to_ids(token))


def _shape_only_call(processor, prompt: str, width: int, height: int) -> dict:
    """The processor on a placeholder image with resampling stubbed and no rescale/normalise (shapes only)."""
    with no_resampling(), _quiet_channel_guess():
        return processor(images=[_dummy(height, width, 3)], text=[prompt], return_tensors="np",
                         input_data_format="channels_first", do_rescale=False, do_normalize=False)


# --------------------------------------------------------------------------------------------------------------
# Ovis2
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def ovis2_image_processor(tile: int = 448, max_tiles: int = 9) -> Ovis2ImageProcessorPil:
    """Ovis2ImageProcessorPil with crop_to_patches on (the class default is off, 384 px, 12 patches)."""
    return Ovis2ImageProcessorPil(size={"height": tile, "width": tile}, crop_to_patches=True, max_patches=max_tiles,
                                  image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)


@functools.lru_cache(maxsize=4)
def ovis2_processor(tile: int = 448, max_tiles: int = 9, tokens_per_view: int = 256) -> Ovis2Processor:
    tokenizer = local_tokenizer((("image_token", "<image>"),), ("<IMG_ATOM>", *OVIS2_MARKERS))
    return Ovis2Processor(image_processor=ovis2_image_processor(tile, max_tiles), tokenizer=tokenizer,
                          image_seq_length=tokens_per_view)


def ovis2_geometry(width: int, height: int, tile: int = 448, max_tiles: int = 9, threshold: float = 0.9) -> dict:
    """Keys: covering_grid (get_min_tile_covering_grid's (a, b)), grid (rows, cols) as crop_image_to_patches
    returns it, num_views, view_sizes (thumbnail FIRST when tiled), canvas_size (w, h), tile_boxes (canvas px)."""
    proc = ovis2_image_processor(tile, max_tiles)
    covering = get_min_tile_covering_grid((height, width), tile, max_tiles, threshold)
    with no_resampling(), _quiet_channel_guess():
        views, (rows, cols) = proc.crop_image_to_patches(_dummy(height, width, 3), 1, max_tiles,
                                                         covering_threshold=threshold,
                                                         patch_size=SizeDict(height=tile, width=tile),
                                                         resample=proc.resample)
    tiles = views[1:] if len(views) > 1 else views
    canvas = tiles[0].base if tiles[0].base is not None else tiles[0]
    return {
        "covering_grid": tuple(covering),
        "grid": (int(rows), int(cols)),
        "num_views": len(views),
        "view_sizes": [(int(v.shape[-1]), int(v.shape[-2])) for v in views],
        "canvas_size": (int(canvas.shape[-1]), int(canvas.shape[-2])),
        "tile_boxes": [_box_in(canvas, t) for t in tiles],
    }


def ovis2_processor_tokens(width: int, height: int, tile: int = 448, max_tiles: int = 9) -> dict:
    """Ovis2Processor's own expansion, counted in its input_ids. Keys: grid (rows, cols) read back from the
    <IMG_ROW> / <IMG_COL> markers (the processor drops its `grids` output), num_views, image_tokens
    (<IMG_ATOM>), markers (the five indicator tokens), view_sizes."""
    proc = ovis2_processor(tile, max_tiles)
    out = _shape_only_call(proc, "<image> describe", width, height)
    ids = out["input_ids"][0].tolist()
    pv = out["pixel_values"]
    rows = _count(ids, proc.tokenizer, "<IMG_ROW>") + 1
    cols = _count(ids, proc.tokenizer, "<IMG_COL>") // rows + 1
    return {
        "grid": (rows, cols),
        "num_views": int(pv.shape[0]),
        "view_sizes": [(int(pv.shape[-1]), int(pv.shape[-2]))] * int(pv.shape[0]),
        "image_tokens": _count(ids, proc.tokenizer, "<IMG_ATOM>"),
        "markers": sum(_count(ids, proc.tokenizer, m) for m in OVIS2_MARKERS),
    }


def ovis2_pixel_values(image, tile: int = 448, max_tiles: int = 9) -> np.ndarray:
    """The real Ovis2ImageProcessorPil's pixel_values (views, 3, tile, tile), float32."""
    return np.asarray(ovis2_image_processor(tile, max_tiles)(image, return_tensors="np")["pixel_values"])


# --------------------------------------------------------------------------------------------------------------
# InternVL through InternVLProcessor
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def internvl_processor(tile: int = 448, min_tiles: int = 1, max_tiles: int = 12,
                       tokens_per_tile: int = 256) -> InternVLProcessor:
    image_processor = GotOcr2ImageProcessorPil(size={"height": tile, "width": tile}, crop_to_patches=True,
                                               min_patches=min_tiles, max_patches=max_tiles,
                                               image_mean=IMAGENET_STANDARD_MEAN, image_std=IMAGENET_STANDARD_STD)
    tokenizer = local_tokenizer(tuple(INTERNVL_TOKENS.items()))
    return _processor(InternVLProcessor, image_processor=image_processor, tokenizer=tokenizer,
                      video_processor=None, image_seq_length=tokens_per_tile)


def internvl_processor_tokens(width: int, height: int, tile: int = 448, min_tiles: int = 1,
                              max_tiles: int = 12) -> dict:
    """InternVLProcessor's input_ids for one image. Keys: grid (get_optimal_tiled_canvas, as (rows, cols)),
    num_views (the processor's patches), view_sizes, image_tokens (<IMG_CONTEXT>), markers (<img>, </img>)."""
    proc = internvl_processor(tile, min_tiles, max_tiles)
    cols, rows = get_optimal_tiled_canvas((height, width), (tile, tile), min_tiles, max_tiles)
    if max_tiles <= 1:
        cols = rows = 1
    out = _shape_only_call(proc, "<IMG_CONTEXT> describe", width, height)
    ids = out["input_ids"][0].tolist()
    pv = out["pixel_values"]
    return {
        "grid": (int(rows), int(cols)),
        "num_views": int(pv.shape[0]),
        "view_sizes": [(int(pv.shape[-1]), int(pv.shape[-2]))] * int(pv.shape[0]),
        "image_tokens": _count(ids, proc.tokenizer, "<IMG_CONTEXT>"),
        "markers": _count(ids, proc.tokenizer, "<img>") + _count(ids, proc.tokenizer, "</img>"),
    }


def internvl_pixel_values(image, tile: int = 448, max_tiles: int = 12) -> np.ndarray:
    processor = internvl_processor(tile, 1, max_tiles).image_processor
    return np.asarray(processor(image, return_tensors="np")["pixel_values"])

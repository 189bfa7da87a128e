"""Reference geometry obtained by running the installed transformers' OWN code (5.23, PIL backends).

Every ``*_geometry(width, height, ...)`` function calls transformers' size/count functions, processor methods
and model methods directly and returns a plain dict; nothing here re-derives a formula that transformers
computes itself (the only glue is orchestration and unit conversion). Image processors are constructed
with explicit arguments (the class defaults are not the checkpoints'). Where a processor method must "resize" an image to reveal a size
or a crop, it runs inside :func:`no_resampling`, which replaces only the final pixel-resampling call
(``image_processing_backends.np_resize``) by a lazily-allocated zero array of the requested shape — every
size decision stays transformers'. Tile boxes are read back from the memory offsets of the numpy views
the processor slices out of its canvas. Processor/model methods that need a tokenizer or a built model are
called on a bare instance / namespace carrying only the attributes they read (see ``_bare``).

The ``*_processor_run(width, height, ...)`` functions instead run the real PIL image processor on a random
RGB image of that size (real pixels; keep sizes small, they are slow) and report output shapes plus the
token count the processor's own ``replace_image_token`` expands to.

Common return keys (only those that apply):
  grid        (rows, cols) of the tile grid; single-view cases give (1, 1)
  num_views   images fed to the vision encoder, global view / thumbnail included
  token_count visual tokens (embedding positions incl. newline embeddings) the LLM receives
  view_sizes  [(w, h), ...] of each view in the model's sequence order
  canvas_size (w, h) of the resized/padded image the tiles are cut from
plus strategy-specific fields documented on each function.

Which transformers code backs which strategy
  llava-1.5   models/llava/image_processing_pil_llava.py LlavaImageProcessorPil (.resize, .center_crop,
              .pad_to_square), image_transforms.get_resize_output_image_size (via PilBackend.resize);
              tokens: processing_llava.LlavaProcessor._get_num_multimodal_tokens / .replace_image_token
  llava-next  image_processing_utils.select_best_resolution, get_patch_output_size;
              LlavaNextImageProcessorPil._get_padding_size, .get_image_patches (image_transforms.divide_to_patches);
              processing_llava_next.LlavaNextProcessor._get_num_multimodal_tokens (-> _get_number_of_features,
              _get_unpadded_features) / .replace_image_token;
              modeling_llava_next.get_anyres_image_grid_shape, image_size_to_num_patches, unpad_image and
              LlavaNextModel.pack_image_features run on dummy features (tokens_model)
  llava-onevision  the same through models/llava_onevision (LlavaOnevisionImageProcessorPil,
              LlavaOnevisionProcessor, modeling_llava_onevision helpers and LlavaOnevisionModel.pack_image_features,
              which performs the anyres_max bilinear downsample)
  qwen2-vl    models/qwen2_vl/image_processing_pil_qwen2_vl.smart_resize, Qwen2VLImageProcessorPil.resize /
              .get_number_of_image_patches; processing_qwen2_vl.Qwen2VLProcessor._get_num_multimodal_tokens /
              .replace_image_token
  idefics3 / smolvlm  models/idefics3/image_processing_pil_idefics3.py (and the generated smolvlm copy):
              Idefics3ImageProcessorPil.resize (get_resize_output_image_size, _resize_output_size_rescale_to_max_len,
              _resize_output_size_scale_below_upper_bound), .resize_for_vision_encoder, .split_images,
              .get_number_of_image_patches; processing_idefics3.Idefics3Processor.replace_image_token /
              ._get_num_multimodal_tokens; processing_smolvlm.get_image_prompt_string
  internvl    models/got_ocr2/image_processing_pil_got_ocr2.py get_optimal_tiled_canvas,
              GotOcr2ImageProcessorPil.crop_image_to_patches / .get_number_of_image_patches;
              processing_internvl.InternVLProcessor._get_num_multimodal_tokens / .replace_image_token
  minicpm-v 4.6  models/minicpmv4_6/image_processing_pil_minicpmv4_6.py MiniCPMV4_6ImageProcessorPil.preprocess
              (get_sliced_grid, find_best_resize, get_refine_size, divide_to_patches) run with resampling stubbed;
              processing_minicpmv4_6.MiniCPMV4_6Processor.replace_image_token
Not in transformers 5.23 (no reference here): original LLaVA/LLaVA-NeXT repos, MiniCPM-V 2.6, LLaVA-UHD,
UReader/DocOwl, DeepSeek-VL2 (models/deepseek_vl is v1), qwen-vl-utils rounding, NaViT.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import types

import numpy as np
import torch

import transformers.image_processing_backends as _hf_backends
from transformers.utils import logging as _hf_logging
from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
from transformers.image_utils import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ChannelDimension,
    SizeDict,
)
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorPil,
    get_optimal_tiled_canvas,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.idefics3.processing_idefics3 import Idefics3Processor
from transformers.models.internvl.processing_internvl import InternVLProcessor
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.llava.processing_llava import LlavaProcessor
from transformers.models.llava_next import modeling_llava_next as _next_modeling
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor
from transformers.models.llava_onevision import modeling_llava_onevision as _ov_modeling
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor
from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil
from transformers.models.minicpmv4_6.processing_minicpmv4_6 import MiniCPMV4_6Processor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string as smolvlm_image_prompt_string

__all__ = [
    "LLAVA_NEXT_PINPOINTS",
    "ONEVISION_PINPOINTS",
    "IDEFICS3_PRESETS",
    "no_resampling",
    "llava15_geometry",
    "llava15_processor_run",
    "llava_next_geometry",
    "llava_next_processor_run",
    "llava_onevision_geometry",
    "llava_onevision_processor_run",
    "qwen2_vl_geometry",
    "qwen2_vl_processor_run",
    "idefics3_geometry",
    "idefics3_processor_run",
    "internvl_geometry",
    "internvl_processor_run",
    "minicpmv46_geometry",
    "minicpmv46_processor_run",
]

# llava-hf/llava-v1.6-* config; transformers reads each entry as (height, width).
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# LlavaOnevisionImageProcessorPil class default == llava-hf ov checkpoints: (i*384, j*384), i outer, i, j in 1..6.
ONEVISION_PINPOINTS = [list(p) for p in LlavaOnevisionImageProcessorPil.image_grid_pinpoints]
SIGLIP_MEAN = SIGLIP_STD = [0.5, 0.5, 0.5]

# (longest_edge, tile_size, tokens_per_tile) of the preprocessor configs of the Idefics3 / SmolVLM checkpoints.
IDEFICS3_PRESETS = {
    "idefics3": (1456, 364, 169),  # HuggingFaceM4/Idefics3-8B-Llama3
    "smolvlm": (1536, 384, 81),  # HuggingFaceTB/SmolVLM-Instruct, SmolVLM2-2.2B
    "smolvlm2-256m": (2048, 512, 64),  # HuggingFaceTB/SmolVLM2-256M/500M-Video-Instruct
}

_IMAGE_TOKEN = "<image>"


# --------------------------------------------------------------------------------------------------------------
# plumbing
# --------------------------------------------------------------------------------------------------------------

_RESAMPLE_LOCK = threading.RLock()


@contextlib.contextmanager
def no_resampling():
    """Inside this block transformers' PIL backend returns a zero array of the requested shape instead of
    resampling pixels. Everything that decides sizes (PilBackend.resize and the model processors' overrides)
    still runs; np.zeros is lazily allocated, so even a 4096-px "resize" costs nothing until written."""

    def _shape_only_resize(image, size, resample=None, reducing_gap=None, data_format=None,
                           input_data_format=None, **kwargs):
        assert input_data_format in (ChannelDimension.FIRST, "channels_first")
        assert data_format in (None, ChannelDimension.FIRST, "channels_first")
        return np.zeros((image.shape[0], int(size[0]), int(size[1])), dtype=image.dtype)

    with _RESAMPLE_LOCK:
        original = _hf_backends.np_resize
        _hf_backends.np_resize = _shape_only_resize
        try:
            yield
        finally:
            _hf_backends.np_resize = original


@contextlib.contextmanager
def _quiet_channel_guess():
    """GotOcr2's crop_image_to_patches re-infers the channel axis and logs "ambiguous" for widths of 1 or 3 px
    (with PIL input too); silence that log line only."""
    logger = _hf_logging.get_logger("transformers.image_utils")
    level = logger.level
    logger.setLevel(_hf_logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _dummy(height: int, width: int, channels: int = 1) -> np.ndarray:
    """Channels-first placeholder image; only its shape is ever read (lazily allocated)."""
    return np.zeros((channels, height, width), dtype=np.uint8)


def _box_in(base: np.ndarray, view: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of `view`, a slice of the C-contiguous channels-first array `base`, in base's pixels."""
    assert base.flags.c_contiguous and np.may_share_memory(base, view)
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    y, rem = divmod(offset % base.strides[0], base.strides[1])
    x = rem // base.strides[2]
    h, w = view.shape[-2:]
    return (int(x), int(y), int(x + w), int(y + h))


def _bare(cls, **attrs):
    """An instance of `cls` created without __init__, carrying only `attrs`, so that transformers' own
    (processor) methods can be called without a tokenizer or checkpoint."""
    obj = object.__new__(cls)
    obj.__dict__.update(attrs)
    return obj


def _no_kwargs(**kwargs):  # stands in for ProcessorMixin._merge_kwargs (no call-time overrides)
    return {"images_kwargs": {}, "videos_kwargs": {}}


def _as_lists(pinpoints) -> list[list[int]]:
    return [[int(a), int(b)] for a, b in pinpoints]


def _as_key(pinpoints) -> tuple[tuple[int, int], ...]:
    return tuple((int(a), int(b)) for a, b in pinpoints)


def _random_image(width: int, height: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), mode="RGB")


def _hw(x) -> tuple[int, int]:
    return (int(x[0]), int(x[1]))


# --------------------------------------------------------------------------------------------------------------
# 1. LLaVA-1.5
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _llava_processor(image_size: int, do_pad: bool) -> LlavaImageProcessorPil:
    return LlavaImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_pad=do_pad,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


def _llava_text_processor(image_processor, patch_size: int):
    return _bare(
        LlavaProcessor,
        image_processor=image_processor,
        patch_size=patch_size,
        num_additional_image_tokens=1,  # CLIP CLS
        vision_feature_select_strategy="default",
        image_token=_IMAGE_TOKEN,
        _merge_kwargs=_no_kwargs,
    )


def llava15_geometry(width: int, height: int, mode: str = "crop", image_size: int = 336, patch_size: int = 14) -> dict:
    """LLaVA-1.5 single view. mode="crop" = LlavaImageProcessorPil(do_pad=False) (llava-hf default: resize
    shortest edge, centre crop); mode="pad" = do_pad=True (pad to square with the CLIP-mean colour, then resize).

    Keys: grid, num_views, token_count, view_sizes, canvas_size, tokens_per_view, pixel_values_shape (3, h, w), and
      crop: resized_hw, crop_top_left (top, left) in the resized image, visible_box_in_original [x0, y0, x1, y1];
            canvas_size = resized (w, h) the crop is cut from
      pad:  padded_square, paste_offset_xy, image_box_in_view [x0, y0, x1, y1] (image inside the 336 view);
            canvas_size = (336, 336)
    """
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    proc = _llava_processor(image_size, mode == "pad")
    out: dict = {"mode": mode}
    with no_resampling():
        if mode == "pad":
            # Same call as LlavaImageProcessorPil._preprocess (one channel of ones, background 0, so the
            # pasted region can be located).
            ones = np.broadcast_to(np.ones((1, 1, 1), dtype=np.uint8), (1, height, width))
            square = proc.pad_to_square(ones, background_color=0)
            side = square.shape[-1]
            top = int(np.argmax(square[0].any(axis=1)))  # first row / column holding the pasted image
            left = int(np.argmax(square[0].any(axis=0)))
            image = square
            out.update(padded_square=int(side), paste_offset_xy=(left, top))
        else:
            image = _dummy(height, width)
        resized = proc.resize(image=image, size=proc.size, resample=proc.resample)
        cropped = proc.center_crop(resized, proc.crop_size)
    rh, rw = resized.shape[-2:]
    x0, y0, x1, y1 = _box_in(resized, cropped)
    ch, cw = cropped.shape[-2:]
    if mode == "crop":
        out.update(
            resized_hw=(rh, rw),
            crop_top_left=(y0, x0),
            visible_box_in_original=(x0 * width / rw, y0 * height / rh, x1 * width / rw, y1 * height / rh),
            canvas_size=(rw, rh),
        )
    else:
        side, (left, top) = out["padded_square"], out["paste_offset_xy"]
        s = cw / side
        out.update(
            image_box_in_view=(left * s, top * s, (left + width) * s, (top + height) * s),
            canvas_size=(cw, ch),
        )
    text_proc = _llava_text_processor(proc, patch_size)
    tokens = text_proc._get_num_multimodal_tokens(image_sizes=[(height, width)]).num_image_tokens[0]
    out.update(
        grid=(1, 1),
        num_views=1,
        view_sizes=[(cw, ch)],
        pixel_values_shape=(3, ch, cw),
        tokens_per_view=[tokens],
        token_count=tokens,
    )
    return out


def llava15_processor_run(width: int, height: int, mode: str = "crop", image_size: int = 336,
                          patch_size: int = 14, seed: int = 0) -> dict:
    """Runs LlavaImageProcessorPil on a random image. Keys: pixel_values_shape (views, 3, h, w), num_views,
    view_sizes, token_count (from LlavaProcessor.replace_image_token on the real output)."""
    proc = _llava_processor(image_size, mode == "pad")
    res = proc(_random_image(width, height, seed), return_tensors="np")
    pv = np.asarray(res["pixel_values"])
    text = _llava_text_processor(proc, patch_size).replace_image_token(res, 0)
    return {
        "pixel_values_shape": tuple(pv.shape),
        "num_views": 1,
        "view_sizes": [(int(pv.shape[-1]), int(pv.shape[-2]))],
        "token_count": text.count(_IMAGE_TOKEN),
    }


# --------------------------------------------------------------------------------------------------------------
# 2./3. LLaVA-NeXT and LLaVA-OneVision (AnyRes)
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _llava_next_processor(pinpoints_key, tile: int) -> LlavaNextImageProcessorPil:
    return LlavaNextImageProcessorPil(
        size={"shortest_edge": tile},
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=_as_lists(pinpoints_key),
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


@functools.lru_cache(maxsize=16)
def _onevision_processor(pinpoints_key, tile: int) -> LlavaOnevisionImageProcessorPil:
    return LlavaOnevisionImageProcessorPil(
        size={"height": tile, "width": tile},
        image_grid_pinpoints=_as_lists(pinpoints_key),
        image_mean=SIGLIP_MEAN,
        image_std=SIGLIP_STD,
    )


def _next_text_processor(image_processor, patch_size: int, strategy: str, num_additional: int):
    return _bare(
        LlavaNextProcessor,
        image_processor=image_processor,
        patch_size=patch_size,
        num_additional_image_tokens=num_additional,
        vision_feature_select_strategy=strategy,
        image_token=_IMAGE_TOKEN,
        _merge_kwargs=_no_kwargs,
    )


def _ov_text_processor(image_processor, num_image_tokens: int, vision_aspect_ratio: str):
    return _bare(
        LlavaOnevisionProcessor,
        image_processor=image_processor,
        num_image_tokens=num_image_tokens,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=vision_aspect_ratio,
        image_token=_IMAGE_TOKEN,
        _merge_kwargs=_no_kwargs,
    )


def _model_config(pinpoints, tile: int, patch_size: int):
    return types.SimpleNamespace(
        image_grid_pinpoints=_as_lists(pinpoints),
        vision_config=types.SimpleNamespace(image_size=tile, patch_size=patch_size),
    )


def _count_packed(features: torch.Tensor) -> tuple[int, int, int]:
    """(base, grid, newline) positions in a packed sequence built from marker values 0 / 1 / 2."""
    marks = torch.round(features[:, 0]).to(torch.int64)
    return (int((marks == 0).sum()), int((marks == 1).sum()), int((marks == 2).sum()))


def _anyres_geometry(width, height, *, proc, modeling, pinpoints, tile, patch_size, base_features,
                     pack) -> dict:
    """Shared AnyRes part: canvas choice, resize/pad, tiles (processor), grid/num_patches/unpad (model)."""
    pinpoints = _as_lists(pinpoints)
    image_hw = (height, width)
    best = select_best_resolution(image_hw, pinpoints)
    dummy = _dummy(height, width)
    new_hw = get_patch_output_size(dummy, best, input_data_format=ChannelDimension.FIRST)
    (pad_top, pad_bottom), (pad_left, pad_right) = proc._get_padding_size(new_hw, best)
    with no_resampling():
        views = proc.get_image_patches(dummy, pinpoints, size=(tile, tile), patch_size=tile, resample=proc.resample)
        # then each view goes through the per-view resize (+ centre crop) of _preprocess
        final_views = []
        for view in views:
            view = proc.resize(image=view, size=proc.size, resample=proc.resample)
            if proc.do_center_crop:
                view = proc.center_crop(view, proc.crop_size)
            final_views.append(view)
    tiles = views[1:]
    canvas = tiles[0].base if tiles[0].base is not None else tiles[0]
    assert tuple(canvas.shape[-2:]) == tuple(best), (canvas.shape, best)
    tile_boxes = [_box_in(canvas, t) for t in tiles]

    rows, cols = modeling.get_anyres_image_grid_shape(list(image_hw), pinpoints, tile)
    num_patches = modeling.image_size_to_num_patches(list(image_hw), pinpoints, tile)
    g = tile // patch_size
    unpadded = modeling.unpad_image(torch.empty(1, rows * g, cols * g), list(image_hw))

    # The model's own packing, on marker features: base view = 0, tiles = 1, image_newline = 2.
    feats = torch.ones(num_patches, base_features, 1)
    feats[0] = 0.0
    packed_list, lens = pack(feats)
    n_base, n_grid, n_newline = _count_packed(packed_list[0])
    assert n_base + n_grid + n_newline == int(lens[0])
    final_h = n_newline
    final_w = n_grid // n_newline if n_newline else 0

    return {
        "grid": (int(rows), int(cols)),
        "num_views": int(num_patches),
        "num_views_from_processor": len(views),
        "view_sizes": [(int(v.shape[-1]), int(v.shape[-2])) for v in final_views],
        "crop_sizes": [(int(v.shape[-1]), int(v.shape[-2])) for v in views],
        "canvas_size": (int(best[1]), int(best[0])),
        "best_resolution_hw": _hw(best),
        "resized_hw_inside_canvas": _hw(new_hw),
        "pad_top_bottom_left_right": (int(pad_top), int(pad_bottom), int(pad_left), int(pad_right)),
        "tile_boxes_canvas": tile_boxes,
        "image_sizes_hw": image_hw,
        "unpadded_feature_hw": (int(unpadded.shape[1]), int(unpadded.shape[2])),
        "final_feature_hw": (final_h, final_w),
        "tokens_model": int(lens[0]),
        "token_count": int(lens[0]),
        "_counts": (n_base, n_grid, n_newline),
    }


def llava_next_geometry(width: int, height: int, grid_pinpoints=None, tile: int = 336, patch_size: int = 14,
                        vision_feature_select_strategy: str = "default", num_additional_image_tokens: int = 1) -> dict:
    """LLaVA-NeXT AnyRes as transformers does it (pinpoints read as (h, w)).

    Keys: grid (rows, cols), num_views (model's image_size_to_num_patches), num_views_from_processor,
    view_sizes (global first, after the per-view resize/crop), crop_sizes (the same views as cut, before it), canvas_size (w, h), best_resolution_hw, resized_hw_inside_canvas,
    pad_top_bottom_left_right, tile_boxes_canvas [x0, y0, x1, y1] row-major, image_sizes_hw,
    unpadded_feature_hw (model's unpad_image), final_feature_hw (rows x cols of the packed map, = unpadded),
    tokens_processor (LlavaNextProcessor._get_num_multimodal_tokens), tokens_model (LlavaNextModel.pack_image_features
    length), token_count (= tokens_model), token_breakdown {base, unpadded, newlines}.
    """
    pinpoints = LLAVA_NEXT_PINPOINTS if grid_pinpoints is None else grid_pinpoints
    proc = _llava_next_processor(_as_key(pinpoints), tile)
    fake_model = types.SimpleNamespace(config=_model_config(pinpoints, tile, patch_size))
    image_sizes = torch.tensor([[height, width]])

    def pack(feats):
        return _next_modeling.LlavaNextModel.pack_image_features(
            fake_model, [feats], image_sizes, vision_feature_select_strategy, image_newline=torch.full((1,), 2.0)
        )

    g = tile // patch_size
    out = _anyres_geometry(width, height, proc=proc, modeling=_next_modeling, pinpoints=pinpoints, tile=tile,
                           patch_size=patch_size, base_features=g * g, pack=pack)
    n_base, n_grid, n_newline = out.pop("_counts")
    out["token_breakdown"] = {"base": n_base, "unpadded": n_grid, "newlines": n_newline}
    text_proc = _next_text_processor(proc, patch_size, vision_feature_select_strategy, num_additional_image_tokens)
    out["tokens_processor"] = int(
        text_proc._get_num_multimodal_tokens(image_sizes=[(height, width)]).num_image_tokens[0]
    )
    return out


def llava_onevision_geometry(width: int, height: int, grid_pinpoints=None, tile: int = 384, patch_size: int = 14,
                             vision_aspect_ratio: str = "anyres_max_9", multi_image: bool = False) -> dict:
    """LLaVA-OneVision AnyRes (SigLIP, strategy "full", anyres_max bilinear downsample in the model).

    Keys: as llava_next_geometry, plus final_feature_hw = map after the anyres_max bilinear downsample
    (from LlavaOnevisionModel.pack_image_features), token_breakdown {base, grid, newlines},
    anyres_max_ratio (sqrt(unpadded area / (max * g^2)) from the unpadded map; informational).
    multi_image=True: the >1-image-per-sample path (pad_to_square + resize, one view, base + 1 newline).
    """
    pinpoints = ONEVISION_PINPOINTS if grid_pinpoints is None else grid_pinpoints
    proc = _onevision_processor(_as_key(pinpoints), tile)
    g = tile // patch_size
    text_proc = _ov_text_processor(proc, g * g, vision_aspect_ratio)
    fake_model = types.SimpleNamespace(config=_model_config(pinpoints, tile, patch_size))
    image_sizes = torch.tensor([[height, width]])

    def pack(feats):
        return _ov_modeling.LlavaOnevisionModel.pack_image_features(
            fake_model, [feats], image_sizes, image_newline=torch.full((1,), 2.0),
            vision_aspect_ratio=vision_aspect_ratio,
        )

    if multi_image:
        feats = torch.zeros(1, g * g, 1)
        packed, lens = pack(feats)
        n_base, n_grid, n_newline = _count_packed(packed[0])
        res = {"image_sizes": [(height, width)], "batch_num_images": [2], "pixel_values": None}
        text = text_proc.replace_image_token(res, 0)
        return {
            "grid": (1, 1),
            "num_views": 1,
            "view_sizes": [(tile, tile)],
            "canvas_size": (tile, tile),
            "tokens_model": int(lens[0]),
            "tokens_processor": text.count(_IMAGE_TOKEN),
            "token_count": int(lens[0]),
            "token_breakdown": {"base": n_base, "grid": n_grid, "newlines": n_newline},
        }

    out = _anyres_geometry(width, height, proc=proc, modeling=_ov_modeling, pinpoints=pinpoints, tile=tile,
                           patch_size=patch_size, base_features=g * g, pack=pack)
    n_base, n_grid, n_newline = out.pop("_counts")
    out["token_breakdown"] = {"base": n_base, "grid": n_grid, "newlines": n_newline}
    uh, uw = out["unpadded_feature_hw"]
    max_tiles = int(vision_aspect_ratio.strip("anyres_max_"))  # same parsing as transformers (character set!)
    out["anyres_max_ratio"] = (uh * uw / (max_tiles * g * g)) ** 0.5
    out["tokens_processor"] = int(
        text_proc._get_num_multimodal_tokens(image_sizes=[(height, width)]).num_image_tokens[0]
    )
    return out


def _anyres_processor_run(proc, text_proc, width, height, seed, **call_kwargs) -> dict:
    res = proc(_random_image(width, height, seed), return_tensors="np", **call_kwargs)
    pv = np.asarray(res["pixel_values"])
    text = text_proc.replace_image_token(res, 0)
    return {
        "pixel_values_shape": tuple(pv.shape),
        "num_views": int(pv.shape[1]),
        "view_sizes": [(int(pv.shape[-1]), int(pv.shape[-2]))] * int(pv.shape[1]),
        "image_sizes_hw": _hw(np.asarray(res["image_sizes"])[0]),
        "token_count": text.count(_IMAGE_TOKEN),
    }


def llava_next_processor_run(width: int, height: int, grid_pinpoints=None, tile: int = 336, patch_size: int = 14,
                             seed: int = 0) -> dict:
    """Runs LlavaNextImageProcessorPil on a random image. Keys: pixel_values_shape (1, views, 3, t, t), num_views,
    view_sizes, image_sizes_hw, token_count (LlavaNextProcessor.replace_image_token on the real output)."""
    pinpoints = LLAVA_NEXT_PINPOINTS if grid_pinpoints is None else grid_pinpoints
    proc = _llava_next_processor(_as_key(pinpoints), tile)
    return _anyres_processor_run(proc, _next_text_processor(proc, patch_size, "default", 1), width, height, seed)


def llava_onevision_processor_run(width: int, height: int, grid_pinpoints=None, tile: int = 384,
                                  patch_size: int = 14, vision_aspect_ratio: str = "anyres_max_9",
                                  seed: int = 0) -> dict:
    """Runs LlavaOnevisionImageProcessorPil (single image). Keys as llava_next_processor_run."""
    pinpoints = ONEVISION_PINPOINTS if grid_pinpoints is None else grid_pinpoints
    proc = _onevision_processor(_as_key(pinpoints), tile)
    g = tile // patch_size
    return _anyres_processor_run(proc, _ov_text_processor(proc, g * g, vision_aspect_ratio), width, height, seed)


# --------------------------------------------------------------------------------------------------------------
# 4. Qwen2-VL
# --------------------------------------------------------------------------------------------------------------

QWEN2_VL_CHECKPOINT_MAX_PIXELS = 12845056  # Qwen2-VL-*-Instruct / Qwen2.5-VL preprocessor_config (16384 * 28^2)
QWEN2_VL_CLASS_DEFAULT_MAX_PIXELS = 1003520  # Qwen2VLImageProcessorPil default (1280 * 28^2)


@functools.lru_cache(maxsize=16)
def _qwen_processor(min_pixels: int, max_pixels: int, patch_size: int, merge_size: int) -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size, merge_size=merge_size,
        temporal_patch_size=2, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD,
    )


def _qwen_text_processor(image_processor):
    return _bare(Qwen2VLProcessor, image_processor=image_processor, image_token="<|image_pad|>",
                 _merge_kwargs=_no_kwargs)


def qwen2_vl_geometry(width: int, height: int, min_pixels: int = 3136,
                      max_pixels: int = QWEN2_VL_CHECKPOINT_MAX_PIXELS, patch_size: int = 14,
                      merge_size: int = 2) -> dict:
    """Qwen2-VL smart_resize (transformers rounding). Raises ValueError (from smart_resize) when the aspect
    ratio exceeds 200.

    Keys: grid (1, 1), num_views 1, view_sizes [(w, h)], canvas_size (w, h), resized_hw (smart_resize),
    resized_hw_processor (Qwen2VLImageProcessorPil.resize), grid_thw (1, h/p, w/p), merged_grid_hw,
    num_patches (get_number_of_image_patches), tokens_processor (Qwen2VLProcessor._get_num_multimodal_tokens),
    token_count.
    """
    proc = _qwen_processor(min_pixels, max_pixels, patch_size, merge_size)
    factor = patch_size * merge_size
    rh, rw = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    with no_resampling():
        resized = proc.resize(_dummy(height, width), size=proc.size, resample=proc.resample, factor=factor)
    num_patches = proc.get_number_of_image_patches(height, width, {})
    tokens = _qwen_text_processor(proc)._get_num_multimodal_tokens(image_sizes=[(height, width)]).num_image_tokens[0]
    return {
        "grid": (1, 1),
        "num_views": 1,
        "view_sizes": [(rw, rh)],
        "canvas_size": (rw, rh),
        "resized_hw": (rh, rw),
        "resized_hw_processor": _hw(resized.shape[-2:]),
        "grid_thw": (1, rh // patch_size, rw // patch_size),
        "merged_grid_hw": (rh // factor, rw // factor),
        "num_patches": int(num_patches),
        "tokens_processor": int(tokens),
        "token_count": int(tokens),
    }


def qwen2_vl_processor_run(width: int, height: int, min_pixels: int = 3136,
                           max_pixels: int = QWEN2_VL_CHECKPOINT_MAX_PIXELS, patch_size: int = 14,
                           merge_size: int = 2, seed: int = 0) -> dict:
    """Runs Qwen2VLImageProcessorPil. Keys: grid_thw, pixel_values_shape (patches, C*T*p*p), resized_hw
    (grid_thw * patch), token_count (Qwen2VLProcessor.replace_image_token on the real output)."""
    proc = _qwen_processor(min_pixels, max_pixels, patch_size, merge_size)
    res = proc(_random_image(width, height, seed), return_tensors="np")
    thw = tuple(int(x) for x in np.asarray(res["image_grid_thw"])[0])
    text = _qwen_text_processor(proc).replace_image_token(res, 0)
    return {
        "grid_thw": thw,
        "pixel_values_shape": tuple(np.asarray(res["pixel_values"]).shape),
        "resized_hw": (thw[1] * patch_size, thw[2] * patch_size),
        "num_views": 1,
        "token_count": text.count("<|image_pad|>"),
    }


# --------------------------------------------------------------------------------------------------------------
# 5. Idefics3 / SmolVLM
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _idefics_processor(family: str, longest_edge: int, tile_size: int):
    cls = Idefics3ImageProcessorPil if family == "idefics3" else SmolVLMImageProcessorPil
    return cls(
        size={"longest_edge": longest_edge},
        max_image_size={"longest_edge": tile_size},
        image_mean=IMAGENET_STANDARD_MEAN,
        image_std=IMAGENET_STANDARD_STD,
    )


_IDEFICS_TOKEN_RE = re.compile(r"<fake_token_around_image>|<global-img>|<row_\d+_col_\d+>|<image>|\n\n|\n")


def _idefics_prompt(family: str, rows: int, cols: int, tokens_per_tile: int) -> str:
    if family == "idefics3":
        proc = _bare(Idefics3Processor, fake_image_token="<fake_token_around_image>", image_token=_IMAGE_TOKEN,
                     global_image_tag="<global-img>", image_seq_len=tokens_per_tile)
        return proc.replace_image_token({"rows": [[rows]], "cols": [[cols]]}, 0)
    return smolvlm_image_prompt_string(rows, cols, tokens_per_tile, fake_token_around_image="<fake_token_around_image>",
                                       image_token=_IMAGE_TOKEN, global_image_token="<global-img>")


def _idefics_placeholder_len(prompt: str) -> int:
    """Tokens of the expanded prompt, each special tag one token and "\\n\\n" one token (as the Idefics3/SmolVLM
    Llama-3/SmolLM tokenizers do; processing_idefics3 counts +1 for tokenizers that split it)."""
    pieces = _IDEFICS_TOKEN_RE.findall(prompt)
    assert "".join(pieces) == prompt, "unexpected text in image prompt"
    return len(pieces)


def idefics3_geometry(width: int, height: int, longest_edge: int = 1456, tile_size: int = 364,
                      tokens_per_tile: int = 169, do_image_splitting: bool = True, family: str = "idefics3") -> dict:
    """Idefics3 / SmolVLM image splitting. family="idefics3" uses models/idefics3, "smolvlm" models/smolvlm
    (presets: IDEFICS3_PRESETS).

    Keys: grid (rows, cols; (1, 1) when not split), rows_cols (raw processor values, (0, 0) when not split),
    num_views, view_sizes (tiles row-major, global LAST), canvas_size (w, h) after resize_for_vision_encoder,
    after_longest_edge_resize_hw, after_vision_encoder_resize_hw, tile_boxes (canvas, row-major),
    get_number_of_image_patches (num_patches, rows, cols), token_count (<image> tokens in the processor's
    prompt), placeholder_tokens_total (whole expanded prompt), tokens_processor
    (Idefics3Processor._get_num_multimodal_tokens, idefics3 family only).
    Caution: get_number_of_image_patches (what _get_num_multimodal_tokens / vLLM use) takes the short side's
    ceil from the step-1 size, while resize_for_vision_encoder first scales it with the long side's rounding;
    they agree for the shipped presets (longest_edge a multiple of tile_size) but not e.g. for (1000, 364).
    """
    proc = _idefics_processor(family, longest_edge, tile_size)
    with no_resampling():
        image = proc.resize(_dummy(height, width), size=proc.size, resample=proc.resample)
        if do_image_splitting:
            canvas = proc.resize_for_vision_encoder(image, tile_size, resample=proc.resample)
            frames, rows, cols = proc.split_images(canvas, max_image_size=proc.max_image_size, resample=proc.resample)
        else:
            canvas = proc.resize(image, SizeDict(height=tile_size, width=tile_size), resample=proc.resample)
            frames, rows, cols = [canvas], 0, 0
    tiles = frames[:-1] if rows else []
    prompt = _idefics_prompt(family, rows, cols, tokens_per_tile)
    counted = proc.get_number_of_image_patches(height, width, {"do_image_splitting": do_image_splitting})
    out = {
        "grid": (rows, cols) if rows else (1, 1),
        "rows_cols": (rows, cols),
        "num_views": len(frames),
        "view_sizes": [(int(f.shape[-1]), int(f.shape[-2])) for f in frames],
        "canvas_size": (int(canvas.shape[-1]), int(canvas.shape[-2])),
        "after_longest_edge_resize_hw": _hw(image.shape[-2:]),
        "after_vision_encoder_resize_hw": _hw(canvas.shape[-2:]),
        "tile_boxes": [_box_in(canvas, t) for t in tiles],
        "get_number_of_image_patches": tuple(int(x) for x in counted),
        "token_count": prompt.count(_IMAGE_TOKEN),
        "placeholder_tokens_total": _idefics_placeholder_len(prompt),
    }
    if family == "idefics3":
        text_proc = _bare(Idefics3Processor, image_processor=proc, image_seq_len=tokens_per_tile,
                          _merge_kwargs=lambda **kw: {"images_kwargs": {"do_image_splitting": do_image_splitting}},
                          tokenizer=lambda text, add_special_tokens=False: {"input_ids": [0]})  # "\n\n" = 1 token
        mm = text_proc._get_num_multimodal_tokens(image_sizes=[(height, width)])
        out["tokens_processor"] = int(mm.num_image_tokens[0])  # whole placeholder incl. tags
        out["num_image_patches_processor"] = int(mm.num_image_patches[0])
    return out


def idefics3_processor_run(width: int, height: int, longest_edge: int = 1456, tile_size: int = 364,
                           tokens_per_tile: int = 169, do_image_splitting: bool = True, family: str = "idefics3",
                           seed: int = 0) -> dict:
    """Runs Idefics3ImageProcessorPil / SmolVLMImageProcessorPil (return_row_col_info=True).
    Keys: pixel_values_shape (1, views, 3, h, w), rows_cols, grid, num_views, view_sizes (unpadded, from
    pixel_attention_mask), token_count (<image> tokens of the processor prompt for those rows/cols)."""
    proc = _idefics_processor(family, longest_edge, tile_size)
    res = proc(_random_image(width, height, seed), return_tensors="np", return_row_col_info=True,
               do_image_splitting=do_image_splitting)
    pv = np.asarray(res["pixel_values"])
    mask = np.asarray(res["pixel_attention_mask"])[0]
    rows, cols = int(res["rows"][0][0]), int(res["cols"][0][0])
    prompt = _idefics_prompt(family, rows, cols, tokens_per_tile)
    return {
        "pixel_values_shape": tuple(pv.shape),
        "rows_cols": (rows, cols),
        "grid": (rows, cols) if rows else (1, 1),
        "num_views": int(pv.shape[1]),
        "view_sizes": [(int(m.any(axis=0).sum()), int(m.any(axis=1).sum())) for m in mask],
        "token_count": prompt.count(_IMAGE_TOKEN),
    }


# --------------------------------------------------------------------------------------------------------------
# 6. InternVL (GotOcr2 tiling)
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _gotocr2_processor(tile: int, min_tiles: int, max_tiles: int) -> GotOcr2ImageProcessorPil:
    return GotOcr2ImageProcessorPil(
        size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=min_tiles, max_patches=max_tiles,
        image_mean=IMAGENET_STANDARD_MEAN, image_std=IMAGENET_STANDARD_STD,
    )


def _internvl_text_processor(image_processor, tokens_per_tile: int):
    return _bare(InternVLProcessor, image_processor=image_processor, image_seq_length=tokens_per_tile,
                 start_image_token="<img>", end_image_token="</img>", image_token="<IMG_CONTEXT>",
                 _merge_kwargs=_no_kwargs)


def internvl_geometry(width: int, height: int, tile: int = 448, min_tiles: int = 1, max_tiles: int = 12,
                      use_thumbnail: bool = True, tokens_per_tile: int = 256) -> dict:
    """InternVL dynamic tiling as transformers' InternVL processor does it (GotOcr2ImageProcessorPil,
    crop_to_patches=True).

    Keys: grid (rows, cols), grid_cols_rows (get_optimal_tiled_canvas's (cols, rows)), num_views (thumbnail
    incl.), view_sizes (tiles row-major, thumbnail LAST), canvas_size = resized_wh, tile_boxes, thumbnail (bool),
    num_patches_processor (get_number_of_image_patches), token_count, placeholder_tokens_total (InternVLProcessor.
    _get_num_multimodal_tokens: +2 for <img></img>).
    Note: transformers always appends the thumbnail when the grid has > 1 tile (crop_image_to_patches is called
    with its default use_thumbnail=True); use_thumbnail=False is passed through to that method here.
    """
    proc = _gotocr2_processor(tile, min_tiles, max_tiles)
    cols, rows = get_optimal_tiled_canvas((height, width), (tile, tile), min_tiles, max_tiles)
    if max_tiles > 1:  # as GotOcr2ImageProcessorPil._preprocess
        with no_resampling(), _quiet_channel_guess():
            views = proc.crop_image_to_patches(_dummy(height, width), min_tiles, max_tiles,
                                               use_thumbnail=use_thumbnail, patch_size=proc.size,
                                               resample=proc.resample)
        n_tiles = cols * rows
        tiles = views[:n_tiles]
        canvas = tiles[0].base if tiles[0].base is not None else tiles[0]
        tile_boxes = [_box_in(canvas, t) for t in tiles]
        canvas_size = (int(canvas.shape[-1]), int(canvas.shape[-2]))
    else:
        views, tile_boxes, canvas_size, cols, rows = [np.zeros((1, tile, tile))], [(0, 0, tile, tile)], (tile, tile), 1, 1
    text_proc = _internvl_text_processor(proc, tokens_per_tile)
    num_patches = proc.get_number_of_image_patches(height, width, {})
    mm = text_proc._get_num_multimodal_tokens(image_sizes=[(height, width)])
    token_text = text_proc.replace_image_token({"num_patches": [len(views)]}, 0)
    return {
        "grid": (int(rows), int(cols)),
        "grid_cols_rows": (int(cols), int(rows)),
        "num_views": len(views),
        "view_sizes": [(int(v.shape[-1]), int(v.shape[-2])) for v in views],
        "canvas_size": canvas_size,
        "resized_wh": canvas_size,
        "tile_boxes": tile_boxes,
        "thumbnail": len(views) > cols * rows,
        "num_patches_processor": int(num_patches),
        "token_count": token_text.count("<IMG_CONTEXT>"),
        "placeholder_tokens_total": int(mm.num_image_tokens[0]),
    }


def internvl_processor_run(width: int, height: int, tile: int = 448, min_tiles: int = 1, max_tiles: int = 12,
                           tokens_per_tile: int = 256, seed: int = 0) -> dict:
    """Runs GotOcr2ImageProcessorPil(crop_to_patches=True). Keys: pixel_values_shape (views, 3, t, t),
    num_views, view_sizes, token_count (InternVLProcessor.replace_image_token on the real num_patches)."""
    proc = _gotocr2_processor(tile, min_tiles, max_tiles)
    with _quiet_channel_guess():
        res = proc(_random_image(width, height, seed), return_tensors="np")
    pv = np.asarray(res["pixel_values"])
    text = _internvl_text_processor(proc, tokens_per_tile).replace_image_token(res, 0)
    return {
        "pixel_values_shape": tuple(pv.shape),
        "num_views": int(res["num_patches"][0]),
        "view_sizes": [(int(pv.shape[-1]), int(pv.shape[-2]))] * int(pv.shape[0]),
        "token_count": text.count("<IMG_CONTEXT>"),
    }


# --------------------------------------------------------------------------------------------------------------
# 7. MiniCPM-V 4.6
# --------------------------------------------------------------------------------------------------------------

_MINICPM_TAGS = dict(image_token="<unk>", image_start_token="<image>", image_end_token="</image>",
                     slice_start_token="<slice>", slice_end_token="</slice>")


@functools.lru_cache(maxsize=16)
def _minicpm_processor(max_slice_nums: int, scale_resolution: int, patch_size: int, downsample_mode: str,
                       slice_mode: bool) -> MiniCPMV4_6ImageProcessorPil:
    return MiniCPMV4_6ImageProcessorPil(
        max_slice_nums=max_slice_nums, scale_resolution=scale_resolution, patch_size=patch_size,
        downsample_mode=downsample_mode, slice_mode=slice_mode,
        image_mean=IMAGENET_STANDARD_MEAN, image_std=IMAGENET_STANDARD_STD,
    )


def _minicpm_tokens(res: dict, slice_mode: bool, downsample_mode: str) -> tuple[int, list[int]]:
    text_proc = _bare(MiniCPMV4_6Processor, slice_mode=slice_mode, **_MINICPM_TAGS)
    text = text_proc.replace_image_token(res, 0, image_token_divisor=4 if downsample_mode == "4x" else 16)
    blocks = re.findall(r"<image>((?:<unk>)*)</image>|<slice>((?:<unk>)*)</slice>", text)
    per_view = [len(a or b) // len("<unk>") for a, b in blocks]
    return text.count("<unk>"), per_view


def minicpmv46_geometry(width: int, height: int, max_slice_nums: int = 9, scale_resolution: int = 448,
                        patch_size: int = 14, downsample_mode: str = "16x", slice_mode: bool = True) -> dict:
    """MiniCPM-V 4.6 slicing: MiniCPMV4_6ImageProcessorPil.preprocess run end to end with pixel resampling
    stubbed (no_resampling) and rescale/normalize off.

    Keys: grid (rows, cols; (1, 1) when unsliced), grids_rows_cols (raw processor value, [0, 0] unsliced),
    num_views, view_sizes (source first, then slices row-major), canvas_size (refine (w, h) when sliced, else the
    source size), source_hw, target_sizes_in_patches_hw, tokens_per_view, token_count
    (both from MiniCPMV4_6Processor.replace_image_token).
    """
    proc = _minicpm_processor(max_slice_nums, scale_resolution, patch_size, downsample_mode, slice_mode)
    with no_resampling():
        res = proc(_dummy(height, width, channels=3), input_data_format="channels_first", do_convert_rgb=False,
                   do_rescale=False, do_normalize=False, return_tensors="np")
    ts = [_hw(t) for t in np.asarray(res["target_sizes"])]
    grid_raw = tuple(int(x) for x in res["grids"][0])
    tokens, per_view = _minicpm_tokens(res, slice_mode, downsample_mode)
    view_sizes = [(w * patch_size, h * patch_size) for h, w in ts]
    rows, cols = grid_raw
    if rows:
        sw, sh = view_sizes[1]
        canvas = (sw * cols, sh * rows)
    else:
        canvas = view_sizes[0]
    return {
        "grid": (rows, cols) if rows else (1, 1),
        "grids_rows_cols": grid_raw,
        "num_views": len(ts),
        "view_sizes": view_sizes,
        "canvas_size": canvas,
        "source_hw": (ts[0][0] * patch_size, ts[0][1] * patch_size),
        "target_sizes_in_patches_hw": ts,
        "tokens_per_view": per_view,
        "token_count": tokens,
    }


def minicpmv46_processor_run(width: int, height: int, max_slice_nums: int = 9, scale_resolution: int = 448,
                             patch_size: int = 14, downsample_mode: str = "16x", slice_mode: bool = True,
                             seed: int = 0) -> dict:
    """Runs MiniCPMV4_6ImageProcessorPil on a random image. Keys: grids_rows_cols, target_sizes_in_patches_hw,
    num_views, pixel_values_shape, tokens_per_view, token_count."""
    proc = _minicpm_processor(max_slice_nums, scale_resolution, patch_size, downsample_mode, slice_mode)
    res = proc(_random_image(width, height, seed), return_tensors="np")
    ts = [_hw(t) for t in np.asarray(res["target_sizes"])]
    tokens, per_view = _minicpm_tokens(res, slice_mode, downsample_mode)
    return {
        "grids_rows_cols": tuple(int(x) for x in res["grids"][0]),
        "target_sizes_in_patches_hw": ts,
        "num_views": len(ts),
        "pixel_values_shape": tuple(np.asarray(res["pixel_values"]).shape),
        "tokens_per_view": per_view,
        "token_count": tokens,
    }

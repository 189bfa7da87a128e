"""Reference geometry for Mllama, Llama 4, Aya Vision, Cohere2-Vision, DeepSeek-OCR-2 and Perception-LM, from
the installed transformers' OWN code (5.23), called at test time.

PIL backends (real processors, real tokenizers trained here): Mllama (`MllamaImageProcessorPil`,
`MllamaProcessor`), Aya Vision (`GotOcr2ImageProcessorPil`, `AyaVisionProcessor`), DeepSeek-OCR-2
(`DeepseekOcr2ImageProcessorPil`, `DeepseekOcr2Processor`).

Torchvision backends (torchvision cannot be installed beside this torch): Llama 4, Cohere2-Vision and
Perception-LM. Their modules are imported with a stand-in `torchvision.transforms.v2.functional` that exists only
while they import (`_import_without_torchvision`); their pure size functions (`get_best_fit`,
`find_supported_resolutions`, `get_optimal_tiled_canvas`, `_fit_image_to_canvas`, …) and, for Llama 4, the
size decisions of `Llama4ImageProcessor._preprocess` itself (run on shape-only tensors with the pixel steps
stubbed) are transformers' code; their prompt expansion is the processors' own `replace_image_token` /
`_prompt_split_image` on a bare instance (hf_reference._bare).
"""

from __future__ import annotations

import functools
import importlib
import sys
import types

import numpy as np
import torch

from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.image_utils import SizeDict
from transformers.models.aya_vision.processing_aya_vision import AyaVisionProcessor
from transformers.models.cohere2_vision.processing_cohere2_vision import Cohere2VisionProcessor
from transformers.models.deepseek_ocr2 import image_processing_pil_deepseek_ocr2 as ds2
from transformers.models.deepseek_ocr2.processing_deepseek_ocr2 import DeepseekOcr2Processor
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil, get_optimal_tiled_canvas
from transformers.models.llama4.processing_llama4 import Llama4Processor
from transformers.models.mllama import image_processing_pil_mllama as ml
from transformers.models.mllama.processing_mllama import MllamaProcessor
from transformers.models.perception_lm.processing_perception_lm import PerceptionLMProcessor

from gridvlm.models.tiny import tiny_tokenizer
from hf_reference import _bare, _dummy, _quiet_channel_guess, no_resampling


class _Stop(Exception):
    pass


def _import_without_torchvision(name: str):
    """Import a transformers module whose top line is `from torchvision.transforms.v2 import functional as tvF`,
    with a stand-in package that is removed again right after (nothing else sees a torchvision)."""
    if name in sys.modules:
        return sys.modules[name]
    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.v2", "torchvision.transforms.v2.functional"]
    stubs = {n: types.ModuleType(n) for n in names}
    for parent, child in zip(names, names[1:]):
        setattr(stubs[parent], child.rsplit(".", 1)[1], stubs[child])
    saved = {n: sys.modules.get(n) for n in names}
    sys.modules.update(stubs)
    try:
        return importlib.import_module(name)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def _llama4():
    return _import_without_torchvision("transformers.models.llama4.image_processing_llama4")


def _cohere2():
    return _import_without_torchvision("transformers.models.cohere2_vision.image_processing_cohere2_vision")


def _perception_lm():
    return _import_without_torchvision("transformers.models.perception_lm.image_processing_perception_lm")


def _count(ids, tokenizer, token: str) -> int:
    return list(ids).count(tokenizer.convert_tokens_to_ids(token))


# --------------------------------------------------------------------------------------------------------------
# Mllama


@functools.lru_cache(maxsize=1)
def mllama_processor():
    image_processor = ml.MllamaImageProcessorPil(size={"height": 560, "width": 560}, max_image_tiles=4,
                                                 image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    tok = tiny_tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<|image|>"], "<|begin_of_text|>", "<|end_of_text|>",
                     "<|end_of_text|>", None, {"image_token": "<|image|>"})
    return MllamaProcessor(image_processor=image_processor, tokenizer=tok)


def mllama_geometry(width: int, height: int, tile: int = 560, max_tiles: int = 4) -> dict:
    """get_optimal_tiled_canvas → canvas (h, w); get_image_size_fit_to_canvas → resized (h, w);
    convert_aspect_ratios_to_ids_np → aspect_ratio_id."""
    ch, cw = ml.get_optimal_tiled_canvas(height, width, max_tiles, tile)
    nh, nw = ml.get_image_size_fit_to_canvas(height, width, int(ch), int(cw), tile)
    rows, cols = int(ch) // tile, int(cw) // tile
    ratio_id = int(ml.convert_aspect_ratios_to_ids_np([[(rows, cols)]], max_tiles)[0, 0])
    return {"grid": (rows, cols), "canvas_size": (int(cw), int(ch)), "resized_wh": (int(nw), int(nh)),
            "aspect_ratio_id": ratio_id}


def mllama_run(image) -> dict:
    """The real processor on a real image: pixel_values of the real tiles, num_tiles, <|image|> tokens in input_ids."""
    proc = mllama_processor()
    out = proc(images=[[image]], text=["<|image|>Describe."], return_tensors="np")
    n = int(np.asarray(out["aspect_ratio_mask"])[0, 0].sum())  # the processor drops num_tiles; the mask has it
    return {"pixel_values": np.asarray(out["pixel_values"])[0, 0, :n], "num_tiles": n,
            "image_tokens": _count(out["input_ids"][0], proc.tokenizer, "<|image|>"),
            "aspect_ratio_id": int(out["aspect_ratio_ids"][0, 0])}


# --------------------------------------------------------------------------------------------------------------
# Llama 4


def llama4_geometry(width: int, height: int, tile: int = 336, max_patches: int = 16,
                    resize_to_max_canvas: bool = False) -> dict:
    """Llama4ImageProcessor._preprocess run on a shape-only (uninitialised) tensor, its pixel steps stubbed:
    records the size it resizes to and the canvas it pads to; tokens from Llama4Processor._prompt_split_image."""
    mod = _llama4()
    proc = _bare(mod.Llama4ImageProcessor)
    seen = {}

    def resize(images, size, resample=None, **kw):
        seen.setdefault("resized_hw", (int(size.height), int(size.width)))
        return torch.empty((images.shape[0], 3, int(size.height), int(size.width)), dtype=torch.uint8)

    def pad(images, padding, fill=None):
        seen["canvas_hw"] = (images.shape[-2] + int(padding[3]), images.shape[-1] + int(padding[2]))
        raise _Stop

    proc.resize = resize
    mod.tvF.pad = pad
    mod.find_supported_resolutions.cache_clear()
    image = torch.empty((3, height, width), dtype=torch.uint8)
    try:
        proc._preprocess([image], do_resize=True, size=SizeDict(height=tile, width=tile), resample=None,
                         do_rescale=False, rescale_factor=1 / 255, do_normalize=False, image_mean=None, image_std=None,
                         max_patches=max_patches, resize_to_max_canvas=resize_to_max_canvas, disable_grouping=True,
                         return_tensors=None)
    except _Stop:
        pass
    ch, cw = seen["canvas_hw"]
    rows, cols = ch // tile, cw // tile
    text_proc = _bare(Llama4Processor)
    text = text_proc._prompt_split_image((rows, cols), (tile // 14) ** 2 // 4)
    markers = sum(text.count(m) for m in ("<|image_start|>", "<|image|>", "<|image_end|>", "<|tile_x_separator|>",
                                          "<|tile_y_separator|>"))
    return {"grid": (rows, cols), "canvas_size": (cw, ch), "resized_wh": seen["resized_hw"][::-1],
            "num_views": rows * cols + (rows * cols > 1), "token_count": text.count("<|patch|>"),
            "text_tokens": markers}


# --------------------------------------------------------------------------------------------------------------
# Aya Vision (GOT-OCR2)


@functools.lru_cache(maxsize=1)
def aya_processor():
    image_processor = GotOcr2ImageProcessorPil(size={"height": 364, "width": 364}, crop_to_patches=True,
                                               min_patches=1, max_patches=12, image_mean=IMAGENET_STANDARD_MEAN,
                                               image_std=IMAGENET_STANDARD_STD)
    specials = ["<BOS>", "<EOS>", "<image>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>",
                "<|IMG_LINE_BREAK|>", "TILE_GLOBAL", "TILE"]
    tok = tiny_tokenizer(specials, "<BOS>", "<EOS>", "<EOS>", None, {"image_token": "<image>"})
    return AyaVisionProcessor(image_processor=image_processor, tokenizer=tok, patch_size=28, img_size=364)


AYA_MARKERS = ("<|START_OF_IMG|>", "<|END_OF_IMG|>", "TILE", "TILE_GLOBAL")


def aya_geometry(width: int, height: int) -> dict:
    """get_optimal_tiled_canvas + crop_image_to_patches (shape only); tokens from AyaVisionProcessor's expansion."""
    proc = aya_processor()
    cols, rows = get_optimal_tiled_canvas((height, width), (364, 364), 1, 12)
    with no_resampling(), _quiet_channel_guess():
        views = proc.image_processor.crop_image_to_patches(_dummy(height, width), 1, 12, use_thumbnail=True,
                                                           patch_size=proc.image_processor.size)
    text = proc.replace_image_token({"num_patches": [len(views)]}, 0)
    ids = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
    return {"grid": (rows, cols), "num_views": len(views),
            "view_sizes": [(int(v.shape[-1]), int(v.shape[-2])) for v in views],
            "token_count": _count(ids, proc.tokenizer, "<|IMG_PATCH|>"),
            "text_tokens": sum(_count(ids, proc.tokenizer, m) for m in AYA_MARKERS)}


def aya_run(image) -> dict:
    proc = aya_processor()
    with _quiet_channel_guess():
        out = proc(images=[image], text=["<image>Describe."], return_tensors="np")
    return {"pixel_values": np.asarray(out["pixel_values"]),
            "image_tokens": _count(out["input_ids"][0], proc.tokenizer, "<|IMG_PATCH|>")}


# --------------------------------------------------------------------------------------------------------------
# Cohere2-Vision


def cohere2_geometry(width: int, height: int, tile: int = 512, max_tiles: int = 12) -> dict:
    cols, rows = _cohere2().get_optimal_tiled_canvas((height, width), (tile, tile), 1, max_tiles)
    views = cols * rows + (cols * rows != 1)  # crop_image_to_patches: thumbnail when more than one patch
    proc = _bare(Cohere2VisionProcessor, boi_token="<|START_OF_IMG|>", eoi_token="<|END_OF_IMG|>",
                 image_token="<|IMG_PATCH|>", img_line_break_token="<|IMG_LINE_BREAK|>", patch_size=16)
    text = proc.replace_image_token({"num_patches": [views]}, 0)
    markers = sum(text.count(m) for m in ("<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_LINE_BREAK|>"))
    return {"grid": (int(rows), int(cols)), "num_views": views, "token_count": text.count("<|IMG_PATCH|>"),
            "text_tokens": markers}


# --------------------------------------------------------------------------------------------------------------
# DeepSeek-OCR-2


@functools.lru_cache(maxsize=1)
def deepseek_ocr2_processor():
    tok = tiny_tokenizer(["<BOS>", "<EOS>", "<image>"], "<BOS>", "<EOS>", "<EOS>", None, {"image_token": "<image>"})
    return DeepseekOcr2Processor(image_processor=ds2.DeepseekOcr2ImageProcessorPil(), tokenizer=tok)


def deepseek_ocr2_geometry(width: int, height: int) -> dict:
    """DeepseekOcr2ImageProcessorPil._preprocess with resampling stubbed (zeros): local views' shapes, and where
    the zero (resized) image sits in the gray-127 global square; tokens from the processor's expansion."""
    proc = deepseek_ocr2_processor()
    ip = proc.image_processor
    with no_resampling(), _quiet_channel_guess():
        out = ip._preprocess([_dummy(height, width, 3)], size=ip.size, resample=ip.resample, do_rescale=False,
                             rescale_factor=1 / 255, do_normalize=False, image_mean=None, image_std=None,
                             return_tensors=None)
    glob = np.asarray(out["pixel_values"][0])
    ys, xs = np.nonzero(glob[0] != 127)
    content = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    local = out.get("pixel_values_local", [])
    n = int(out["num_local_patches"][0])
    cols, rows = ds2.get_optimal_tiled_canvas((height, width), (768, 768), 2, 6) if n else (1, 1)
    text = proc.replace_image_token(out, 0)
    return {"grid": (int(rows), int(cols)), "num_views": n + 1,
            "view_sizes": [(int(v.shape[-1]), int(v.shape[-2])) for v in local] + [(glob.shape[-1], glob.shape[-2])],
            "global_content": content, "token_count": text.count("<image>")}


def deepseek_ocr2_run(image) -> dict:
    proc = deepseek_ocr2_processor()
    out = proc(images=[image], text=["<image>Free OCR."], return_tensors="np")
    views = list(np.asarray(out["pixel_values_local"])) if "pixel_values_local" in out else []
    views.append(np.asarray(out["pixel_values"])[0])
    return {"pixel_values": views, "image_tokens": _count(out["input_ids"][0], proc.tokenizer, "<image>")}


# --------------------------------------------------------------------------------------------------------------
# Perception-LM


def perception_lm_geometry(width: int, height: int, tile: int = 448, max_num_tiles: int = 36) -> dict:
    """PerceptionLMImageProcessor.resize's canvas choice (_fit_image_to_canvas, else _find_closest_aspect_ratio)
    on a bare instance; tokens from PerceptionLMProcessor.replace_image_token on a shape-only pixel array."""
    mod = _perception_lm()
    proc = _bare(mod.PerceptionLMImageProcessor, max_num_tiles=max_num_tiles)
    nw, nh = proc._fit_image_to_canvas(img_width=width, img_height=height, tile_size=tile) or \
        proc._find_closest_aspect_ratio(img_width=width, img_height=height, tile_size=tile)
    views = 1 + nw * nh
    text_proc = _bare(PerceptionLMProcessor, patch_size=14, pooling_ratio=2, image_token="<|image|>")
    pixels = np.zeros((views, 3, tile, tile), dtype=np.uint8)
    text = text_proc.replace_image_token({"pixel_values": [pixels]}, 0)
    return {"grid": (nh, nw), "num_views": views, "token_count": text.count("<|image|>")}

"""transformers' own code for the Qwen family, Kimi-VL and Fuyu, called at test time (see test_against_f1.py).

  qwen2.5-vl   models/qwen2_vl smart_resize + Qwen2VLImageProcessorPil; Qwen2_5_VLProcessor (local tokenizer);
               vision_utils.get_vision_window_index (the encoder's windows, read back from window_index)
  qwen3-vl     the same with factor 32 (patch 16); Qwen3VLProcessor
  glm-4.1v     models/glm4v/image_processing_pil_glm4v smart_resize + Glm4vImageProcessorPil; Glm4vProcessor
  paddleocr-vl models/paddleocr_vl/image_processing_pil_paddleocr_vl smart_resize + its PIL processor; processor
  kimi-vl      models/kimi_k25/image_processing_kimi_k25.navit_resize, read from transformers' source with `ast`
               (the module imports torchvision, which cannot be installed here, so the class cannot be imported)
  fuyu         FuyuImageProcessorPil + FuyuProcessor (local tokenizer) on real images
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    FuyuProcessor, Glm4vProcessor, PaddleOCRVLProcessor, PreTrainedTokenizerFast, Qwen2_5_VLProcessor,
    Qwen3VLProcessor,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.fuyu.image_processing_pil_fuyu import FuyuImageProcessorPil
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil
from transformers.models.glm4v.image_processing_pil_glm4v import smart_resize as glm_smart_resize
from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import PaddleOCRVLImageProcessorPil
from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import smart_resize as paddle_smart_resize
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as qwen_smart_resize
from transformers.vision_utils import get_vision_window_index

from hf_reference import _dummy, _random_image, no_resampling  # noqa: E402  (tests/ is on sys.path)

SIGLIP = [0.5, 0.5, 0.5]

# name -> (image processor class, its kwargs, processor class, the image pad token)
FAMILIES = {
    "qwen2.5-vl": (Qwen2VLImageProcessorPil, dict(min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2,
                                                  image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD),
                   Qwen2_5_VLProcessor, "<|image_pad|>"),
    "qwen3-vl": (Qwen2VLImageProcessorPil, dict(min_pixels=65536, max_pixels=16777216, patch_size=16, merge_size=2,
                                                image_mean=SIGLIP, image_std=SIGLIP),
                 Qwen3VLProcessor, "<|image_pad|>"),
    "glm-4.1v": (Glm4vImageProcessorPil, dict(size={"shortest_edge": 12544, "longest_edge": 11760000}),
                 Glm4vProcessor, "<|image|>"),
    "paddleocr-vl": (PaddleOCRVLImageProcessorPil, dict(), PaddleOCRVLProcessor, "<|IMAGE_PLACEHOLDER|>"),
}
_SPECIALS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|image|>", "<|video|>",
             "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
             "<|IMAGE_PLACEHOLDER|>", "<|IMAGE_START|>", "<|IMAGE_END|>", "|SPEAKER|", "|NEWLINE|", "<s>"]


@functools.lru_cache(maxsize=1)
def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built here (no download) that knows every marker token these processors write."""
    vocab = {"[UNK]": 0, "hello": 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                   extra_special_tokens={"image_token": "<|image_pad|>"})
    fast.add_special_tokens({"additional_special_tokens": _SPECIALS})
    return fast


@functools.lru_cache(maxsize=8)
def image_processor(name: str):
    cls, kwargs, _, _ = FAMILIES[name]
    return cls(**kwargs)


@functools.lru_cache(maxsize=8)
def processor(name: str):
    _, _, cls, pad = FAMILIES[name]
    """The family's processor on the local tokenizer. Qwen2.5-VL / Qwen3-VL / GLM-4.1V cannot be constructed
    without torchvision (their video processor), so those are made without __init__ and given their attributes;
    their __call__ (replace_image_token, tokenizing) is transformers' own."""
    tok = tokenizer()
    if cls is PaddleOCRVLProcessor:
        proc = cls(image_processor=image_processor(name), tokenizer=tok)
    else:
        proc = object.__new__(cls)
        proc.__dict__.update(image_processor=image_processor(name), tokenizer=tok, video_processor=None,
                             chat_template=None, video_token="<|video_pad|>",
                             video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                             video_start_id=tok.convert_tokens_to_ids("<|begin_of_video|>"),
                             video_end_id=tok.convert_tokens_to_ids("<|end_of_video|>"))
    proc.image_token = pad
    proc.image_token_id = tok.convert_tokens_to_ids(pad)
    return proc


def resize_geometry(name: str, width: int, height: int) -> dict:
    """The family's own smart_resize and its processor's resize (no pixels), grid_thw and token count."""
    proc = image_processor(name)
    p, m = proc.patch_size, proc.merge_size
    size = proc.size
    lo, hi = size.shortest_edge, size.longest_edge
    if name == "glm-4.1v":
        rh, rw = glm_smart_resize(num_frames=proc.temporal_patch_size, height=height, width=width,
                                  temporal_factor=proc.temporal_patch_size, factor=p * m, min_pixels=lo,
                                  max_pixels=hi)
        kwargs = dict(factor=p * m, temporal_factor=proc.temporal_patch_size)
    elif name == "paddleocr-vl":
        rh, rw = paddle_smart_resize(height, width, factor=p * m, min_pixels=lo, max_pixels=hi)
        kwargs = dict(patch_size=p, merge_size=m)
    else:
        rh, rw = qwen_smart_resize(height, width, factor=p * m, min_pixels=lo, max_pixels=hi)
        kwargs = dict(factor=p * m)
    try:
        with no_resampling():
            resized = proc.resize(_dummy(height, width), size=size, resample=proc.resample, **kwargs)
        processor_hw = tuple(int(v) for v in resized.shape[-2:])
    except TypeError:  # a resize with another signature: the size function above is what it calls
        processor_hw = (rh, rw)
    return {"resized_hw": (rh, rw), "processor_hw": processor_hw, "tokens": (rh // (p * m)) * (rw // (p * m))}


def processor_run(name: str, width: int, height: int, seed: int = 0) -> dict:
    """The real processor on a random image: pixel_values, grid_thw and image pad tokens in input_ids."""
    proc = processor(name)
    out = proc(images=_random_image(width, height, seed), text=[proc.image_token + " hello"], return_tensors="pt")
    ids = out["input_ids"][0].tolist()
    return {"pixel_values": out["pixel_values"], "grid_thw": out["image_grid_thw"],
            "image_tokens": ids.count(proc.image_token_id)}


def window_boxes(resized_hw: tuple[int, int], patch_size: int = 14, merge_size: int = 2,
                 window_size: int = 112) -> list[tuple[int, int, int, int]]:
    """Each attention window of get_vision_window_index as the resized-pixel box of the merged tokens it holds."""
    h, w = resized_hw
    grid = torch.tensor([[1, h // patch_size, w // patch_size]])
    index, cu = get_vision_window_index(grid, merge_size, window_size, patch_size)
    cu = torch.unique_consecutive(torch.as_tensor(cu)).tolist()
    unit = merge_size * merge_size
    tokens = index.tolist()
    gw = w // patch_size // merge_size
    cell = patch_size * merge_size
    boxes = []
    for a, b in zip(cu[:-1], cu[1:]):  # cu_window_seqlens counts patches (merge² per merged token)
        members = tokens[a // unit:b // unit]
        rows = [t // gw for t in members]
        cols = [t % gw for t in members]
        boxes.append((min(cols) * cell, min(rows) * cell, (max(cols) + 1) * cell, (max(rows) + 1) * cell))
    return boxes


@functools.lru_cache(maxsize=1)
def kimi_navit_resize():
    """transformers' `navit_resize` (kimi_k25), compiled from its source file: its module needs torchvision."""
    path = Path(inspect.getfile(transformers)).parent / "models" / "kimi_k25" / "image_processing_kimi_k25.py"
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "navit_resize")
    namespace = {"math": math}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["navit_resize"]


@functools.lru_cache(maxsize=1)
def fuyu_processor() -> FuyuProcessor:
    return FuyuProcessor(image_processor=FuyuImageProcessorPil(), tokenizer=tokenizer())


def fuyu_geometry(width: int, height: int) -> dict:
    """FuyuImageProcessorPil.resize (no pixels) and FuyuProcessor._get_num_multimodal_tokens."""
    proc = fuyu_processor()
    ip = proc.image_processor
    with no_resampling():
        resized = ip.resize(_dummy(height, width), size=ip.size, resample=ip.resample)
    tokens = proc._get_num_multimodal_tokens(image_sizes=[(height, width)]).num_image_tokens[0]
    return {"resized_hw": tuple(int(v) for v in resized.shape[-2:]), "tokens_with_newlines": int(tokens)}


def fuyu_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """FuyuImageProcessorPil's padded, normalised (3, 1080, 1920) image. (FuyuProcessor.__call__ itself fails in
    transformers 5.23: `patchify_image` calls numpy's transpose on the torch tensor the image processor returns.)"""
    out = fuyu_processor().image_processor(_random_image(width, height, seed))
    return np.asarray(out["images"][0][0])

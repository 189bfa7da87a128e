"""Reference geometry, tokens and pixels for gemma3, gemma4, paligemma, pixtral, mistral3 and idefics2, obtained by
running the installed transformers' OWN code (5.23, PIL backends) at test time.

Same conventions as `hf_reference.py` (whose plumbing is reused: `no_resampling`, `_dummy`, `_box_in`, `_bare`):
size decisions and crops come from transformers' functions and processor methods on lazily-allocated dummy
images; token counts from the processors' own `replace_image_token` (or their `__call__`), tokenized with a
word-level tokenizer built locally (notes.md trap 9: no network, no checkpoint), so the counts are counts of
ids in `input_ids`.

Which transformers code backs which strategy
  gemma3     models/gemma3/image_processing_pil_gemma3.py Gemma3ImageProcessorPil.pan_and_scan / __call__;
             processing_gemma3.Gemma3Processor (__call__, replace_image_token, _get_num_multimodal_tokens)
  gemma4     models/gemma4/image_processing_pil_gemma4.py get_aspect_ratio_preserving_size,
             Gemma4ImageProcessorPil (num_soft_tokens_per_image, patchified pixel_values);
             processing_gemma4.Gemma4Processor.replace_image_token / _get_num_multimodal_tokens
  paligemma  models/siglip/image_processing_pil_siglip.py SiglipImageProcessorPil;
             processing_paligemma.PaliGemmaProcessor (__call__)
  pixtral / mistral3  models/pixtral/image_processing_pil_pixtral.py get_resize_output_image_size,
             PixtralImageProcessorPil; processing_pixtral.PixtralProcessor.replace_image_token /
             _get_num_multimodal_tokens / __call__
  idefics2   models/idefics2/image_processing_pil_idefics2.py Idefics2ImageProcessorPil (.resize, .split_images,
             __call__); processing_idefics2.Idefics2Processor (__call__)
"""

from __future__ import annotations

import functools
import os

import numpy as np

from transformers import PreTrainedTokenizerFast
from transformers.image_utils import ChannelDimension
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
from transformers.models.gemma3.processing_gemma3 import Gemma3Processor
from transformers.models.gemma4.image_processing_pil_gemma4 import (
    Gemma4ImageProcessorPil,
    get_aspect_ratio_preserving_size,
)
from transformers.models.gemma4.processing_gemma4 import Gemma4Processor
from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil
from transformers.models.idefics2.processing_idefics2 import Idefics2Processor
from transformers.models.paligemma.processing_paligemma import PaliGemmaProcessor
from transformers.models.pixtral.image_processing_pil_pixtral import (
    PixtralImageProcessorPil,
    get_resize_output_image_size as pixtral_resize_size,
)
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from hf_reference import _bare, _box_in, _dummy, _hw, _no_kwargs, no_resampling


def _import_pixtral_processor():
    """processing_pixtral imports get_resize_output_image_size from the torchvision backend module, which cannot be
    imported without torchvision. Where that is so, the module is registered under that name holding the PIL
    module's copy of the function (`# Adapted from` it, same arithmetic), and nothing else, so that
    PixtralProcessor's own code can be imported and run."""
    import importlib.util
    import sys
    import types

    name = "transformers.models.pixtral.image_processing_pixtral"
    if importlib.util.find_spec("torchvision") is None and name not in sys.modules:
        stub = types.ModuleType(name)
        stub.get_resize_output_image_size = pixtral_resize_size
        sys.modules[name] = stub
    from transformers.models.pixtral.processing_pixtral import PixtralProcessor

    return PixtralProcessor


PixtralProcessor = _import_pixtral_processor()

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
GEMMA4_TOKENS = {"boi_token": "<|image>", "eoi_token": "<image|>", "image_token": "<|image_soft|>"}
PIXTRAL_TOKENS = ("[IMG]", "[IMG_BREAK]", "[IMG_END]")
IDEFICS2_TOKENS = ("<fake_token_around_image>", "<image>")


@functools.lru_cache(maxsize=None)
def tokenizer(specials: tuple[str, ...], named: tuple[tuple[str, str], ...] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is `specials` (each one special token) plus [UNK]; `named` sets
    attributes such as boi_token / image_token (extra_special_tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0}
    for s in specials:
        vocab[s] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", extra_special_tokens=dict(named))
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


def _count(tok, text: str, tokens) -> dict[str, int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return {t: ids.count(tok.convert_tokens_to_ids(t)) for t in tokens}


def _ids_count(tok, input_ids, tokens) -> dict[str, int]:
    ids = list(np.asarray(input_ids).reshape(-1))
    return {t: ids.count(tok.convert_tokens_to_ids(t)) for t in tokens}


# --------------------------------------------------------------------------------------------------------------
# Gemma 3
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _gemma3_processor(image_size: int = 896) -> Gemma3Processor:
    tok = tokenizer(tuple(GEMMA3_TOKENS.values()), tuple(GEMMA3_TOKENS.items()))
    ip = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    return Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=256)


def gemma3_geometry(width: int, height: int, pan_and_scan: bool, min_crop: int = 256, max_crops: int = 4,
                    min_ratio: float = 1.2) -> dict:
    """Keys: grid, num_views, crop_boxes (original pixels, in order), token_count / text_tokens (ids of the
    processor's replace_image_token text), tokens_mm (_get_num_multimodal_tokens)."""
    proc = _gemma3_processor()
    image = _dummy(height, width)
    crops = proc.image_processor.pan_and_scan(image, min_crop, max_crops, min_ratio) if pan_and_scan else []
    boxes = [_box_in(image, c) for c in crops]
    cols = len({b[0] for b in boxes}) or 1
    rows = len({b[1] for b in boxes}) or 1
    counts = _count(proc.tokenizer, proc.replace_image_token({"num_crops": [len(crops)]}, 0),
                    tuple(GEMMA3_TOKENS.values()))
    mm = proc._get_num_multimodal_tokens(image_sizes=[(height, width)]).num_image_tokens[0]
    return {"grid": (rows, cols), "num_views": 1 + len(crops), "crop_boxes": boxes,
            "token_count": counts["<image_soft_token>"],
            "text_tokens": counts["<start_of_image>"] + counts["<end_of_image>"], "tokens_mm": int(mm)}


def gemma3_processor_run(image, pan_and_scan: bool) -> dict:
    """Gemma3Processor.__call__ on a real image: pixel_values (views, 3, 896, 896) and input_ids counts."""
    proc = _gemma3_processor()
    out = proc(images=[image], text=["<start_of_image>"], do_pan_and_scan=pan_and_scan, return_tensors="np")
    counts = _ids_count(proc.tokenizer, out["input_ids"], tuple(GEMMA3_TOKENS.values()))
    return {"pixel_values": np.asarray(out["pixel_values"]), "token_count": counts["<image_soft_token>"],
            "text_tokens": counts["<start_of_image>"] + counts["<end_of_image>"]}


# --------------------------------------------------------------------------------------------------------------
# Gemma 4
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _gemma4_processor(max_soft_tokens: int) -> Gemma4Processor:
    ip = Gemma4ImageProcessorPil(max_soft_tokens=max_soft_tokens)
    tok = tokenizer(tuple(GEMMA4_TOKENS.values()), tuple(GEMMA4_TOKENS.items()))
    return _bare(Gemma4Processor, image_processor=ip, tokenizer=tok, image_token=GEMMA4_TOKENS["image_token"],
                 boi_token=GEMMA4_TOKENS["boi_token"], eoi_token=GEMMA4_TOKENS["eoi_token"],
                 _merge_kwargs=_no_kwargs)


def gemma4_geometry(width: int, height: int, max_soft_tokens: int = 280) -> dict:
    """Keys: resized_hw (get_aspect_ratio_preserving_size) or error (its ValueError), num_soft_tokens (the image
    processor's own count on a dummy), token_count / text_tokens (ids of replace_image_token), tokens_mm."""
    proc = _gemma4_processor(max_soft_tokens)
    ip = proc.image_processor
    try:
        th, tw = get_aspect_ratio_preserving_size(height, width, ip.patch_size, max_soft_tokens * 9,
                                                  ip.pooling_kernel_size)
    except ValueError as exc:
        return {"error": str(exc)}
    with no_resampling():
        res = ip._preprocess([_dummy(height, width)], do_resize=True, resample=ip.resample, do_rescale=False,
                             rescale_factor=1 / 255, do_normalize=False, image_mean=None, image_std=None,
                             return_tensors=None, max_soft_tokens=max_soft_tokens, patch_size=ip.patch_size,
                             pooling_kernel_size=ip.pooling_kernel_size)
    n = int(res["num_soft_tokens_per_image"][0])
    counts = _count(proc.tokenizer, proc.replace_image_token({"num_soft_tokens_per_image": [n]}, 0),
                    tuple(GEMMA4_TOKENS.values()))
    mm = proc._get_num_multimodal_tokens(image_sizes=[(height, width)]).num_image_tokens[0]
    return {"resized_hw": (th, tw), "num_soft_tokens": n, "token_count": counts[GEMMA4_TOKENS["image_token"]],
            "text_tokens": counts[GEMMA4_TOKENS["boi_token"]] + counts[GEMMA4_TOKENS["eoi_token"]],
            "tokens_mm": int(mm)}


def gemma4_pixels(image, max_soft_tokens: int = 280) -> np.ndarray:
    """Gemma4ImageProcessorPil's pixel_values for one image, un-patchified back to (3, h, w) (its padding rows,
    position -1, dropped)."""
    ip = _gemma4_processor(max_soft_tokens).image_processor
    out = ip(image, return_tensors="np")
    patches, pos = np.asarray(out["pixel_values"])[0], np.asarray(out["image_position_ids"])[0]
    real = pos[:, 0] >= 0
    patches, pos = patches[real], pos[real]
    p = ip.patch_size
    gw, gh = int(pos[:, 0].max()) + 1, int(pos[:, 1].max()) + 1
    x = patches.reshape(gh, gw, p, p, 3).transpose(4, 0, 2, 1, 3)  # (3, gh, p, gw, p)
    return x.reshape(3, gh * p, gw * p)


# --------------------------------------------------------------------------------------------------------------
# PaliGemma
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _paligemma_processor(image_size: int) -> PaliGemmaProcessor:
    ip = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    ip.image_seq_length = (image_size // 14) ** 2  # the checkpoints' preprocessor_config carries it
    tok = tokenizer(("<image>",), (("image_token", "<image>"),))
    return PaliGemmaProcessor(image_processor=ip, tokenizer=tok)


def paligemma_processor_run(image, image_size: int) -> dict:
    proc = _paligemma_processor(image_size)
    out = proc(images=[image], text=["caption"], return_tensors="np")
    ids = list(np.asarray(out["input_ids"]).reshape(-1))
    return {"pixel_values": np.asarray(out["pixel_values"]), "token_count": ids.count(proc.image_token_id)}


# --------------------------------------------------------------------------------------------------------------
# Pixtral / Mistral 3
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _pixtral_processor(longest_edge: int, patch_size: int, spatial_merge_size: int, resize_patch_size: int):
    ip = PixtralImageProcessorPil(size={"longest_edge": longest_edge}, patch_size=resize_patch_size)
    tok = tokenizer(PIXTRAL_TOKENS)
    return PixtralProcessor(image_processor=ip, tokenizer=tok, patch_size=patch_size,
                            spatial_merge_size=spatial_merge_size)


def pixtral_geometry(width: int, height: int, longest_edge: int = 1024, patch_size: int = 16,
                     spatial_merge_size: int = 1, resize_patch_size: int = 16) -> dict:
    """Keys: resized_hw (get_resize_output_image_size with the image processor's patch), then either error
    (replace_image_token's exception) or token_count / text_tokens (ids of replace_image_token's text) and
    tokens_mm (_get_num_multimodal_tokens: [IMG] + [IMG_BREAK]/[IMG_END] per row)."""
    proc = _pixtral_processor(longest_edge, patch_size, spatial_merge_size, resize_patch_size)
    rh, rw = pixtral_resize_size(_dummy(height, width), size=(longest_edge, longest_edge),
                                 patch_size=(resize_patch_size, resize_patch_size),
                                 input_data_format=ChannelDimension.FIRST)
    out = {"resized_hw": (int(rh), int(rw))}
    try:
        text = proc.replace_image_token({"image_sizes": [(rh, rw)]}, 0)
    except IndexError as exc:
        return {**out, "error": repr(exc)}
    counts = _count(proc.tokenizer, text, PIXTRAL_TOKENS)
    out.update(token_count=counts["[IMG]"], text_tokens=counts["[IMG_BREAK]"] + counts["[IMG_END]"])
    return out


def pixtral_processor_run(image, longest_edge: int = 1024, patch_size: int = 16, spatial_merge_size: int = 1,
                          resize_patch_size: int = 16, through_processor: bool = False) -> dict:
    """The image processor's pixel_values / image_sizes; with `through_processor`, PixtralProcessor.__call__
    (which passes patch_size · spatial_merge_size to the image processor) and its input_ids counts."""
    proc = _pixtral_processor(longest_edge, patch_size, spatial_merge_size, resize_patch_size)
    if through_processor:
        out = proc(images=[image], text=["[IMG]"], return_tensors="np")
        counts = _ids_count(proc.tokenizer, out["input_ids"], PIXTRAL_TOKENS)
        return {"image_sizes": tuple(int(v) for v in np.asarray(out["image_sizes"])[0]),
                "token_count": counts["[IMG]"], "text_tokens": counts["[IMG_BREAK]"] + counts["[IMG_END]"]}
    out = proc.image_processor(image, return_tensors="np")
    return {"pixel_values": np.asarray(out["pixel_values"]),
            "image_sizes": tuple(int(v) for v in np.asarray(out["image_sizes"])[0])}


# --------------------------------------------------------------------------------------------------------------
# Idefics2
# --------------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _idefics2_image_processor(do_image_splitting: bool) -> Idefics2ImageProcessorPil:
    return Idefics2ImageProcessorPil(do_image_splitting=do_image_splitting)


def idefics2_geometry(width: int, height: int, do_image_splitting: bool = False) -> dict:
    """Keys: view_boxes (original pixels; split: 4 quadrants then the whole image; None for an empty quadrant),
    view_shapes (h, w) of the slices, view_sizes (w, h) after
    Idefics2ImageProcessorPil.resize, or error (the ZeroDivisionError of a zero-height quadrant)."""
    ip = _idefics2_image_processor(do_image_splitting)
    image = _dummy(height, width)
    views = ip.split_images(image) if do_image_splitting else [image]
    boxes = [_box_in(image, v) if v.size else None for v in views]  # an empty slice has no memory offset
    sizes = []
    with no_resampling():
        for v in views:
            try:
                r = ip.resize(v, size=ip.size, resample=ip.resample)
            except ZeroDivisionError as exc:
                return {"error": repr(exc)}
            sizes.append((int(r.shape[-1]), int(r.shape[-2])))
    return {"view_boxes": boxes, "view_shapes": [_hw(v.shape[-2:]) for v in views], "view_sizes": sizes,
            "num_views": len(views)}


@functools.lru_cache(maxsize=None)
def _idefics2_processor(do_image_splitting: bool) -> Idefics2Processor:
    tok = tokenizer(IDEFICS2_TOKENS)
    return Idefics2Processor(image_processor=Idefics2ImageProcessorPil(do_image_splitting=do_image_splitting),
                             tokenizer=tok, image_seq_len=64)


def idefics2_processor_run(image, do_image_splitting: bool) -> dict:
    """Idefics2Processor.__call__: pixel_values (1, views, 3, H, W) zero-padded, the mask, input_ids counts."""
    proc = _idefics2_processor(do_image_splitting)
    out = proc(images=[image], text=["<image>"], return_tensors="np")
    counts = _ids_count(proc.tokenizer, out["input_ids"], IDEFICS2_TOKENS)
    return {"pixel_values": np.asarray(out["pixel_values"])[0],
            "pixel_attention_mask": np.asarray(out["pixel_attention_mask"])[0],
            "token_count": counts["<image>"], "text_tokens": counts["<fake_token_around_image>"]}

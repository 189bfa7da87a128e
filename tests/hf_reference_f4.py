"""Reference geometry for phi-4-multimodal, lfm2-vl and molmo2 from the installed transformers' OWN code (5.23).

All three image processors are torchvision backends (no PIL backend exists) and torchvision cannot be installed
beside this torch. So the processors' own size/grid/token methods are run with only the pixel work replaced:

- phi4_multimodal / lfm2_vl import `torchvision.transforms.v2.functional` at module level; they are imported
  once with a stand-in module in `sys.modules` (removed again right after), whose `resize` returns a zero
  tensor of the requested size and whose `pad` zero-pads by the requested amounts. The instance's
  `resize` / `rescale_and_normalize` (TorchvisionBackend's) are replaced the same way. Every size, grid, mask and
  token decision stays transformers' (`dynamic_preprocess`, `_preprocess`, `resize_and_split`,
  `crop_image_to_patches`).
- molmo2 imports without torchvision; `compute_crop_geometry` / `get_image_grid_and_crops` are pure.

Token counts in `input_ids`: each processor's own expansion (`replace_image_token` / `_build_image_tokens`),
called on a bare instance carrying only the attributes it reads, tokenized by a locally trained tokenizer
that knows every marker as a special token; the image and marker ids are counted in its `input_ids`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import types

import torch

from transformers.image_utils import PILImageResampling, SizeDict


def _zeros(*shape):
    """Zeros of `shape` that allocate one byte (a stride-0 view; only shapes are read)."""
    return torch.zeros((1,) * len(shape), dtype=torch.uint8).expand(*shape)


def _zeros_resize(image, size, *args, **kwargs):
    return _zeros(*image.shape[:-2], int(size[0]), int(size[1]))


def _pad(image, padding, fill=None, **kwargs):  # torchvision order: left, top, right, bottom
    left, top, right, bottom = padding
    return _zeros(*image.shape[:-2], image.shape[-2] + top + bottom, image.shape[-1] + left + right)


@contextlib.contextmanager
def _stand_in_torchvision():
    functional = types.ModuleType("torchvision.transforms.v2.functional")
    functional.resize, functional.pad = _zeros_resize, _pad
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.v2", "torchvision.transforms.v2.functional")
    saved = {n: sys.modules.get(n) for n in names}
    mods = [types.ModuleType(n) for n in names[:-1]] + [functional]
    for parent, child, attr in zip(mods, mods[1:], ("transforms", "v2", "functional")):
        setattr(parent, attr, child)
    sys.modules.update(dict(zip(names, mods)))
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


@functools.lru_cache(maxsize=None)
def _module(name: str):
    with _stand_in_torchvision():
        return importlib.import_module(name)


def _zeros_of(image, size, *args, **kwargs):
    return _zeros(*image.shape[:-2], size.height, size.width)


def _stub_pixels(proc):
    """The instance's pixel work replaced: resize -> zeros of the requested size, normalise -> unchanged."""
    proc.resize = _zeros_of
    proc.rescale_and_normalize = lambda image, *a, **k: image  # (stays uint8: only shapes are read)
    return proc


@contextlib.contextmanager
def _class_resize_stubbed():
    """TorchvisionBackend.resize (reached through `super().resize`) returns zeros of the requested size."""
    backend = importlib.import_module("transformers.image_processing_backends").TorchvisionBackend
    original = backend.resize
    backend.resize = lambda self, image, size, *a, **k: _zeros_of(image, size)
    try:
        yield
    finally:
        backend.resize = original


def _blank(height: int, width: int, batch: bool = False):
    """A (3, H, W) uint8 image that allocates one byte (only its shape is read)."""
    return _zeros(1, 3, height, width) if batch else _zeros(3, height, width)


# ------------------------------------------------------------------------------------------------ tokenizer


@functools.lru_cache(maxsize=None)
def tokenizer(*special: str):
    """A byte-level BPE trained locally, every marker a special token (notes.md trap 9); no network."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", *special], show_progress=False)
    tok.train_from_iterator(["describe the image please", "what is in this picture"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def count_ids(text: str, special: tuple[str, ...]) -> dict[str, int]:
    """How many of each special token the tokenizer puts in `input_ids` for `text`."""
    tok = tokenizer(*special)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return {s: ids.count(tok.convert_tokens_to_ids(s)) for s in special}


def _bare(cls, **attrs):
    obj = object.__new__(cls)
    obj.__dict__.update(attrs)
    return obj


# ------------------------------------------------------------------------------------------------ Phi-4-multimodal


@functools.lru_cache(maxsize=None)
def _phi4_processor(crop_size: int, dynamic_hd: int):
    m = _module("transformers.models.phi4_multimodal.image_processing_phi4_multimodal")
    proc = m.Phi4MultimodalImageProcessor(size={"height": crop_size, "width": crop_size}, dynamic_hd=dynamic_hd)
    return _stub_pixels(proc)


def phi4_geometry(width: int, height: int, crop_size: int = 448, patch_size: int = 14, dynamic_hd: int = 36) -> dict:
    """`Phi4MultimodalImageProcessor._preprocess` (dynamic_preprocess inside) and `Phi4MultimodalProcessor.
    replace_image_token`; {"error": msg} where dynamic_preprocess refuses the size."""
    proc = _phi4_processor(crop_size, dynamic_hd)
    with _stand_in_torchvision():  # dynamic_preprocess calls the module's tvF (bound at import: the stand-in)
        try:
            out = proc._preprocess([_blank(height, width)], do_resize=True, size=SizeDict(height=crop_size,
                                   width=crop_size), resample=PILImageResampling.BICUBIC, do_rescale=False,
                                   rescale_factor=1 / 255, do_normalize=False, image_mean=None, image_std=None,
                                   patch_size=patch_size, dynamic_hd=dynamic_hd, return_tensors=None)
        except ValueError as exc:
            return {"error": str(exc)}
    canvas_h, canvas_w = (int(v) for v in out["image_sizes"][0])
    crops = out["image_pixel_values"].shape[1]
    pm = importlib.import_module("transformers.models.phi4_multimodal.processing_phi4_multimodal")
    text = _bare(pm.Phi4MultimodalProcessor, image_token="<|image|>").replace_image_token(out, 0)
    return {
        "grid": (canvas_h // crop_size, canvas_w // crop_size),
        "num_views": crops,
        "canvas_size": (canvas_w, canvas_h),
        "token_count": int(out["num_img_tokens"][0]),
        "input_ids_image_tokens": count_ids(text, ("<|image|>",))["<|image|>"],
    }


# ------------------------------------------------------------------------------------------------ LFM2-VL

LFM2_MARKERS = ("<image>", "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>",
                *(f"<|img_row_{r}_col_{c}|>" for r in range(1, 11) for c in range(1, 11)))


@functools.lru_cache(maxsize=None)
def _lfm2_processor():
    m = _module("transformers.models.lfm2_vl.image_processing_lfm2_vl")
    return _stub_pixels(object.__new__(m.Lfm2VlImageProcessor))


def lfm2_geometry(width: int, height: int, tile_size: int = 512, min_tiles: int = 2, max_tiles: int = 10,
                  use_thumbnail: bool = True, min_image_tokens: int = 64, max_image_tokens: int = 256,
                  encoder_patch_size: int = 16, downsample_factor: int = 2, max_pixels_tolerance: float = 2.0,
                  do_image_splitting: bool = True) -> dict:
    """`Lfm2VlImageProcessor.resize_and_split` (as `_preprocess` calls it) and `Lfm2VlProcessor.
    replace_image_token` -> `_build_image_tokens`, tokenized."""
    proc = _lfm2_processor()
    if not do_image_splitting:
        min_tiles = max_tiles = 1
    with _class_resize_stubbed():
        images, rows, cols, sizes = proc.resize_and_split(
            _blank(height, width, batch=True), downsample_factor=downsample_factor, min_tiles=min_tiles,
            max_tiles=max_tiles, use_thumbnail=use_thumbnail, min_image_tokens=min_image_tokens,
            max_image_tokens=max_image_tokens, encoder_patch_size=encoder_patch_size, tile_size=tile_size,
            max_pixels_tolerance=max_pixels_tolerance, resample=PILImageResampling.BILINEAR)
    views = images[0]
    pm = importlib.import_module("transformers.models.lfm2_vl.processing_lfm2_vl")
    text_proc = _bare(pm.Lfm2VlProcessor, image_processor=types.SimpleNamespace(
        use_thumbnail=use_thumbnail, tile_size=tile_size, downsample_factor=downsample_factor,
        encoder_patch_size=encoder_patch_size), image_token="<image>", image_start_token="<|image_start|>",
        image_end_token="<|image_end|>", image_thumbnail_token="<|img_thumbnail|>")
    text = text_proc.replace_image_token(
        {"image_rows": rows, "image_cols": cols, "image_sizes": sizes}, 0, use_thumbnail=use_thumbnail,
        tile_size=tile_size, downsample_factor=downsample_factor, encoder_patch_size=encoder_patch_size,
        use_image_special_tokens=True)
    counts = count_ids(text, LFM2_MARKERS)
    return {
        "grid": (rows[0], cols[0]),
        "num_views": len(views),
        "view_sizes": [(int(v.shape[-1]), int(v.shape[-2])) for v in views],
        "token_count": counts["<image>"],
        "text_tokens": sum(counts.values()) - counts["<image>"],
    }


# ------------------------------------------------------------------------------------------------ Molmo2

MOLMO2_MARKERS = ("<im_patch>", "<im_col>", "<im_start>", "<low_res_im_start>", "<im_end>")


def molmo2_geometry(width: int, height: int, max_crops: int = 8, crop_size: int = 378, overlap_margin: int = 4,
                    patch_size: int = 14, pooling_size: int = 2) -> dict:
    """`compute_crop_geometry`, `Molmo2ImageProcessor.get_image_grid_and_crops` and `Molmo2Processor.
    replace_image_token` (image_use_col_tokens, low-res start token: the class defaults), tokenized."""
    im = importlib.import_module("transformers.models.molmo2.image_processing_molmo2")
    pm = importlib.import_module("transformers.models.molmo2.processing_molmo2")
    margins = [overlap_margin, overlap_margin]
    th, tw, ch, cw = im.compute_crop_geometry(height, width, max_crops, margins, crop_size, patch_size)
    proc = _bare(im.Molmo2ImageProcessor)
    grid, num_crops = proc.get_image_grid_and_crops(height, width, {
        "max_crops": max_crops, "overlap_margins": margins, "patch_size": patch_size,
        "pooling_size": [pooling_size, pooling_size], "size": {"height": crop_size, "width": crop_size}})
    text_proc = _bare(pm.Molmo2Processor, image_use_col_tokens=True, use_single_crop_col_tokens=None,
                      use_single_crop_start_token=True)
    text = text_proc.replace_image_token({"image_grids": [grid]}, 0)
    counts = count_ids(text, MOLMO2_MARKERS)
    window = crop_size - 2 * overlap_margin * patch_size
    return {
        "grid": (th, tw),
        "num_views": num_crops,
        "canvas_size": (cw, ch),
        "crop_boxes_canvas": [[c * window, r * window, c * window + crop_size, r * window + crop_size]
                              for r in range(th) for c in range(tw)],  # the unfold(crop_size, window) windows
        "token_count": counts["<im_patch>"],
        "grid_tokens": grid[0] * grid[1] + grid[2] * grid[3],
        "text_tokens": sum(counts.values()) - counts["<im_patch>"],
    }

"""pixel_values(..., exact=True) against transformers' PIL-backend image processors, run at test time.

Each processor is built with the real checkpoint's settings (transformers' class defaults differ from the checkpoints'):
size / crop_size / pinpoints / resample / mean / std as in the llava-hf, Qwen, HuggingFaceM4 and OpenGVLab
preprocessor configs. Images cover RGB, RGBA (alpha composited on white), palette and greyscale inputs.
The values must be equal — 0/255 apart, as measured: the exact path does transformers' arithmetic step for step —
with the same shape and view order.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import gridvlm
from images import photo_like
from gridvlm.pixels import pixel_values, qwen_patchify
from gridvlm.strategies.reference import CLIP, IMAGENET, SIGLIP
from gridvlm.strategies.anyres import LLAVA_NEXT_PINPOINTS, ONEVISION_PINPOINTS

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TOLERANCE = 0.0  # de-normalised, in 0..1 pixel units


def _mean_std(pair):
    return {"image_mean": list(pair[0]), "image_std": list(pair[1])}


def _processor(key: str):
    """The transformers PIL-backend processor of each reference, with its checkpoint's settings."""
    if key.startswith("llava-1.5"):
        from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

        return LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                      do_pad=key.endswith("pad"), resample=3, **_mean_std(CLIP))
    if key == "llava-next":
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        return LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                          image_grid_pinpoints=LLAVA_NEXT_PINPOINTS, resample=3, **_mean_std(CLIP))
    if key == "llava-onevision":
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil,
        )

        return LlavaOnevisionImageProcessorPil(size={"height": 384, "width": 384},
                                               image_grid_pinpoints=ONEVISION_PINPOINTS, resample=3,
                                               **_mean_std(SIGLIP))
    if key == "qwen2-vl":
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil(size={"shortest_edge": 3136, "longest_edge": 12_845_056}, patch_size=14,
                                        merge_size=2, temporal_patch_size=2, resample=3, **_mean_std(CLIP))
    if key == "idefics3":
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        return Idefics3ImageProcessorPil(size={"longest_edge": 1456}, max_image_size={"longest_edge": 364},
                                         resample=1, **_mean_std(SIGLIP))
    if key == "internvl":
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        return GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=True, min_patches=1,
                                        max_patches=12, resample=3, **_mean_std(IMAGENET))
    if key == "minicpm-v-4.6":
        from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil

        return MiniCPMV4_6ImageProcessorPil(max_slice_nums=9, scale_resolution=448, patch_size=14, slice_mode=True,
                                            downsample_mode="16x", resample=3, **_mean_std(SIGLIP))
    raise KeyError(key)


# reference key -> (gridvlm strategy, params)
REFERENCES = {
    "llava-1.5-pad": ("llava-1.5", {"mode": "pad"}),
    "llava-1.5-crop": ("llava-1.5", {"mode": "crop"}),
    "llava-next": ("llava-next", {}),
    "llava-onevision": ("llava-onevision", {}),
    "qwen2-vl": ("qwen2-vl", {}),
    "idefics3": ("idefics3", {}),
    "internvl": ("internvl", {}),
    "minicpm-v-4.6": ("minicpm-v", {"version": "4.6"}),
}


def _photo(width: int, height: int, seed: int) -> Image.Image:
    return photo_like(width, height, seed, text=True)


def _rgba() -> Image.Image:
    image = np.array(_photo(640, 900, 2).convert("RGBA"))
    image[..., 3] = np.linspace(0, 255, image.shape[1]).astype(np.uint8)[None]  # alpha ramp left to right
    return Image.fromarray(image)


IMAGES = {
    "rgb-1000x700": lambda: _photo(1000, 700, 1),
    "rgba-640x900": _rgba,
    "palette-1200x500": lambda: _photo(1200, 500, 3).convert("P", palette=Image.Palette.ADAPTIVE),
    "grey-333x777": lambda: _photo(333, 777, 4).convert("L"),
}


@pytest.fixture(scope="module")
def images():
    return {name: make() for name, make in IMAGES.items()}


@pytest.fixture(scope="module")
def processors():
    return {}


@pytest.mark.parametrize("image_name", list(IMAGES))
@pytest.mark.parametrize("key", list(REFERENCES))
def test_exact_equals_transformers(images, processors, key, image_name):
    image = images[image_name]
    strategy, params = REFERENCES[key]
    if key not in processors:
        processors[key] = _processor(key)
    reference = processors[key](image, return_tensors="pt")
    plan = gridvlm.plan(image, strategy, **params)
    ours = pixel_values(image, plan, exact=True)
    std = torch.tensor(gridvlm.strategy_info(strategy).pixels.normalisation[1])

    if strategy == "qwen2-vl":
        patches, grid_thw = qwen_patchify(ours[0])
        assert torch.equal(grid_thw, reference["image_grid_thw"])
        theirs = reference["pixel_values"]
        assert patches.shape == theirs.shape
        per_value_std = std.view(3, 1, 1, 1).expand(3, 2, 14, 14).reshape(-1)  # patch layout: (c, t, p, p)
        worst = float(((patches - theirs).abs() * per_value_std).max())
    elif key == "minicpm-v-4.6":
        # NaViT-style layout: every view (3, H, W) -> (3, p, H·W/p), views concatenated on the last axis.
        views = ours if isinstance(ours, list) else list(ours)
        patches = torch.cat([_minicpm_patches(v, 14) for v in views], dim=-1)[None]
        theirs = reference["pixel_values"]
        assert patches.shape == theirs.shape
        worst = float(((patches - theirs).abs() * std.view(1, 3, 1, 1)).max())
    else:
        theirs = reference["pixel_values"]
        theirs = theirs.reshape(-1, *theirs.shape[-3:])  # (1, views, 3, h, w) or (views, 3, h, w)
        assert isinstance(ours, torch.Tensor) and ours.shape == theirs.shape
        worst = float(((ours - theirs).abs() * std.view(3, 1, 1)).max())
    assert worst <= TOLERANCE, f"{key} on {image_name}: max difference {worst * 255:.2f}/255"


def _minicpm_patches(view, p: int):
    """MiniCPMV4_6ImageProcessor.reshape_by_patch: (3, H, W) -> (3, p, H/p · W/p · p)."""
    c, h, w = view.shape
    return view.reshape(c, h // p, p, w // p, p).permute(0, 2, 1, 3, 4).reshape(c, p, -1)


def test_exact_from_bytes_equals_exact_from_pil(images):
    """Decoding from encoded bytes takes the same route as a PIL image (no draft on the exact path)."""
    image = images["rgb-1000x700"]
    buf = io.BytesIO()
    image.save(buf, "PNG")
    plan = gridvlm.plan(image, "llava-next")
    assert torch.equal(pixel_values(buf.getvalue(), plan, exact=True), pixel_values(image, plan, exact=True))


@pytest.mark.parametrize("image_name", ["rgb-1000x700", "grey-333x777"])
def test_onevision_multi_image_equals_transformers(images, processors, image_name):
    """Two images in one sample: transformers pads each to a square (mean colour) and does not tile it."""
    image = images[image_name]
    if "llava-onevision" not in processors:
        processors["llava-onevision"] = _processor("llava-onevision")
    reference = processors["llava-onevision"]([[image, image]], return_tensors="pt")["pixel_values"]
    plan = gridvlm.plan(image, "llava-onevision", multi_image=True)
    ours = pixel_values(image, plan, exact=True)
    assert ours.shape == reference[0, :1].shape == (1, 3, 384, 384)
    std = torch.tensor(gridvlm.strategy_info("llava-onevision").pixels.normalisation[1]).view(3, 1, 1)
    assert ((ours[0] - reference[0, 0]).abs() * std).max() <= TOLERANCE

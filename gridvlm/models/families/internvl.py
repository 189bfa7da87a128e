"""InternVL (transformers' InternVLForConditionalGeneration): 448-px tiles, InternViT with a CLS token, pixel shuffle.

The processor (GOT-OCR2's image processor with `crop_to_patches`) stretches the image onto the grid of 448-px
tiles closest to its aspect ratio (`gridvlm.plan(..., "internvl")`), appends the squashed whole image as a
thumbnail LAST when there is more than one tile, and writes `<img>` + `<IMG_CONTEXT>` × 256·views + `</img>`.
Each view: 32 × 32 patches of 14 px, the CLS token dropped ("default"), pixel shuffle 0.5 merges 2 × 2 patches
into one feature (16 × 16 = 256 per view, 28 px of the view each), rows in order, no newlines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...attention.mapping import Layout, LayoutBuilder
from ...geometry import Plan
from ..adapter import Checkpoint, ModelAdapter, name_processor_class, processor_settings, register_adapter
from ..errors import ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..loading import VLM


@dataclass(frozen=True)
class InternVLGeometry:
    """The encoder geometry of an InternVL checkpoint, as its config and image processor state it."""

    tile_size: int  # vision_config.image_size = the processor's size: each view's side, pixels
    patch_size: int  # vision_config.patch_size, pixels
    merge: int  # patches per feature along each side: 1 / downsample_ratio (pixel shuffle)
    min_tiles: int  # image processor min_patches
    max_tiles: int  # image processor max_patches
    select_strategy: str  # "default" drops the CLS token the tower puts first
    feature_layer: int  # vision_feature_layer
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def patches_side(self) -> int:
        return self.tile_size // self.patch_size

    @property
    def features_side(self) -> int:
        return self.patches_side // self.merge

    def plan_params(self) -> dict[str, Any]:
        return {"tile_size": self.tile_size, "min_tiles": self.min_tiles, "max_tiles": self.max_tiles,
                "tokens_per_view": self.features_side ** 2, "thumbnail": True}

    def describe(self) -> str:
        g = self.features_side
        return (f"{self.min_tiles}–{self.max_tiles} tiles of {self.tile_size} px + thumbnail last, patch "
                f"{self.patch_size}, pixel shuffle {self.merge}×{self.merge} → {g}×{g} features per view")


class InternVLAdapter(ModelAdapter):
    name = "internvl"
    model_types = ("internvl",)
    model_class = "InternVLForConditionalGeneration"
    example = "OpenGVLab/InternVL3-1B-hf"
    title = "InternVL"
    plan_mode = False
    checkpoints = (Checkpoint("OpenGVLab/InternVL3-1B-hf", "1B", cpu_friendly=True),
                   Checkpoint("OpenGVLab/InternVL3-2B-hf", "2B"),
                   Checkpoint("OpenGVLab/InternVL3-8B-hf", "8B"))

    def read_geometry(self, config: Any, image_processor: Any) -> InternVLGeometry:
        vision = config.vision_config
        side, patch = _side(vision.image_size), _side(vision.patch_size)
        merge = round(1 / float(config.downsample_ratio))
        if side % patch or (side // patch) % merge:
            raise ModelError(f"an InternVL tower of {side}-px views with {patch}-px patches and pixel shuffle "
                             f"{config.downsample_ratio} does not give a whole feature grid")
        size = image_processor.size
        height = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
        if height is not None and int(height) != side:
            raise ModelError(f"the checkpoint's processor makes {height}-px tiles but its vision tower takes "
                             f"{side} px; its config and processor config disagree")
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ModelError(f"vision_feature_layer {layer!r}: gridvlm reads InternVL checkpoints with one layer")
        return InternVLGeometry(
            tile_size=side, patch_size=patch, merge=merge,
            min_tiles=int(image_processor.min_patches), max_tiles=int(image_processor.max_patches),
            select_strategy=str(config.vision_feature_select_strategy), feature_layer=layer,
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
        )

    def load_processor(self, source: str, **kwargs: Any) -> Any:
        """transformers' InternVLProcessor also builds a video processor, which needs torchvision; without it,
        the same processor for images only, from the checkpoint's files."""
        try:
            return super().load_processor(source, **kwargs)
        except (OSError, ValueError, ImportError, AttributeError, TypeError):
            from transformers import AutoImageProcessor, AutoTokenizer

            image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            keep = {"image_seq_length", "chat_template"}
            settings = {k: v for k, v in processor_settings(source, **kwargs).items() if k in keep}
            settings.setdefault("chat_template", tokenizer.chat_template)
            return image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer, **settings)

    # ---- the visual sequence

    def layout(self, geo: InternVLGeometry, plan: Plan) -> Layout:
        """`<img>`, every view's g × g features in `plan.views` order (tiles row by row, thumbnail last), `</img>`."""
        g = geo.features_side
        cells = np.arange(g * g)
        lay = LayoutBuilder()
        lay.separators(1)  # <img>
        for i, view in enumerate(plan.views):
            lay.features(i, view.row, view.col, cells // g, cells % g)
        lay.separators(1)  # </img>
        return lay.build([(g, g)] * plan.num_views, self.cell_pixels(geo, plan))

    def cell_pixels(self, geo: InternVLGeometry, plan: Plan) -> list[tuple[float, float]]:
        """One feature = merge × merge patches of the view (each view is already the tower's input size)."""
        return [(h * geo.merge, w * geo.merge) for h, w in self.patch_pixels(geo, plan)]

    def patch_grids(self, geo: InternVLGeometry, plan: Plan) -> list[tuple[int, int]]:
        n = geo.patches_side
        return [(n, n)] * plan.num_views

    def patch_pixels(self, geo: InternVLGeometry, plan: Plan) -> list[tuple[float, float]]:
        t, p = geo.tile_size, geo.patch_size
        return [(p * v.input_size[1] / t, p * v.input_size[0] / t) for v in plan.views]

    def view_pixels(self, vlm: VLM, image: Image.Image, plan: Plan, exact: bool | None = None) -> torch.Tensor:
        """The processor's own views (views, 3, t, t) of the model's plan, on the model's device and dtype."""
        if not vlm.is_native(plan):
            raise ModelError(f"{self.name} models see only their own slicing; this plan is not it")
        return self.native_inputs(vlm, image, [])["pixel_values"]

    def native_inputs(self, vlm: VLM, image: Image.Image, input_ids: Any) -> dict[str, Any]:
        """The processor crops to tiles (`crop_to_patches`, which InternVLProcessor passes to its image
        processor); `num_patches` is bookkeeping the model does not take."""
        import torch

        out = vlm.processor.image_processor(images=image, crop_to_patches=True, return_tensors="pt")
        ids = torch.as_tensor(list(input_ids), dtype=torch.long, device=vlm.device).reshape(1, -1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "pixel_values": out["pixel_values"].to(vlm.device, vlm.model.dtype)}

    # ---- attention modules

    def vision_layers(self, model: Any) -> Any:
        return model.model.vision_tower.encoder.layer

    def vision_heads(self, model: Any) -> int:
        return int(self.vision_layers(model)[0].attention.num_heads)

    def vision_has_cls(self, geo: InternVLGeometry) -> bool:
        return True  # InternViT puts a CLS token first; its map is CLS → patches

    def feature_attention_layer(self, geo: InternVLGeometry, num_layers: int) -> int:
        from ...attention.capture import feature_attention_layer

        return feature_attention_layer(geo.feature_layer, num_layers)

    # ---- a tiny checkpoint

    def make_tiny(self, directory: Path, seed: int) -> None:
        """InternViT 448/14 with CLS, pixel shuffle 0.5, Qwen2, 1–12 tiles, ChatML, as OpenGVLab/InternVL3-*-hf."""
        from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        from ..tiny import TINY_TEXT, TINY_VISION, save_tiny, tiny_tokenizer

        tokens = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                  "video_token": "<video>"}
        tokenizer = tiny_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", *tokens.values()], None,
                                   "<|im_end|>", "<|endoftext|>", None, tokens)
        ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        config = InternVLConfig(
            vision_config=InternVLVisionConfig(image_size=448, **TINY_VISION),
            text_config=Qwen2Config(**TINY_TEXT, **ids),
            image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
            image_seq_length=256, downsample_ratio=0.5, vision_feature_layer=-1,
            vision_feature_select_strategy="default", tie_word_embeddings=False,
        )
        image_processor = GotOcr2ImageProcessorPil(
            size={"height": 448, "width": 448}, crop_to_patches=False, min_patches=1, max_patches=12,
            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])  # as InternVL3-*-hf ship it
        processor = image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                                 image_seq_length=256, chat_template=INTERNVL_TEMPLATE)
        save_tiny(directory, InternVLForConditionalGeneration(config), processor, tokenizer)
        name_processor_class(directory / "processor_config.json", "InternVLProcessor")


# ChatML with the image part written as <IMG_CONTEXT>, which the processor expands (InternVL3-*-hf's template
# writes "<IMG_CONTEXT>\n" for an image part)
INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _side(value: Any) -> int:
    """A square size given as an int or an (h, w) pair."""
    if isinstance(value, (list, tuple)):
        if len(set(int(v) for v in value)) != 1:
            raise ModelError(f"gridvlm reads InternVL towers with square views and patches, not {list(value)}")
        return int(value[0])
    return int(value)


_CLASSES: dict[str, type] = {}


def image_only_processor_class() -> type:
    """InternVLProcessor for images only (no video processor, which needs torchvision): the same expansion."""
    if "image_only" not in _CLASSES:
        import re

        from transformers import InternVLProcessor

        class InternVLImageProcessorOnly(InternVLProcessor):
            def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256,
                         chat_template=None, **kwargs):
                super(InternVLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template)
                self.image_seq_length = image_seq_length
                self.start_image_token = tokenizer.start_image_token
                self.end_image_token = tokenizer.end_image_token
                self.start_image_token_id = tokenizer.start_image_token_id
                self.end_image_token_id = tokenizer.end_image_token_id
                self.image_token = tokenizer.context_image_token
                self.video_token = tokenizer.video_token
                self.image_token_id = tokenizer.context_image_token_id
                self.multimodal_pattern = re.compile(
                    f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})")

        _CLASSES["image_only"] = InternVLImageProcessorOnly
    return _CLASSES["image_only"]


register_adapter(InternVLAdapter())

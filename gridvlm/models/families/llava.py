"""LLaVA-1.5: a CLIP ViT-L/14 at 336 px, one square view, 576 features, no `image_newline`.

The checkpoint's processor decides the view: llava-hf's CLIPImageProcessor resizes the shortest edge to 336 and
centre-crops 336 × 336 (the strategy's mode "crop"); a LlavaImageProcessor with do_pad pastes the image on a
square of the CLIP mean colour first, as the original training did (mode "pad"). Either way the tower sees one
336 × 336 view and the language model 24 × 24 features in row order.

Plan mode: any gridvlm plan's views are each resized to 336 × 336 and give 576 features; they follow one
another in `plan.views` order, every view a 24 × 24 block read row by row. LLaVA-1.5 has no `image_newline`
embedding, so nothing marks a row or a view boundary.

transformers' LlavaForConditionalGeneration also loads Pixtral-12B (model_type "llava" with a Pixtral vision
tower); its geometry is Pixtral's, not CLIP's, and `read_geometry` refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...attention.mapping import Layout, LayoutBuilder
from ...geometry import Plan
from ..adapter import Checkpoint, name_processor_class, register_adapter
from ..errors import ModelError
from ._llava import LlavaAdapter

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..loading import VLM

_TOWERS = ("clip_vision_model", "siglip_vision_model")  # ViTs on one square view, as LLaVA-1.5 feeds them


@dataclass(frozen=True)
class Llava15Geometry:
    """The encoder geometry of a LLaVA-1.5 checkpoint, as its config and processor config state it."""

    tile_size: int  # vision_config.image_size: the encoder's square input side, pixels
    patch_size: int  # vision_config.patch_size, pixels
    mode: str  # "crop" (shortest edge to tile_size, centre crop) or "pad" (square of the mean colour first)
    select_strategy: str  # "default" drops the CLS token, "full" keeps every position
    feature_layer: int | list[int]  # vision_feature_layer: which hidden state(s) feed the projector
    mean: tuple[float, float, float]  # the processor's image_mean
    std: tuple[float, float, float]  # the processor's image_std

    @property
    def features_side(self) -> int:
        """g: the view's feature map is g × g."""
        return self.tile_size // self.patch_size

    def plan_params(self) -> dict[str, Any]:
        return {"mode": self.mode, "image_size": self.tile_size, "patch_size": self.patch_size}

    def describe(self) -> str:
        g = self.features_side
        how = "centre-cropped" if self.mode == "crop" else "padded to a square"
        return f"one {self.tile_size}-px view ({how}), patch {self.patch_size} → {g}×{g} features, no newlines"


class Llava15Adapter(LlavaAdapter):
    name = "llava-1.5"
    model_types = ("llava",)
    model_class = "LlavaForConditionalGeneration"
    example = "llava-hf/llava-1.5-7b-hf"
    title = "LLaVA-1.5"
    checkpoints = (Checkpoint("llava-hf/llava-1.5-7b-hf", "7B"), Checkpoint("llava-hf/llava-1.5-13b-hf", "13B"))
    anyres_strategies = ()  # no AnyRes packing: every plan is laid out view after view

    def load_processor(self, source: str, **kwargs: Any) -> Any:
        """Refuses a non-CLIP tower from the config alone, before any weight is fetched."""
        from transformers import AutoConfig

        _check_tower(AutoConfig.from_pretrained(source, **kwargs))
        return super().load_processor(source, **kwargs)

    def read_geometry(self, config: Any, image_processor: Any) -> Llava15Geometry:
        _check_tower(config)
        vision = config.vision_config
        t = int(vision.image_size)
        if getattr(image_processor, "do_pad", False):
            mode = "pad"
        elif getattr(image_processor, "do_center_crop", False):
            mode = "crop"
        else:
            raise ModelError("the checkpoint's image processor neither pads to a square nor centre-crops: its views "
                             f"would not be {t}×{t}, which LLaVA-1.5's tower needs")
        crop = _side(getattr(image_processor, "crop_size", None), "height")
        short = _side(getattr(image_processor, "size", None), "shortest_edge")
        if (mode == "crop" and crop != t) or short not in (None, t):
            raise ModelError(f"the checkpoint's processor makes {crop or short}-px views but its vision tower takes "
                             f"{t} px; its config and processor config disagree")
        return Llava15Geometry(
            tile_size=t, patch_size=int(vision.patch_size), mode=mode,
            select_strategy=str(config.vision_feature_select_strategy), feature_layer=config.vision_feature_layer,
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
        )

    def layout(self, geo: Llava15Geometry, plan: Plan) -> Layout:
        """Each view's g × g features, row by row, views in `plan.views` order; no newline or marker."""
        g = geo.features_side
        cells = np.arange(g * g)
        lay = LayoutBuilder()
        for i, v in enumerate(plan.views):
            lay.features(i, -1 if v.is_thumbnail else v.row, -1 if v.is_thumbnail else v.col, cells // g, cells % g)
        return lay.build([(g, g)] * plan.num_views, self.patch_pixels(geo, plan))

    def plan_mode_rule(self, geo: Llava15Geometry) -> str:
        t, g = geo.tile_size, geo.features_side
        return (f"each view resized to {t}×{t}, its {g * g} features one after another in the plan's view order "
                "(LLaVA-1.5 has no image_newline: nothing marks rows or views)")

    def encode(self, vlm: VLM, image: Image.Image, plan: Plan) -> tuple[torch.Tensor, tuple[str, ...]]:
        geo = vlm.geometry
        t = geo.tile_size
        resized = any(tuple(v.input_size) != (t, t) for v in plan.views)
        notes = (f"each view was resized to the encoder's {t}×{t} input",) if resized else ()
        features = self.view_features(vlm, self.view_pixels(vlm, image, plan))  # (views, g·g, D)
        return features.reshape(-1, features.shape[-1]), notes  # (views·g·g, D)

    def make_tiny(self, directory: Path, seed: int) -> None:
        """CLIP 336/14 (CLS dropped, feature layer -2) + Llama, llava-hf's CLIPImageProcessor (centre crop)."""
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, \
            LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        from ..tiny import CLIP_MEAN, CLIP_STD, TINY_TEXT, TINY_VISION, save_tiny, tiny_tokenizer

        tokenizer = tiny_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>", "<unk>",
                                   {"image_token": "<image>"})
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(image_size=336, projection_dim=32, **TINY_VISION),
            text_config=LlamaConfig(**TINY_TEXT, **ids),
            image_token_index=tokenizer.image_token_id,
            image_seq_length=576,
            vision_feature_select_strategy="default",  # CLIP: drop the CLS token
            vision_feature_layer=-2,
            tie_word_embeddings=False,
        )
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                                do_center_crop=True, image_mean=CLIP_MEAN, image_std=CLIP_STD)
        # num_additional_image_tokens counts the CLS token, which "default" then drops: 576 image tokens
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=VICUNA_TEMPLATE)
        save_tiny(directory, LlavaForConditionalGeneration(config), processor, tokenizer)
        name_processor_class(directory / "processor_config.json", "LlavaProcessor")


def _check_tower(config: Any) -> None:
    """ModelError unless the vision tower is a ViT on one square view (Pixtral-12B also loads as model_type llava)."""
    vision = config.vision_config
    tower = getattr(vision, "model_type", "")
    if tower not in _TOWERS:
        raise ModelError(f"this LLaVA checkpoint's vision tower is {tower or 'unknown'!r}, not CLIP: gridvlm reads "
                         f"model_type 'llava' as LLaVA-1.5 (one {getattr(vision, 'image_size', '?')}-px CLIP view); "
                         "Pixtral-12B-style checkpoints (a Pixtral tower under LlavaForConditionalGeneration) are "
                         "not supported yet — Mistral 3 checkpoints (mistral3) are")


def _side(size: Any, key: str) -> int | None:
    """A processor size setting's side (dicts or SizeDict objects), None when it has none."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def _vicuna_template() -> str:
    """llava-hf/llava-1.5-7b-hf's prompt shape: "USER: <image>\\n… ASSISTANT: …"."""
    from ..tiny import _PARTS

    return ("{% for message in messages %}{% if message['role'] == 'user' %}USER: " + _PARTS + " "
            "{% elif message['role'] == 'assistant' %}ASSISTANT: " + _PARTS + "{{ eos_token }}{% endif %}"
            "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


VICUNA_TEMPLATE = _vicuna_template()

register_adapter(Llava15Adapter())

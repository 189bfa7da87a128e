"""The model families gridvlm can run, and how to read their geometry from a checkpoint.

One entry per family: the transformers `model_type`, the model class, and the gridvlm strategy whose plan is the
model's own processing. Everything else (pinpoints, tile size, patch size, feature selection, anyres_max_N) is read
from the checkpoint's config, never hard-coded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError


@dataclass(frozen=True)
class Family:
    name: str  # gridvlm's name, also the strategy of the model's own plan
    model_type: str  # transformers config.model_type
    model_class: str  # transformers class with a language-modelling head
    example: str  # a hub id of this family, for messages


FAMILIES = {
    f.model_type: f
    for f in (
        Family("llava-next", "llava_next", "LlavaNextForConditionalGeneration", "llava-hf/llava-v1.6-mistral-7b-hf"),
        Family("llava-onevision", "llava_onevision", "LlavaOnevisionForConditionalGeneration",
               "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"),
    )
}


def family_of(config: Any, source: str) -> Family:
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        known = ", ".join(f"{f.name} (e.g. {f.example})" for f in FAMILIES.values())
        raise ModelError(f"{source!r} is a {model_type or 'unknown'!s} model; gridvlm.models runs {known}")
    return FAMILIES[model_type]


@dataclass(frozen=True)
class Geometry:
    """The encoder geometry of a checkpoint, as its config and processor config state it."""

    tile_size: int  # vision_config.image_size: the encoder's square input side, pixels
    patch_size: int  # vision_config.patch_size, pixels
    grid_pinpoints: list[list[int]]  # config.image_grid_pinpoints, (h, w) pairs as transformers reads them
    select_strategy: str  # "default" drops the CLS token, "full" keeps every position
    feature_layer: int | list[int]  # vision_feature_layer: which hidden state(s) feed the projector
    max_features_tiles: int | None  # N of anyres_max_N (OneVision), None for LLaVA-NeXT
    mean: tuple[float, float, float]  # the processor's image_mean
    std: tuple[float, float, float]  # the processor's image_std

    @property
    def features_side(self) -> int:
        """g: each view's feature map is g × g."""
        return self.tile_size // self.patch_size

    def plan_params(self) -> dict[str, Any]:
        params = {"grid_pinpoints": [list(p) for p in self.grid_pinpoints], "pinpoint_order": "hw",
                  "tile_size": self.tile_size, "patch_size": self.patch_size}
        if self.max_features_tiles is not None:
            params["max_features_tiles"] = self.max_features_tiles
        return params


def geometry_of(config: Any, family: Family, image_processor: Any) -> Geometry:
    vision = config.vision_config
    max_tiles = None
    if family.name == "llava-onevision":
        ratio = str(getattr(config, "vision_aspect_ratio", "anyres_max_9"))
        if not ratio.startswith("anyres_max_"):
            raise ModelError(f"vision_aspect_ratio {ratio!r} is not anyres_max_N; gridvlm cannot lay out its features")
        max_tiles = int(ratio.removeprefix("anyres_max_"))
    geometry = Geometry(
        tile_size=int(vision.image_size),
        patch_size=int(vision.patch_size),
        grid_pinpoints=[list(map(int, p)) for p in config.image_grid_pinpoints],
        select_strategy=str(config.vision_feature_select_strategy),
        feature_layer=config.vision_feature_layer,
        max_features_tiles=max_tiles,
        mean=tuple(float(v) for v in image_processor.image_mean),
        std=tuple(float(v) for v in image_processor.image_std),
    )
    crop = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None) or {}
    side = crop.get("height") or crop.get("shortest_edge") if isinstance(crop, dict) else getattr(crop, "height", None)
    if side and int(side) != geometry.tile_size:
        raise ModelError(f"the checkpoint's processor crops {side} px views but its vision tower takes "
                         f"{geometry.tile_size} px; its config and processor config disagree")
    return geometry


def image_only_processor(path_or_id: str, family: Family, **kwargs: Any) -> Any:
    """The family's processor without its video processor (which needs torchvision to load).

    Settings come from the checkpoint's processor_config.json; the image processor is the PIL backend, the
    reference that gridvlm.pixel_values(exact=True) reproduces.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    cls = processor_class(family)
    image_processor = AutoImageProcessor.from_pretrained(path_or_id, backend="pil", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path_or_id, **kwargs)
    settings = _processor_settings(path_or_id, **kwargs)
    keep = {"num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio", "patch_size",
            "num_additional_image_tokens", "image_token", "chat_template"}
    settings = {k: v for k, v in settings.items() if k in keep}
    settings.setdefault("chat_template", tokenizer.chat_template)
    return cls(image_processor=image_processor, tokenizer=tokenizer, **settings)


def _processor_settings(path_or_id: str, **kwargs: Any) -> dict[str, Any]:
    from transformers.utils import cached_file

    settings: dict[str, Any] = {}
    for name in ("processor_config.json", "chat_template.jinja", "chat_template.json"):
        try:
            path = cached_file(path_or_id, name, _raise_exceptions_for_missing_entries=False, **kwargs)
        except OSError:
            path = None
        if not path:
            continue
        text = Path(path).read_text()
        if name == "processor_config.json":
            settings.update({k: v for k, v in json.loads(text).items() if not isinstance(v, dict)})
        elif name == "chat_template.jinja":
            settings.setdefault("chat_template", text)
        else:
            settings.setdefault("chat_template", json.loads(text).get("chat_template"))
    return settings


def processor_class(family: Family) -> type:
    """The transformers processor of `family`; for OneVision a subclass that takes no video processor."""
    import transformers

    if family.name == "llava-next":
        return transformers.LlavaNextProcessor
    return _onevision_image_only()


_CACHE: dict[str, type] = {}


def _onevision_image_only() -> type:
    if "ov" not in _CACHE:
        from transformers import LlavaOnevisionProcessor

        class LlavaOnevisionImageProcessorOnly(LlavaOnevisionProcessor):
            """LlavaOnevisionProcessor for images only: the same token counting and prompt expansion."""

            def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                         vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                         vision_aspect_ratio="anyres_max_9", **kwargs):
                super(LlavaOnevisionProcessor, self).__init__(image_processor, tokenizer,
                                                              chat_template=chat_template)
                self.num_image_tokens = num_image_tokens
                self.vision_feature_select_strategy = vision_feature_select_strategy
                self.image_token = getattr(tokenizer, "image_token", None) or image_token
                self.image_token_id = (getattr(tokenizer, "image_token_id", None)
                                       or tokenizer.convert_tokens_to_ids(self.image_token))
                self.video_token = getattr(tokenizer, "video_token", None) or "<video>"
                self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
                self.vision_aspect_ratio = vision_aspect_ratio

        _CACHE["ov"] = LlavaOnevisionImageProcessorOnly
    return _CACHE["ov"]

"""LLaVA-OneVision: SigLIP at 384 px (no CLS), up to 6×6 AnyRes tiles, features pooled to anyres_max_N tiles' worth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..adapter import Checkpoint, name_processor_class, processor_settings, register_adapter
from ..errors import ModelError
from ._llava import LlavaAdapter


class LlavaOnevisionAdapter(LlavaAdapter):
    name = "llava-onevision"
    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    example = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
    title = "LLaVA-OneVision"
    checkpoints = (Checkpoint("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "0.5B", cpu_friendly=True),
                   Checkpoint("llava-hf/llava-onevision-qwen2-7b-ov-hf", "7B"))

    def max_features_tiles(self, config: Any) -> int:
        ratio = str(getattr(config, "vision_aspect_ratio", "anyres_max_9"))
        if not ratio.startswith("anyres_max_"):
            raise ModelError(f"vision_aspect_ratio {ratio!r} is not anyres_max_N; gridvlm cannot lay out its features")
        return int(ratio.removeprefix("anyres_max_"))

    def load_processor(self, source: str, **kwargs: Any) -> Any:
        """transformers' LlavaOnevisionProcessor also builds a video processor, which needs torchvision; without
        it, the same processor for images only, from the checkpoint's files."""
        try:
            return super().load_processor(source, **kwargs)
        except (OSError, ValueError, ImportError, AttributeError, TypeError):
            from transformers import AutoImageProcessor, AutoTokenizer

            image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            keep = {"num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio", "image_token",
                    "chat_template"}
            settings = {k: v for k, v in processor_settings(source, **kwargs).items() if k in keep}
            settings.setdefault("chat_template", tokenizer.chat_template)
            return image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer, **settings)

    def make_tiny(self, directory: Path, seed: int) -> None:
        """SigLIP 384/14 (every position kept, feature layer -1) + Qwen2, anyres_max_9, ChatML template."""
        from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config, \
            SiglipVisionConfig
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil,
        )

        from ...strategies.anyres import ONEVISION_PINPOINTS
        from ..tiny import CHATML_TEMPLATE, SIGLIP_MEAN, SIGLIP_STD, TINY_TEXT, TINY_VISION, save_tiny, \
            tiny_tokenizer

        tokenizer = tiny_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"], None,
                                   "<|im_end|>", "<|endoftext|>", None,
                                   {"image_token": "<image>", "video_token": "<video>"})
        ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        config = LlavaOnevisionConfig(
            vision_config=SiglipVisionConfig(image_size=384, vision_use_head=False, **TINY_VISION),
            text_config=Qwen2Config(**TINY_TEXT, **ids),
            image_grid_pinpoints=ONEVISION_PINPOINTS,
            image_token_index=tokenizer.image_token_id,
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            vision_feature_select_strategy="full",  # SigLIP has no CLS token
            vision_feature_layer=-1,
            vision_aspect_ratio="anyres_max_9",
            tie_word_embeddings=False,
        )
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": 384, "width": 384}, image_grid_pinpoints=ONEVISION_PINPOINTS,
            image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD)
        processor = image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                                 num_image_tokens=27 * 27, vision_feature_select_strategy="full",
                                                 vision_aspect_ratio="anyres_max_9", chat_template=CHATML_TEMPLATE)
        save_tiny(directory, LlavaOnevisionForConditionalGeneration(config), processor, tokenizer)
        name_processor_class(directory / "processor_config.json", "LlavaOnevisionProcessor")


_CLASSES: dict[str, type] = {}


def image_only_processor_class() -> type:
    """LlavaOnevisionProcessor for images only (no video processor): the same token counting and prompt expansion.

    transformers' class cannot be constructed without torchvision, not even with video_processor=None.
    """
    if "image_only" not in _CLASSES:
        from transformers import LlavaOnevisionProcessor

        class LlavaOnevisionImageProcessorOnly(LlavaOnevisionProcessor):
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

        _CLASSES["image_only"] = LlavaOnevisionImageProcessorOnly
    return _CLASSES["image_only"]


register_adapter(LlavaOnevisionAdapter())

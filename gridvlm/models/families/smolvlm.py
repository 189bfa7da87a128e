"""SmolVLM (SmolVLMForConditionalGeneration, model_type "smolvlm"): the SmolVLM2 checkpoints.

Idefics3's slicing and sequence (see `_idefics`); SmolVLM2-2.2B-Instruct: SigLIP at 384 px, patch 14 (27
patches cover pixels 0–378), pixel shuffle 3 → 81 tokens per view, longest edge 1536; SmolVLM2-256M/500M:
512 px, patch 16, shuffle 4 → 64, longest edge 2048. The older SmolVLM-*-Instruct checkpoints are Idefics3
checkpoints (`idefics3`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..adapter import Checkpoint, name_processor_class, processor_settings, register_adapter
from ._idefics import IdeficsAdapter


class SmolVLMAdapter(IdeficsAdapter):
    name = "smolvlm"
    model_types = ("smolvlm",)
    model_class = "SmolVLMForConditionalGeneration"
    example = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
    title = "SmolVLM2"
    checkpoints = (Checkpoint("HuggingFaceTB/SmolVLM2-256M-Video-Instruct", "256M", cpu_friendly=True),
                   Checkpoint("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "500M", cpu_friendly=True),
                   Checkpoint("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "2.2B"))

    def load_processor(self, source: str, **kwargs: Any) -> Any:
        """transformers' SmolVLMProcessor also builds a video processor (torchvision) and needs num2words (video
        prompts); without them, the same processor for images only, from the checkpoint's files."""
        try:
            return super().load_processor(source, **kwargs)
        except (OSError, ValueError, ImportError, AttributeError, TypeError):
            from transformers import AutoImageProcessor, AutoTokenizer

            image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            settings = {k: v for k, v in processor_settings(source, **kwargs).items()
                        if k in ("image_seq_len", "chat_template")}
            settings.setdefault("chat_template", tokenizer.chat_template)
            return image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer, **settings)

    def make_tiny(self, directory: Path, seed: int) -> None:
        """SigLIP-style tower 384/14, pixel shuffle 3 (81 per view), longest edge 1536, Llama: SmolVLM2-2.2B's
        geometry."""
        from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration
        from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

        from ..tiny import TINY_TEXT, TINY_VISION, save_tiny

        tokenizer, _, processor = self.tiny_parts(image_only_processor_class(), 81, 1536, 384)
        config = SmolVLMConfig(
            vision_config=SmolVLMVisionConfig(image_size=384, **TINY_VISION),
            text_config=LlamaConfig(**TINY_TEXT, eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id),
            scale_factor=3, image_token_id=tokenizer.image_token_id, tie_word_embeddings=False,
        )
        save_tiny(directory, SmolVLMForConditionalGeneration(config), processor, tokenizer)
        name_processor_class(directory / "processor_config.json", "SmolVLMProcessor")


_CLASSES: dict[str, type] = {}


def image_only_processor_class() -> type:
    """SmolVLMProcessor for images only: the same expansion, without the video processor (torchvision) and the
    num2words check (video prompts only)."""
    if "image_only" not in _CLASSES:
        from transformers import SmolVLMProcessor
        from transformers.processing_utils import ProcessorMixin

        class SmolVLMImageProcessorOnly(SmolVLMProcessor):
            def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None,
                         **kwargs):
                self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
                self.image_token = getattr(tokenizer, "image_token", "<image>")
                self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
                self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
                self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
                self.image_seq_len = image_seq_len
                self.video_token = getattr(tokenizer, "video_token", "<video>")
                ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

            def apply_chat_template(self, conversation, chat_template=None, **kwargs):
                # SmolVLMProcessor's own reads the video processor's frame settings
                return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)

        _CLASSES["image_only"] = SmolVLMImageProcessorOnly
    return _CLASSES["image_only"]


register_adapter(SmolVLMAdapter())

"""Idefics3 (Idefics3ForConditionalGeneration): Idefics3-8B-Llama3 and the SmolVLM checkpoints built on it.

HuggingFaceM4/Idefics3-8B-Llama3: SigLIP at 364 px, patch 14, pixel shuffle 2 → 169 tokens per view, longest
edge 1456. SmolVLM-256M/500M-Instruct (512 px, patch 16, shuffle 4 → 64, longest edge 2048) and SmolVLM-Instruct
(384 px, patch 14, shuffle 3 → 81, longest edge 1536) are Idefics3 checkpoints too; every value is read from the
checkpoint's config and processor config.
"""

from __future__ import annotations

from pathlib import Path

from ..adapter import Checkpoint, register_adapter
from ._idefics import IdeficsAdapter


class Idefics3Adapter(IdeficsAdapter):
    name = "idefics3"
    model_types = ("idefics3",)
    model_class = "Idefics3ForConditionalGeneration"
    example = "HuggingFaceTB/SmolVLM-256M-Instruct"
    title = "Idefics3 / SmolVLM"
    checkpoints = (Checkpoint("HuggingFaceTB/SmolVLM-256M-Instruct", "256M", cpu_friendly=True),
                   Checkpoint("HuggingFaceTB/SmolVLM-500M-Instruct", "500M", cpu_friendly=True),
                   Checkpoint("HuggingFaceTB/SmolVLM-Instruct", "2B"),
                   Checkpoint("HuggingFaceM4/Idefics3-8B-Llama3", "8B"))

    def make_tiny(self, directory: Path, seed: int) -> None:
        """SigLIP-style tower 364/14, pixel shuffle 2 (169 per view), longest edge 1456, Llama: Idefics3-8B-Llama3's
        geometry."""
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig
        from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

        from ..tiny import TINY_TEXT, TINY_VISION, save_tiny

        tokenizer, _, processor = self.tiny_parts(Idefics3Processor, 169, 1456, 364)
        config = Idefics3Config(
            vision_config=Idefics3VisionConfig(image_size=364, **TINY_VISION),
            text_config=LlamaConfig(**TINY_TEXT, eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id),
            scale_factor=2, image_token_id=tokenizer.image_token_id, tie_word_embeddings=False,
        )
        save_tiny(directory, Idefics3ForConditionalGeneration(config), processor, tokenizer)


register_adapter(Idefics3Adapter())

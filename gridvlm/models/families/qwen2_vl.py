"""Qwen2-VL: a 675M-parameter ViT with 14-px patches at native resolution, 2×2 patches merged into one token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..adapter import Checkpoint, register_adapter
from ._qwen import QwenVLAdapter, make_tiny_qwen, qwen_tokenizer, token_ids

QWEN2_MIN_PIXELS = 56 * 56  # Qwen2-VL / Qwen2.5-VL preprocessor_config.json: min_pixels 3136
QWEN2_MAX_PIXELS = 16384 * 28 * 28  # max_pixels 12,845,056 (transformers' class default is only 1280·28²)
TINY_MROPE = [2, 3, 3]  # (time, row, column) rotary sections of the tiny head_dim 16 (the real 128: [16, 24, 24])


def tiny_text(config_class: Any, tokenizer: Any, **extra: Any) -> Any:
    """The tiny Qwen2-style language model config with multimodal rotary sections."""
    from ..tiny import TINY_TEXT

    return config_class(**TINY_TEXT, bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                         "mrope_section": TINY_MROPE}, **extra)


def qwen2_image_processor(**overrides: Any) -> Any:
    """The Qwen2-VL / Qwen2.5-VL hub preprocessor settings (OpenAI CLIP mean/std, patch 14, merge 2)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from ..tiny import CLIP_MEAN, CLIP_STD

    settings = dict(min_pixels=QWEN2_MIN_PIXELS, max_pixels=QWEN2_MAX_PIXELS, patch_size=14, merge_size=2,
                    temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return Qwen2VLImageProcessorPil(**{**settings, **overrides})


class Qwen2VLAdapter(QwenVLAdapter):
    name = "qwen2-vl"
    model_types = ("qwen2_vl",)
    model_class = "Qwen2VLForConditionalGeneration"
    processor_class = "Qwen2VLProcessor"
    example = "Qwen/Qwen2-VL-2B-Instruct"
    title = "Qwen2-VL"
    checkpoints = (Checkpoint("Qwen/Qwen2-VL-2B-Instruct", "2B"), Checkpoint("Qwen/Qwen2-VL-7B-Instruct", "7B"))

    def make_tiny(self, directory: Path, seed: int) -> None:
        """Qwen2-VL's ViT geometry (patch 14, merge 2, 2 frames) and preprocessor, a tiny Qwen2 language model."""
        from transformers import Qwen2VLConfig, Qwen2VLTextConfig, Qwen2VLVisionConfig

        tokenizer = qwen_tokenizer()
        config = Qwen2VLConfig(
            text_config=tiny_text(Qwen2VLTextConfig, tokenizer).to_dict(),
            vision_config=Qwen2VLVisionConfig(depth=2, embed_dim=32, mlp_ratio=2, num_heads=2, hidden_size=64,
                                              patch_size=14, spatial_merge_size=2, temporal_patch_size=2).to_dict(),
            tie_word_embeddings=False, **token_ids(tokenizer))
        make_tiny_qwen(directory, self.processor_class, config, self.model_class, qwen2_image_processor(), tokenizer)


register_adapter(Qwen2VLAdapter())

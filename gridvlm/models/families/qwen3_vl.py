"""Qwen3-VL: 16-px patches merged 2×2 (one token per 32×32 cell), deepstack features added to early LLM layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..adapter import Checkpoint, register_adapter
from ._qwen import QwenGeometry, QwenVLAdapter, make_tiny_qwen, qwen_tokenizer, token_ids

QWEN3_MIN_PIXELS = 65536  # Qwen3-VL preprocessor_config.json: size.shortest_edge
QWEN3_MAX_PIXELS = 16777216  # size.longest_edge
TINY_MROPE = [4, 2, 2]  # interleaved (time, row, column) sections of the tiny head_dim 16 (the real: [24, 20, 20])


class Qwen3VLAdapter(QwenVLAdapter):
    name = "qwen3-vl"
    model_types = ("qwen3_vl",)
    model_class = "Qwen3VLForConditionalGeneration"
    processor_class = "Qwen3VLProcessor"
    example = "Qwen/Qwen3-VL-2B-Instruct"
    title = "Qwen3-VL"
    checkpoints = (Checkpoint("Qwen/Qwen3-VL-2B-Instruct", "2B"), Checkpoint("Qwen/Qwen3-VL-4B-Instruct", "4B"),
                   Checkpoint("Qwen/Qwen3-VL-8B-Instruct", "8B"))

    def extra_geometry(self, vision: Any) -> dict[str, Any]:
        return {"deepstack_layers": tuple(int(i) for i in vision.deepstack_visual_indexes)}

    def vision_attention_notes(self, geometry: QwenGeometry, layers: Any) -> tuple[str, ...]:
        return super().vision_attention_notes(geometry, layers) + (
            f"deepstack: the outputs of encoder layers {list(geometry.deepstack_layers)} are merged and added to the "
            f"first {len(geometry.deepstack_layers)} LLM layers at the same image positions",)

    def make_tiny(self, directory: Path, seed: int) -> None:
        """Qwen3-VL's ViT geometry (patch 16, merge 2, 2 frames, 48×48 learned positions, deepstack from layer 0)
        and preprocessor (mean = std = 0.5), a tiny Qwen3 language model with q/k norms."""
        from transformers import Qwen3VLConfig, Qwen3VLTextConfig, Qwen3VLVisionConfig
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        from ..tiny import SIGLIP_MEAN, SIGLIP_STD, TINY_TEXT

        tokenizer = qwen_tokenizer()
        text = Qwen3VLTextConfig(**TINY_TEXT, head_dim=16, bos_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id,
                                 rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                                  "mrope_section": TINY_MROPE, "mrope_interleaved": True})
        config = Qwen3VLConfig(
            text_config=text.to_dict(),
            vision_config=Qwen3VLVisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                              out_hidden_size=64, patch_size=16, spatial_merge_size=2,
                                              temporal_patch_size=2, num_position_embeddings=2304,
                                              deepstack_visual_indexes=[0]).to_dict(),
            tie_word_embeddings=False, **token_ids(tokenizer))
        image_processor = Qwen2VLImageProcessorPil(min_pixels=QWEN3_MIN_PIXELS, max_pixels=QWEN3_MAX_PIXELS,
                                                   patch_size=16, merge_size=2, temporal_patch_size=2,
                                                   image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD)
        make_tiny_qwen(directory, self.processor_class, config, self.model_class, image_processor, tokenizer)


register_adapter(Qwen3VLAdapter())

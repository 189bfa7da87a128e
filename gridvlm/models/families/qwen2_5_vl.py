"""Qwen2.5-VL: Qwen2-VL's resize and 2×2 merge; its ViT attends within 112-px windows except in a few layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..adapter import Checkpoint, register_adapter
from ._qwen import QwenGeometry, QwenVLAdapter, make_tiny_qwen, qwen_tokenizer, token_ids
from .qwen2_vl import qwen2_image_processor, tiny_text


class Qwen2_5VLAdapter(QwenVLAdapter):
    name = "qwen2.5-vl"
    model_types = ("qwen2_5_vl",)
    model_class = "Qwen2_5_VLForConditionalGeneration"
    processor_class = "Qwen2_5_VLProcessor"
    example = "Qwen/Qwen2.5-VL-3B-Instruct"
    title = "Qwen2.5-VL"
    checkpoints = (Checkpoint("Qwen/Qwen2.5-VL-3B-Instruct", "3B"), Checkpoint("Qwen/Qwen2.5-VL-7B-Instruct", "7B"))

    def extra_geometry(self, vision: Any) -> dict[str, Any]:
        return {"window_size": int(vision.window_size),
                "full_attention_layers": tuple(int(i) for i in vision.fullatt_block_indexes)}

    def sequence_patches(self, vlm, grid_thw) -> np.ndarray:
        """The tower reorders the merge windows into attention-window order before its blocks
        (`get_vision_window_index`, the tower's own function) and restores the order after the merger."""
        from transformers.vision_utils import get_vision_window_index

        geo = vlm.geometry
        window_index, _ = get_vision_window_index(grid_thw.cpu(), geo.merge_size, geo.window_size, geo.patch_size)
        unit = geo.merge_size ** 2
        processor_order = super().sequence_patches(vlm, grid_thw)
        i = np.arange(len(processor_order))
        return processor_order[window_index.numpy()[i // unit] * unit + i % unit]

    def vision_attention_notes(self, geometry: QwenGeometry, layers: Any) -> tuple[str, ...]:
        side = geometry.window_size // geometry.cell * geometry.cell
        picked = [] if layers is None else [int(layers)] if isinstance(layers, int) else [int(i) for i in layers]
        windowed = [i for i in picked if i >= 0 and i not in geometry.full_attention_layers]
        notes = [f"Qwen2.5-VL's encoder attends within {side}×{side}-px windows of the resized image in every layer "
                 f"but {list(geometry.full_attention_layers)}: in a windowed layer each patch's value is the mean "
                 "attention it receives from its own window (every window sums to 1)"]
        if windowed:
            notes.append(f"layers {windowed} are windowed")
        return tuple(notes)

    def make_tiny(self, directory: Path, seed: int) -> None:
        """Qwen2.5-VL's ViT geometry (patch 14, merge 2, 112-px windows; layer 1 of 2 full attention) and
        preprocessor, a tiny Qwen2 language model."""
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLTextConfig, Qwen2_5_VLVisionConfig

        tokenizer = qwen_tokenizer()
        config = Qwen2_5_VLConfig(
            text_config=tiny_text(Qwen2_5_VLTextConfig, tokenizer).to_dict(),
            vision_config=Qwen2_5_VLVisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                                 out_hidden_size=64, patch_size=14, spatial_merge_size=2,
                                                 temporal_patch_size=2, window_size=112,
                                                 fullatt_block_indexes=[1]).to_dict(),
            tie_word_embeddings=False, **token_ids(tokenizer))
        make_tiny_qwen(directory, self.processor_class, config, self.model_class, qwen2_image_processor(), tokenizer)


register_adapter(Qwen2_5VLAdapter())

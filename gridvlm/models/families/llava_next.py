"""LLaVA-NeXT (LLaVA-1.6): CLIP ViT-L/14 at 336 px, AnyRes tiles from grid pinpoints, unpadded features, newlines."""

from __future__ import annotations

from pathlib import Path

from ..adapter import Checkpoint, name_processor_class, register_adapter
from ._llava import LlavaAdapter


class LlavaNextAdapter(LlavaAdapter):
    name = "llava-next"
    model_types = ("llava_next",)
    model_class = "LlavaNextForConditionalGeneration"
    example = "llava-hf/llava-v1.6-mistral-7b-hf"
    title = "LLaVA-NeXT"
    checkpoints = (Checkpoint("llava-hf/llava-v1.6-mistral-7b-hf", "7B"), Checkpoint("llava-hf/llava-v1.6-vicuna-7b-hf", "7B"))

    def make_tiny(self, directory: Path, seed: int) -> None:
        """CLIP 336/14 (CLS dropped, feature layer -2) + Mistral, the llava-hf processor settings."""
        from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, \
            LlavaNextProcessor, MistralConfig
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        from ...strategies.anyres import LLAVA_NEXT_PINPOINTS
        from ..tiny import CLIP_MEAN, CLIP_STD, MISTRAL_TEMPLATE, TINY_TEXT, TINY_VISION, save_tiny, tiny_tokenizer

        tokenizer = tiny_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>", "<unk>",
                                   {"image_token": "<image>"})
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
        config = LlavaNextConfig(
            vision_config=CLIPVisionConfig(image_size=336, projection_dim=32, **TINY_VISION),
            text_config=MistralConfig(**TINY_TEXT, **ids),
            image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
            image_token_index=tokenizer.image_token_id,
            vision_feature_select_strategy="default",  # CLIP: drop the CLS token
            vision_feature_layer=-2,
            tie_word_embeddings=False,
        )
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
            image_grid_pinpoints=LLAVA_NEXT_PINPOINTS, image_mean=CLIP_MEAN, image_std=CLIP_STD)
        # patch_size and num_additional_image_tokens (the CLS token) must match the model, or the processor's
        # image-token count is off by one per view
        processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                                       vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                       chat_template=MISTRAL_TEMPLATE)
        save_tiny(directory, LlavaNextForConditionalGeneration(config), processor, tokenizer)
        name_processor_class(directory / "processor_config.json", "LlavaNextProcessor")


register_adapter(LlavaNextAdapter())

"""Tiny random-weight checkpoints with the real geometry, built offline in a few seconds.

The vision towers keep the real input size and patch size (336/14 CLIP for LLaVA-NeXT, 384/14 SigLIP for
LLaVA-OneVision), the pinpoints, the feature-selection strategy and the processor settings of the llava-hf
checkpoints, so every plan, view and visual-token layout is the real one; only widths and depths are tiny.
The answers such a model gives are meaningless.
"""

from __future__ import annotations

from pathlib import Path

from ..strategies.anyres import LLAVA_NEXT_PINPOINTS, ONEVISION_PINPOINTS

RANDOM_WEIGHTS_KEY = "gridvlm_random_weights"  # set to true in config.json of every checkpoint built here
RANDOM_WEIGHTS_LABEL = "random weights — answers are meaningless, geometry is real"

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]

TINY_VOCAB = 1024
TINY_CONTEXT = 8192  # holds the largest OneVision image (7371 visual tokens) plus a short chat

# What the tokenizer is trained on: enough text for ~700 merges, no download.
_CORPUS = """
The image shows a photograph of a city street at night. There are cars, people and tall buildings with lights.
What is shown in this image? Describe the picture in detail. How many tiles does the model see?
A cat is sitting on a wooden table next to a cup of coffee. The sky is blue and there are white clouds.
The chart has a title, an axis with numbers, and a legend in the upper right corner of the figure.
This document is a page of text with two columns, a heading, and a table of results at the bottom.
Vision language models cut a large image into tiles, encode each tile, and give the language model
one token for every patch feature, with a newline token at the end of each row of features.
Yes. No. Maybe. I think the answer is the red one on the left, next to the green tree and the small house.
""" * 4

# Chat templates in the llava-hf style: user content is a list of {"type": "image"} / {"type": "text"} parts.
_PARTS = ("{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
          "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}")
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] " + _PARTS + " [/INST]"
    "{% elif message['role'] == 'assistant' %} " + _PARTS + "{{ eos_token }}{% endif %}{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n" + _PARTS + "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer(specials: list[str], bos: str | None, eos: str, pad: str, unk: str | None, extra: dict[str, str]):
    """A byte-level BPE trained here on `_CORPUS`, special tokens first (ids 0…)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB - 24, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS], trainer=trainer)
    names = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": unk}
    return PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=extra,
                                   **{k: v for k, v in names.items() if v is not None})


def make_tiny_vlm(directory: str | Path, family: str = "llava-next", seed: int = 0) -> Path:
    """Write a tiny random-weight checkpoint of `family` ("llava-next" or "llava-onevision") into `directory`.

    Loadable with `load_vlm(directory)` and with transformers' own `from_pretrained`/`AutoProcessor`.
    Returns the directory.
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        MistralConfig,
        Qwen2Config,
        SiglipVisionConfig,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from .errors import ModelError
    from .families import FAMILIES, processor_class

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=TINY_VOCAB, max_position_embeddings=TINY_CONTEXT,
                tie_word_embeddings=False)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=14)

    if family == "llava-next":
        tokenizer = _tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>", "<unk>",
                               {"image_token": "<image>"})
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
        config = LlavaNextConfig(
            vision_config=CLIPVisionConfig(image_size=336, projection_dim=32, **vision),
            text_config=MistralConfig(**text, **ids),
            image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
            image_token_index=tokenizer.image_token_id,
            vision_feature_select_strategy="default",  # CLIP: drop the CLS token
            vision_feature_layer=-2,
            tie_word_embeddings=False,
        )
        model = LlavaNextForConditionalGeneration(config)
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
            image_grid_pinpoints=LLAVA_NEXT_PINPOINTS, image_mean=CLIP_MEAN, image_std=CLIP_STD)
        processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                                       vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                       chat_template=MISTRAL_TEMPLATE)
    elif family == "llava-onevision":
        tokenizer = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"], None,
                               "<|im_end|>", "<|endoftext|>", None,
                               {"image_token": "<image>", "video_token": "<video>"})
        ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        config = LlavaOnevisionConfig(
            vision_config=SiglipVisionConfig(image_size=384, vision_use_head=False, **vision),
            text_config=Qwen2Config(**text, **ids),
            image_grid_pinpoints=ONEVISION_PINPOINTS,
            image_token_index=tokenizer.image_token_id,
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            vision_feature_select_strategy="full",  # SigLIP has no CLS token
            vision_feature_layer=-1,
            vision_aspect_ratio="anyres_max_9",
            tie_word_embeddings=False,
        )
        model = LlavaOnevisionForConditionalGeneration(config)
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": 384, "width": 384}, image_grid_pinpoints=ONEVISION_PINPOINTS,
            image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD)
        # transformers' own class needs a video processor, which needs torchvision; same settings, same files.
        processor = processor_class(FAMILIES["llava_onevision"])(image_processor=image_processor, tokenizer=tokenizer,
                                            num_image_tokens=27 * 27, vision_feature_select_strategy="full",
                                            vision_aspect_ratio="anyres_max_9", chat_template=CHATML_TEMPLATE)
    else:
        raise ModelError(f"make_tiny_vlm builds 'llava-next' or 'llava-onevision', not {family!r}")

    tokenizer.chat_template = processor.chat_template
    model.config.__dict__[RANDOM_WEIGHTS_KEY] = True
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    _name_processor_class(directory / "processor_config.json", family)
    (directory / "README.md").write_text(
        f"# Tiny {family} checkpoint built by gridvlm.models.make_tiny_vlm (seed {seed})\n\n"
        f"{RANDOM_WEIGHTS_LABEL}.\n"
    )
    return directory


def _name_processor_class(path: Path, family: str) -> None:
    """Name transformers' own processor class in the saved config, as the llava-hf checkpoints do."""
    import json

    data = json.loads(path.read_text())
    data["processor_class"] = {"llava-next": "LlavaNextProcessor", "llava-onevision": "LlavaOnevisionProcessor"}[family]
    path.write_text(json.dumps(data, indent=2) + "\n")

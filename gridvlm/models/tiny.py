"""Tiny random-weight checkpoints with the real geometry, built offline in a few seconds.

Each family's adapter holds its recipe (`ModelAdapter.make_tiny`): the vision tower keeps the real input size
and patch size, the pinpoints, the feature-selection strategy and the processor settings of the family's hub
checkpoints, so every plan, view and visual-token layout is the real one; only widths and depths are tiny.
What the recipes share is here: a byte-level BPE tokenizer trained on a few lines of text, chat templates,
the tiny widths, and saving with the random-weights mark. The answers such a model gives are meaningless.
"""

from __future__ import annotations

from pathlib import Path

RANDOM_WEIGHTS_KEY = "gridvlm_random_weights"  # set to true in config.json of every checkpoint built here
RANDOM_WEIGHTS_LABEL = "random weights — answers are meaningless, geometry is real"

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]

TINY_VOCAB = 1024
TINY_CONTEXT = 8192  # holds the largest OneVision image (7371 visual tokens) plus a short chat
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=TINY_VOCAB, max_position_embeddings=TINY_CONTEXT,
                 tie_word_embeddings=False)  # grouped KV heads, as the real checkpoints
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=14)

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


def tiny_tokenizer(specials: list[str], bos: str | None, eos: str, pad: str, unk: str | None,
                   extra: dict[str, str]):
    """A byte-level BPE trained here on `_CORPUS`, special tokens first (ids 0…); `extra` names special tokens
    such as {"image_token": "<image>"}, which processors read as `tokenizer.image_token_id`."""
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


def save_tiny(directory: Path, model, processor, tokenizer) -> None:
    """Save model and processor, marked as random weights (config key and README)."""
    tokenizer.chat_template = processor.chat_template
    model.config.__dict__[RANDOM_WEIGHTS_KEY] = True
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def make_tiny_vlm(directory: str | Path, family: str = "llava-next", seed: int = 0) -> Path:
    """Write a tiny random-weight checkpoint of `family` (a name of `list_adapters()`) into `directory`.

    Loadable with `load_vlm(directory)` and with transformers' own `from_pretrained`/`AutoProcessor`.
    Returns the directory.
    """
    import torch

    from .adapter import get_adapter, list_adapters
    from .errors import ModelError

    if family not in list_adapters():
        raise ModelError(f"make_tiny_vlm builds {' or '.join(map(repr, list_adapters()))}, not {family!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    get_adapter(family).make_tiny(directory, seed)
    (directory / "README.md").write_text(
        f"# Tiny {family} checkpoint built by gridvlm.models.make_tiny_vlm (seed {seed})\n\n"
        f"{RANDOM_WEIGHTS_LABEL}.\n"
    )
    return directory

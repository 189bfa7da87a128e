"""Vision-language models through transformers: load one, run it on any gridvlm plan, chat with it.

One adapter per model family (`gridvlm/models/families/`, discovered; `list_adapters()`), and everything else
generic over adapters. The only part of gridvlm that imports torch and transformers, and only when a name
below is first used: `import gridvlm.models` itself loads neither (ModelError is cheap to import).

    vlm = load_vlm("llava-hf/llava-v1.6-mistral-7b-hf")      # or a make_tiny_vlm directory
    plan = vlm.native_plan(image)                             # the model's own slicing, read from its config
    embeds, layout = vlm.encode(image, plan)                  # visual token sequence + what each position is
    for partial in chat(vlm, image, plan, [], "What is this?"):
        print(partial)
"""

from .errors import ModelError

_LAZY = {
    "ModelAdapter": "adapter",
    "register_adapter": "adapter",
    "list_adapters": "adapter",
    "get_adapter": "adapter",
    "VLM": "loading",
    "ModelKey": "loading",
    "load_vlm": "loading",
    "loaded_models": "loading",
    "is_loaded": "loading",
    "clear_cache": "loading",
    "in_use": "loading",
    "encode": "visual",
    "VisualSequence": "visual",
    "Layout": "visual",
    "chat": "conversation",
    "prepare_inputs": "conversation",
    "PreparedInputs": "conversation",
    "to_messages": "conversation",
    "prompt_size": "conversation",
    "count_positions": "visual",
    "view_pixels": "visual",
    "make_tiny_vlm": "tiny",
    "RANDOM_WEIGHTS_LABEL": "tiny",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        from ..extras import check

        check("torch", "transformers", extra="models", what=f"gridvlm.models.{name}")
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gridvlm.models' has no attribute {name!r}")


__all__ = ["ModelError", *_LAZY]

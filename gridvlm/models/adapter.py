"""The model-family seam: what gridvlm must know about a family of vision-language models, and the registry.

A family is one module under `gridvlm/models/families/` that registers one `ModelAdapter`; modules there are
discovered (no import list to edit). `load_vlm`, `encode`, `chat`, attention capture and mapping read
everything family-specific from the adapter:

- which checkpoints it reads (`model_types`) and the model class to load;
- the encoder geometry from a checkpoint's config and processor config (`read_geometry`), and from it the
  model's own plan of an image (`native_plan`);
- which processor to build (`load_processor`);
- the layout of the visual sequence for a plan (`layout`): for every position, which view and which feature
  cell, or which newline / separator — pure arithmetic on the plan, no model run;
- the plan-mode encoder (`encode`, where `plan_mode`): any gridvlm plan's views through the vision tower
  and projector into the visual sequence, in the order `layout` describes;
- where its attention modules are (`language_model`, `text_layers`, `vision_tower`, `vision_layers`) and
  which encoder layer feeds the projector;
- a tiny random-weight checkpoint with the real geometry (`make_tiny`), for tests and offline use.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..geometry import Plan
from .errors import ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..attention.mapping import Layout
    from .loading import VLM


@dataclass(frozen=True)
class Checkpoint:
    """A real hub checkpoint of a family, as the app's model list offers it."""

    hub_id: str
    size: str  # parameters as the model card states them, e.g. "2B"
    cpu_friendly: bool = False  # small enough to answer on a CPU-only Space in seconds


class ModelAdapter:
    """One model family. Subclasses set the class attributes and implement what their family does differently;
    the defaults fit transformers' usual LLaVA-style nesting (`model.model.language_model`,
    `model.model.vision_tower`)."""

    name: ClassVar[str]  # gridvlm's family name, also the strategy whose plan is the model's own processing
    model_types: ClassVar[tuple[str, ...]]  # transformers config.model_type values this family reads
    model_class: ClassVar[str]  # transformers class with a language-modelling head
    example: ClassVar[str]  # a hub id of this family, for messages
    plan_mode: ClassVar[bool] = True  # any gridvlm plan can be fed to the model (`encode`); False: native only
    title: ClassVar[str] = ""  # how people name the family, e.g. "Qwen2-VL" (the app's group heading)
    checkpoints: ClassVar[tuple[Checkpoint, ...]] = ()  # real hub checkpoints, smallest first

    # ---- checkpoint → geometry → plans

    def read_geometry(self, config: Any, image_processor: Any) -> Any:
        """The encoder geometry of a checkpoint (a frozen dataclass with `mean`, `std`, `plan_params()` and
        `describe()`), read from its config and image processor; ModelError when they disagree."""
        raise NotImplementedError

    def processor_geometry(self, config: Any, processor: Any) -> Any:
        """The geometry as `load_vlm` reads it: from the config and the whole processor, for families whose visual
        span also depends on the tokenizer (how it splits the markers the processor writes); by default
        `read_geometry(config, processor.image_processor)`."""
        return self.read_geometry(config, processor.image_processor)

    def native_plan(self, geometry: Any, image_or_size: Any) -> Plan:
        """The gridvlm plan of the model's own processing of an image."""
        from .. import plan

        return plan(image_or_size, self.name, **geometry.plan_params())

    def load_processor(self, source: str, **kwargs: Any) -> Any:
        """The checkpoint's processor with the PIL image backend (the reference gridvlm.pixel_values reproduces)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(source, backend="pil", **kwargs)

    # ---- the visual sequence

    def layout(self, geometry: Any, plan: Plan) -> Layout:
        """What each visual position of `plan`'s sequence is; len() = the number of visual positions."""
        raise NotImplementedError

    def encode(self, vlm: VLM, image: Image.Image, plan: Plan) -> tuple[torch.Tensor, tuple[str, ...]]:
        """Plan mode: (embeddings (positions, text hidden size) in `layout` order, notes for the user)."""
        raise ModelError(f"{self.name} models see only their own slicing; gridvlm cannot feed them another plan")

    def plan_mode_rule(self, geometry: Any) -> str:
        """How a plan that is not the model's own is fed to it, in a few words for the user."""
        return ""

    def view_pixels(self, vlm: VLM, image: Image.Image, plan: Plan, exact: bool | None = None) -> torch.Tensor:
        """The plan's views as the vision tower takes them, on the model's device and dtype."""
        raise NotImplementedError

    def patch_grids(self, geometry: Any, plan: Plan) -> list[tuple[int, int]]:
        """(rows, cols) of patches the vision tower sees in each view, in `plan.views` order."""
        raise NotImplementedError

    def patch_pixels(self, geometry: Any, plan: Plan) -> list[tuple[float, float]]:
        """(height, width) of one patch in each view's input pixels (`Tile.input_size`), from the tower's patch
        embedding: what a heatmap cell's box is made of. `layout` builds its cells from it (× the merge factor)."""
        raise NotImplementedError

    # ---- where the attention modules are

    def language_model(self, model: Any) -> Any:
        """The module that takes inputs_embeds and runs the decoder layers."""
        return model.model.language_model

    def text_layers(self, model: Any) -> Sequence[Any]:
        """The decoder layers; each has `self_attn`."""
        from ..attention.capture import decoder_layers

        return decoder_layers(model)

    def vision_tower(self, model: Any) -> Any:
        return model.model.vision_tower

    def vision_layers(self, model: Any) -> Sequence[Any]:
        """The vision tower's encoder layers; each has `self_attn`."""
        from ..attention.capture import encoder_layers

        return encoder_layers(model)

    def vision_has_cls(self, geometry: Any) -> bool:
        """Whether the tower puts a CLS token before the patches (its attention map is then CLS → patches)."""
        return False

    def feature_attention_layer(self, geometry: Any, num_layers: int) -> int:
        """The encoder layer (0-based) whose output the projector reads."""
        return num_layers - 1

    def vision_heads(self, model: Any) -> int:
        """Attention heads of the vision tower's layers."""
        return int(self.vision_layers(model)[0].self_attn.num_heads)

    def vision_attention(self, vlm: VLM, image: Image.Image, plan: Plan, layers: Any, heads: str | int) -> Any:
        """Per view, the vision tower's attention on its patch grid (see `gridvlm.attention.vision_attention`):
        (views, rows, cols) or a list of (rows, cols) maps."""
        from ..attention.capture import batched_views_attention

        return batched_views_attention(vlm, image, plan, layers, heads)

    def vision_attention_notes(self, geometry: Any, layers: Any) -> tuple[str, ...]:
        """What the vision-encoder map of `layers` (encoder layer indices averaged, e.g. range(first, last + 1);
        None: the default layer) shows, for the UI (e.g. windowed attention blocks)."""
        return ()

    def text_queries_keys(self, module: Any, hidden: Any, rows: Any, position_embeddings: Any) -> tuple[Any, Any]:
        """(queries (1, H, R, d) of the chosen rows, keys (1, KV, S, d)) of a decoder attention module, exactly as
        its forward computes them; the default reads q/k projections, q/k norms and the rotary embedding."""
        from ..attention.capture import text_queries_keys

        return text_queries_keys(module, hidden, rows, position_embeddings)

    # ---- native mode: the model's own processor

    def placeholder_token_id(self, vlm: VLM) -> int:
        """The token the chat template writes for an image, which the processor expands into the visual span."""
        return vlm.image_token_id

    def processor_kwargs(self, geometry: Any) -> dict[str, Any]:
        """Keyword arguments gridvlm passes to the checkpoint's processor call in native mode (settings the
        processor does not take from the checkpoint's files by itself, e.g. Gemma 3's Pan & Scan)."""
        return {}

    def native_positions(self, vlm: VLM, prompt: str, expanded_ids: Sequence[int],
                         plan: Plan) -> tuple[int, ...] | None:
        """Where the visual positions sit in the processor's `expanded_ids`, for families whose expansion also
        writes text that merges with the prompt's neighbouring tokens (Gemma 3's "\\n\\n"); None: the generic
        rule of `native_visual_span` (every position written in place of the placeholder)."""
        return None

    def native_prompt_tokens(self, vlm: VLM, prompt: str, plan: Plan) -> int | None:
        """Prompt tokens of a native turn whose chat-template text is `prompt`, for families that override
        `native_positions`; None: template tokens − 1 placeholder + the layout's positions."""
        return None

    def native_inputs(self, vlm: VLM, image: Image.Image, input_ids: Sequence[int]) -> dict[str, Any]:
        """Model inputs for an already expanded sequence (prompt + answer ids, as a reply record keeps them):
        the processor's image outputs for `image` beside `input_ids` and an all-ones attention mask, on the
        model's device (floating tensors in its dtype). Families whose forward needs more (token types) add it."""
        import torch

        outputs = vlm.processor.image_processor(images=image, return_tensors="pt")
        ids = torch.as_tensor(list(input_ids), device=vlm.device).reshape(1, -1)
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for name, value in outputs.items():
            if hasattr(value, "to"):
                value = value.to(vlm.device)
                inputs[name] = value.to(vlm.model.dtype) if value.is_floating_point() else value
        return inputs

    # ---- a tiny checkpoint

    def make_tiny(self, directory: Path, seed: int) -> None:
        """Write a tiny random-weight checkpoint with the family's real geometry into `directory`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# ---------------------------------------------------------------------------------------------------------------
# Registry


_ADAPTERS: dict[str, ModelAdapter] = {}
_DISCOVERED = False
_DISCOVERY_LOCK = threading.Lock()


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    """Make `adapter` known by its name; a family module calls this once at import."""
    clash = [a.name for a in _ADAPTERS.values() if a is not adapter and set(a.model_types) & set(adapter.model_types)]
    if clash:
        raise ValueError(f"adapter {adapter.name!r} reads model types already read by {clash}")
    _ADAPTERS[adapter.name] = adapter
    return adapter


def _discover() -> None:
    """Import every public module of gridvlm.models.families once (each registers its adapter)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    with _DISCOVERY_LOCK:
        if _DISCOVERED:
            return
        from . import families

        for info in sorted(pkgutil.iter_modules(families.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{families.__name__}.{info.name}")
        _DISCOVERED = True


def list_adapters() -> list[str]:
    """The family names gridvlm.models runs, in module-name order."""
    _discover()
    return list(_ADAPTERS)


def get_adapter(name: str) -> ModelAdapter:
    _discover()
    if name not in _ADAPTERS:
        raise ModelError(f"no model family {name!r}; gridvlm.models runs {', '.join(_ADAPTERS)}")
    return _ADAPTERS[name]


def adapter_for_config(config: Any, source: str) -> ModelAdapter:
    """The adapter of a checkpoint's config (by `config.model_type`); ModelError naming what is supported."""
    _discover()
    model_type = getattr(config, "model_type", None)
    for adapter in _ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter
    known = ", ".join(f"{a.name} (e.g. {a.example})" for a in _ADAPTERS.values())
    raise ModelError(f"{source!r} is a {model_type or 'unknown'!s} model; gridvlm.models runs {known}")


# ---------------------------------------------------------------------------------------------------------------
# Helpers for adapters


def processor_settings(source: str, **kwargs: Any) -> dict[str, Any]:
    """The checkpoint's processor_config.json (its scalar settings) and chat template, read without building the
    processor (for families whose transformers processor cannot be built here)."""
    from transformers.utils import cached_file

    settings: dict[str, Any] = {}
    for name in ("processor_config.json", "chat_template.jinja", "chat_template.json"):
        try:
            path = cached_file(source, name, _raise_exceptions_for_missing_entries=False, **kwargs)
        except OSError:
            path = None
        if not path:
            continue
        text = Path(path).read_text()
        if name == "processor_config.json":
            settings.update({k: v for k, v in json.loads(text).items() if not isinstance(v, dict)})
        elif name == "chat_template.jinja":
            settings.setdefault("chat_template", text)
        else:
            settings.setdefault("chat_template", json.loads(text).get("chat_template"))
    return settings


def name_processor_class(path: Path, class_name: str) -> None:
    """Name transformers' own processor class in a saved processor_config.json, as hub checkpoints do."""
    data = json.loads(path.read_text())
    data["processor_class"] = class_name
    path.write_text(json.dumps(data, indent=2) + "\n")

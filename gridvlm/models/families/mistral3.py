"""Mistral 3 (Mistral-Small-3.1/3.2): a Pixtral vision tower on one view at the image's own aspect, 14-px patches,
a 2 × 2 patch merger, `[IMG]` per token, `[IMG_BREAK]` after each token row and `[IMG_END]` after the last.

What the real processor and model do (transformers 5.23, models/pixtral/processing_pixtral.py and
models/mistral3/modeling_mistral3.py):

- `PixtralProcessor._process_images` passes patch_size · spatial_merge_size = 28 to the image processor, so the
  view's sides are rounded UP to multiples of 28 (the image processor alone would round to 14): the native plan
  is the `mistral3` strategy with resize_patch_size 28, and the merger never drops a row or column.
- The tower (`PixtralVisionModel`) takes the images padded to one batch plus `image_sizes`, cuts each image's
  patch grid back out, flattens all images into one sequence with 2-D rotary positions, and attends with a
  block-diagonal mask: patches attend within their own image only.
- `Mistral3PatchMerger` unfolds each image's (rows, cols) patch grid into 2 × 2 blocks, row-major: token (r, c)
  is patches (2r…2r+1, 2c…2c+1), 28 × 28 input pixels.
- The sequence is `[IMG]` × cols then `[IMG_BREAK]` per token row, the last row's break replaced by `[IMG_END]`.

Only the model's own slicing is supported (plan_mode False).
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...attention.mapping import Layout, LayoutBuilder
from ...geometry import Plan
from ..adapter import Checkpoint, ModelAdapter, name_processor_class, processor_settings, register_adapter
from ..errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

    from ..loading import VLM


@dataclass(frozen=True)
class Mistral3Geometry:
    """The encoder geometry of a Mistral 3 checkpoint, as its config and processor config state it."""

    longest_edge: int  # the image processor's size["longest_edge"], pixels
    patch_size: int  # vision_config.patch_size, pixels
    merge: int  # config.spatial_merge_size: merge × merge patches per token
    feature_layer: int | list[int]  # vision_feature_layer: which hidden state(s) feed the projector
    mean: tuple[float, float, float]  # the processor's image_mean
    std: tuple[float, float, float]  # the processor's image_std

    @property
    def cell(self) -> int:
        """Input pixels of one token's side: patch_size · merge (what PixtralProcessor rounds the sides to)."""
        return self.patch_size * self.merge

    def plan_params(self) -> dict[str, Any]:
        return {"longest_edge": self.longest_edge, "patch_size": self.patch_size,
                "spatial_merge_size": self.merge, "resize_patch_size": self.cell}

    def describe(self) -> str:
        return (f"one view, longest edge ≤ {self.longest_edge}, sides rounded up to {self.cell} px; patch "
                f"{self.patch_size}, {self.merge}×{self.merge} merger → one token per {self.cell} px, "
                "[IMG_BREAK] per row, [IMG_END] last")


class Mistral3Adapter(ModelAdapter):
    name = "mistral3"
    model_types = ("mistral3",)
    model_class = "Mistral3ForConditionalGeneration"
    example = "mistralai/Mistral-Small-3.1-24B-Instruct-2503"
    title = "Mistral 3"
    plan_mode = False
    checkpoints = (Checkpoint("mistralai/Mistral-Small-3.1-24B-Instruct-2503", "24B"),
                   Checkpoint("mistralai/Mistral-Small-3.2-24B-Instruct-2506", "24B"))

    def read_geometry(self, config: Any, image_processor: Any) -> Mistral3Geometry:
        vision = config.vision_config
        size = image_processor.size
        edge = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
        if not edge:
            raise ModelError("the checkpoint's image processor has no size['longest_edge']; gridvlm reads Mistral 3 "
                             "views by their longest edge")
        return Mistral3Geometry(
            longest_edge=int(edge), patch_size=int(vision.patch_size), merge=int(config.spatial_merge_size),
            feature_layer=config.vision_feature_layer,
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
        )

    def load_processor(self, source: str, **kwargs: Any) -> Any:
        """transformers' PixtralProcessor; without torchvision (its module imports the torchvision image
        processor) the same class with the PIL image processor, from the checkpoint's files."""
        try:
            return super().load_processor(source, **kwargs)
        except (OSError, ValueError, ImportError, AttributeError, TypeError):
            from transformers import AutoImageProcessor, AutoTokenizer

            image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            keep = {"patch_size", "spatial_merge_size", "image_token", "image_break_token", "image_end_token",
                    "chat_template"}
            settings = {k: v for k, v in processor_settings(source, **kwargs).items() if k in keep}
            settings.setdefault("chat_template", tokenizer.chat_template)
            return pixtral_processor_class()(image_processor=image_processor, tokenizer=tokenizer, **settings)

    # ---- the visual sequence

    def token_grid(self, geo: Mistral3Geometry, plan: Plan) -> tuple[int, int]:
        """(rows, cols) of tokens of the one view: the patch merger's grid."""
        w, h = plan.views[0].input_size
        return h // geo.cell, w // geo.cell

    def layout(self, geo: Mistral3Geometry, plan: Plan) -> Layout:
        """Token rows in order, `[IMG_BREAK]` (a newline) after each but the last, which ends with `[IMG_END]`
        (a marker)."""
        rows, cols = self.token_grid(geo, plan)
        lay = LayoutBuilder()
        r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols), indexing="ij")  # (rows − 1, cols)
        if rows > 1:
            lay.rows_with_newlines(0, 0, 0, r, c)
        lay.features(0, 0, 0, rows - 1, np.arange(cols))
        lay.separators(1)
        return lay.build([(rows, cols)], [(float(geo.cell), float(geo.cell))])

    def patch_grids(self, geo: Mistral3Geometry, plan: Plan) -> list[tuple[int, int]]:
        w, h = plan.views[0].input_size
        return [(h // geo.patch_size, w // geo.patch_size)]

    def patch_pixels(self, geo: Mistral3Geometry, plan: Plan) -> list[tuple[float, float]]:
        """The tower sees the view at its input size: a patch is patch_size input pixels."""
        return [(float(geo.patch_size), float(geo.patch_size))]

    def view_pixels(self, vlm: VLM, image: Image.Image, plan: Plan, exact: bool | None = None) -> Any:
        """(1, 3, H, W): the processor's own pixel values of the one view."""
        return self.native_inputs(vlm, image, [])["pixel_values"]

    def native_inputs(self, vlm: VLM, image: Image.Image, input_ids: Any) -> dict[str, Any]:
        """As PixtralProcessor calls the image processor: patch_size · spatial_merge_size rounding."""
        import torch

        cell = vlm.geometry.cell
        outputs = vlm.processor.image_processor(images=image, patch_size={"height": cell, "width": cell},
                                                return_tensors="pt")
        ids = torch.as_tensor(list(input_ids), device=vlm.device, dtype=torch.long).reshape(1, -1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "pixel_values": outputs["pixel_values"].to(vlm.device, vlm.model.dtype),
                "image_sizes": torch.as_tensor(outputs["image_sizes"], device=vlm.device)}

    # ---- attention modules

    def vision_layers(self, model: Any) -> Any:
        """PixtralTransformer's layers; each has `attention` (not `self_attn`)."""
        return self.vision_tower(model).transformer.layers

    def vision_heads(self, model: Any) -> int:
        return int(self.vision_layers(model)[0].attention.num_heads)

    def feature_attention_layer(self, geo: Mistral3Geometry, num_layers: int) -> int:
        from ...attention.capture import feature_attention_layer

        return feature_attention_layer(geo.feature_layer, num_layers)

    def vision_attention(self, vlm: VLM, image: Image.Image, plan: Plan, layers: Any, heads: str | int) -> Any:
        """The mean attention each patch receives from the patches of its own image (the tower's block-diagonal
        mask), per chosen layer then averaged: a list of one (rows, cols) map on the view's patch grid."""
        import torch

        from ...attention.capture import _check_heads, _reduce_heads, resolve_layers
        from ...attention.errors import AttentionError

        encoder = self.vision_layers(vlm.model)
        if layers is None:
            layers = [self.feature_attention_layer(vlm.geometry, len(encoder))]
        chosen = resolve_layers(layers, len(encoder))
        heads = _check_heads(heads, self.vision_heads(vlm.model))
        rotary = sys.modules[type(encoder[0].attention).__module__].apply_rotary_pos_emb
        store: dict[int, Any] = {}

        def hook_for(layer: int):
            def hook(module, args, kwargs):
                hidden = kwargs.get("hidden_states", args[0] if args else None)  # (1, N, D)
                n, h, d = hidden.shape[1], module.num_heads, module.head_dim
                q = module.q_proj(hidden).view(1, n, h, d).transpose(1, 2)  # (1, H, N, d)
                k = module.k_proj(hidden).view(1, n, h, d).transpose(1, 2)
                cos, sin = kwargs["position_embeddings"]
                q, k = rotary(q, k, cos, sin, unsqueeze_dim=0)
                scores = (q @ k.transpose(-1, -2)) * module.scaling  # (1, H, N, N)
                mask = kwargs.get("attention_mask")
                if mask is not None:
                    scores = scores + mask  # block-diagonal: -inf-like outside each image's block
                w = torch.softmax(scores, dim=-1, dtype=torch.float32)[0]  # (H, N, N)
                store[layer] = _reduce_heads(w.mean(dim=1), heads).float().cpu()  # (N,)
                return None
            return hook

        handles = [encoder[i].attention.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i in chosen]
        try:
            with torch.inference_mode():
                inputs = self.native_inputs(vlm, image, [])
                self.vision_tower(vlm.model)(inputs["pixel_values"], image_sizes=inputs["image_sizes"])
        finally:
            for handle in handles:
                handle.remove()
        (rows, cols), = self.patch_grids(vlm.geometry, plan)
        maps = np.stack([store[i].numpy() for i in chosen]).mean(axis=0)  # (N,)
        if maps.size != rows * cols:
            raise AttentionError(f"the vision tower gives {maps.size} patches, not the {rows}×{cols} the "
                                 f"{self.name} adapter expects")
        return [maps.reshape(rows, cols)]

    # ---- a tiny checkpoint

    def make_tiny(self, directory: Path, seed: int) -> None:
        """Pixtral 1540/14 tower + 2×2 merger + Mistral, Mistral-Small-3.1's processor settings."""
        from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig
        from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

        from ..tiny import CLIP_MEAN, CLIP_STD, TINY_TEXT, TINY_VISION, save_tiny, tiny_tokenizer

        tokenizer = tiny_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]",
                                    "[IMG_END]"], "<s>", "</s>", "<pad>", "<unk>", {"image_token": "[IMG]"})
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
        config = Mistral3Config(
            vision_config=PixtralVisionConfig(image_size=1540, **TINY_VISION),
            text_config=MistralConfig(**TINY_TEXT, **ids),
            image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
            spatial_merge_size=2,
            vision_feature_layer=-1,
            multimodal_projector_bias=False,
            tie_word_embeddings=False,
        )
        image_processor = PixtralImageProcessorPil(size={"longest_edge": 1540}, patch_size={"height": 14, "width": 14},
                                                   image_mean=CLIP_MEAN, image_std=CLIP_STD)
        processor = pixtral_processor_class()(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                                              spatial_merge_size=2, chat_template=MISTRAL3_TEMPLATE)
        save_tiny(directory, Mistral3ForConditionalGeneration(config), processor, tokenizer)
        name_processor_class(directory / "processor_config.json", "PixtralProcessor")


# Mistral-Small-3.1's prompt shape: "<s>[INST]…[IMG]…[/INST]answer</s>"; user content is a list of parts
_PARTS = ("{% for part in message['content'] %}{% if part['type'] == 'image' %}[IMG]"
          "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}")
MISTRAL3_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST]" + _PARTS
                     + "[/INST]{% elif message['role'] == 'assistant' %}" + _PARTS + "{{ eos_token }}{% endif %}"
                     "{% endfor %}")

_CLASSES: dict[str, type] = {}


def pixtral_processor_class() -> type:
    """transformers' PixtralProcessor, its own code; where torchvision is missing, the module is imported with
    its one torchvision-only import (`get_resize_output_image_size` of the torchvision image processor) taken
    from the PIL image processor module, which defines the same function."""
    if "pixtral" not in _CLASSES:
        name = "transformers.models.pixtral.processing_pixtral"
        try:
            module = importlib.import_module(name)
        except ImportError:
            from transformers.models.pixtral import image_processing_pil_pixtral as pil

            fast = "transformers.models.pixtral.image_processing_pixtral"
            shim = types.ModuleType(fast)
            shim.get_resize_output_image_size = pil.get_resize_output_image_size
            saved = sys.modules.get(fast)
            sys.modules[fast] = shim
            try:
                sys.modules.pop(name, None)
                module = importlib.import_module(name)
            finally:
                if saved is None:
                    sys.modules.pop(fast, None)
                else:
                    sys.modules[fast] = saved
        _CLASSES["pixtral"] = module.PixtralProcessor
    return _CLASSES["pixtral"]


register_adapter(Mistral3Adapter())

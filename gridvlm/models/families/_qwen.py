"""What Qwen2-VL, Qwen2.5-VL and Qwen3-VL share: one native-resolution view cut into flattened patches.

The image processor resizes the image (`smart_resize`: multiples of patch·merge within min/max pixels, the
strategy `qwen2-vl` / `qwen2.5-vl` / `qwen3-vl` computes it), then flattens it into patches of
(3 · temporal_patch_size · p · p) values, the 2×2 patches of each merge window next to each other. The vision
tower embeds them as one packed sequence (`grid_thw` tells it the grid; attention stays inside each image, and in
Qwen2.5-VL inside 112-px windows except in its `fullatt_block_indexes` layers) and the merger turns every 2×2
window into one token. The chat template writes `<|vision_start|><|image_pad|><|vision_end|>`; the processor
expands the one `<|image_pad|>` into one per merged cell, row-major over the (h/(p·m), w/(p·m)) grid of merged
cells — that run is the visual span (the vision start/end markers are template text).

The language model's rotary positions are multimodal (M-RoPE: time, row, column of each image token), computed by
the model from `input_ids`, the token types and `image_grid_thw` (`get_rope_index`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...attention.capture import _check_heads, _Recorder, _reduce_heads, _Stop, _stop_after, resolve_layers
from ...attention.mapping import Layout, LayoutBuilder
from ...geometry import Plan
from ..adapter import ModelAdapter, processor_settings
from ..errors import ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..loading import VLM

# The Qwen-VL chat template's image part, as the hub checkpoints write it; user content is a list of
# {"type": "image"} / {"type": "text"} parts.
_PARTS = ("{% for part in message['content'] %}{% if part['type'] == 'image' %}"
          "<|vision_start|><|image_pad|><|vision_end|>"
          "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}")
QWEN_VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n" + _PARTS + "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
QWEN_NAMED = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}


@dataclass(frozen=True)
class QwenGeometry:
    """The encoder geometry of a Qwen-VL checkpoint, as its vision config and preprocessor config state it."""

    patch_size: int  # vision_config.patch_size: one patch is p × p pixels of the resized image
    merge_size: int  # vision_config.spatial_merge_size: m × m patches → one token
    temporal_patch_size: int  # a still image is repeated into this many frames per patch
    min_pixels: int  # the image processor's size["shortest_edge"]: lower bound of the resized area
    max_pixels: int  # size["longest_edge"]: upper bound of the resized area
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    window_size: int | None = None  # Qwen2.5-VL: attention window side in resized pixels
    full_attention_layers: tuple[int, ...] = ()  # Qwen2.5-VL: fullatt_block_indexes (others use windows)
    deepstack_layers: tuple[int, ...] = ()  # Qwen3-VL: vision layers whose features are added to early LLM layers

    @property
    def cell(self) -> int:
        """Side of one merged cell (one token) in resized pixels: patch · merge."""
        return self.patch_size * self.merge_size

    def plan_params(self) -> dict[str, Any]:
        params = {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels, "patch_size": self.patch_size,
                  "merge_size": self.merge_size}
        if self.window_size is not None:
            params["window_size"] = self.window_size
        return params

    def describe(self) -> str:
        c = self.cell
        m = self.merge_size
        text = (f"native resolution: resized to multiples of {c} px within {self.min_pixels:,}…"
                f"{self.max_pixels:,} pixels, patch {self.patch_size}, {m}×{m} merge → one token per {c}×{c}")
        if self.window_size:
            text += (f"; encoder attention in {self.window_size}-px windows but layers "
                     f"{list(self.full_attention_layers)}")
        if self.deepstack_layers:
            text += (f"; deepstack: features of vision layers {list(self.deepstack_layers)} are added to the "
                     f"first {len(self.deepstack_layers)} LLM layers at the same image positions")
        return text


def _size_bounds(image_processor: Any) -> tuple[int, int]:
    size = image_processor.size
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    lo, hi = get("shortest_edge"), get("longest_edge")
    if not lo or not hi:
        raise ModelError(f"the checkpoint's image processor has size {dict(size) if isinstance(size, dict) else size}"
                         "; a Qwen-VL processor bounds the pixels with shortest_edge and longest_edge")
    return int(lo), int(hi)


class QwenVLAdapter(ModelAdapter):
    """Qwen-VL families: `model.model.{visual, language_model}`, the visual span one `<|image_pad|>` per cell."""

    plan_mode = False
    processor_class: ClassVar[str]  # transformers' processor class of the family

    # ---- geometry

    def read_geometry(self, config: Any, image_processor: Any) -> QwenGeometry:
        vision = config.vision_config
        lo, hi = _size_bounds(image_processor)
        geometry = QwenGeometry(
            patch_size=int(vision.patch_size), merge_size=int(vision.spatial_merge_size),
            temporal_patch_size=int(vision.temporal_patch_size), min_pixels=lo, max_pixels=hi,
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
            **self.extra_geometry(vision))
        for name, mine in (("patch_size", geometry.patch_size), ("merge_size", geometry.merge_size),
                           ("temporal_patch_size", geometry.temporal_patch_size)):
            theirs = getattr(image_processor, name, None)
            if theirs is not None and int(theirs) != mine:
                raise ModelError(f"the checkpoint's image processor has {name} {theirs} but its vision tower "
                                 f"{mine}; its config and preprocessor config disagree")
        return geometry

    def extra_geometry(self, vision: Any) -> dict[str, Any]:
        """Family-specific geometry fields read from the vision config."""
        return {}

    # ---- processor

    def load_processor(self, source: str, **kwargs: Any) -> Any:
        """transformers' Qwen-VL processors also build a video processor, which needs torchvision; without it,
        the same processor class for images only (its own prompt expansion), from the checkpoint's files."""
        try:
            return super().load_processor(source, **kwargs)
        except (OSError, ValueError, ImportError, AttributeError, TypeError):
            from transformers import AutoImageProcessor, AutoTokenizer

            image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            template = processor_settings(source, **kwargs).get("chat_template") or tokenizer.chat_template
            return image_only_processor(self.processor_class)(image_processor=image_processor, tokenizer=tokenizer,
                                                              chat_template=template)

    # ---- the visual sequence

    def _check_plan(self, geo: QwenGeometry, plan: Plan) -> tuple[int, int]:
        """(rows, cols) of merged cells of the plan's one view; ModelError for a plan the model cannot see."""
        if plan.strategy != self.name or plan.num_views != 1:
            raise ModelError(f"{self.name} models see only their own slicing (one native-resolution view); "
                             f"gridvlm cannot feed them a '{plan.strategy}' plan")
        w, h = plan.views[0].input_size
        c = geo.cell
        if w % c or h % c:
            raise ModelError(f"a {w}×{h} view is not a multiple of {self.name}'s {c}-px cell")
        return h // c, w // c

    def layout(self, geo: QwenGeometry, plan: Plan) -> Layout:
        """One token per merged cell, row-major: the order the merger emits them (Qwen2.5-VL's window attention
        reorders the tokens inside the tower and puts them back before the merger's output leaves it)."""
        rows, cols = self._check_plan(geo, plan)
        lay = LayoutBuilder()
        cells = np.arange(rows * cols)
        lay.features(0, 0, 0, cells // cols, cells % cols)
        return lay.build([(rows, cols)], [(float(geo.cell), float(geo.cell))])

    def patch_grids(self, geo: QwenGeometry, plan: Plan) -> list[tuple[int, int]]:
        rows, cols = self._check_plan(geo, plan)
        return [(rows * geo.merge_size, cols * geo.merge_size)]

    def patch_pixels(self, geo: QwenGeometry, plan: Plan) -> list[tuple[float, float]]:
        """A patch is p × p pixels of the resized image, which is the view's input (no further resize)."""
        return [(float(geo.patch_size), float(geo.patch_size))]

    def view_pixels(self, vlm: VLM, image: Image.Image, plan: Plan, exact: bool | None = None) -> torch.Tensor:
        """The processor's flattened patches (patches, 3 · temporal_patch_size · p · p), merge-window order."""
        return self.tower_inputs(vlm, image, plan)[0]

    def tower_inputs(self, vlm: VLM, image: Image.Image, plan: Plan) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values, image_grid_thw) of the model's own processor, on the model's device and dtype."""
        self._check_plan(vlm.geometry, plan)
        if not vlm.is_native(plan):
            raise ModelError(f"{self.name} models see only their own slicing of this image")
        out = vlm.processor.image_processor(images=image, return_tensors="pt")
        return out["pixel_values"].to(vlm.device, vlm.model.dtype), out["image_grid_thw"].to(vlm.device)

    # ---- native inputs: token types and multimodal rotary positions

    def native_inputs(self, vlm: VLM, image: Image.Image, input_ids: Any) -> dict[str, Any]:
        """The processor's image outputs, the token types it writes (`mm_token_type_ids`, which M-RoPE needs) and
        the model's own 3-D rotary positions (`get_rope_index`, passed in so that the pass does not store them on
        the shared model)."""
        import torch

        inputs = super().native_inputs(vlm, image, input_ids)
        types = vlm.processor.create_mm_token_type_ids([inputs["input_ids"][0].tolist()])
        inputs["mm_token_type_ids"] = torch.as_tensor(types, device=vlm.device)
        with torch.inference_mode():
            positions, _ = vlm.model.model.get_rope_index(
                inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                image_grid_thw=inputs["image_grid_thw"], attention_mask=inputs["attention_mask"])
        inputs["position_ids"] = positions  # (3, 1, S): time, row, column
        return inputs

    # ---- attention modules

    def vision_tower(self, model: Any) -> Any:
        return model.model.visual

    def vision_layers(self, model: Any) -> Any:
        """The tower's blocks; each has `attn` (fused qkv, 2-D rotary)."""
        return self.vision_tower(model).blocks

    def vision_heads(self, model: Any) -> int:
        return int(self.vision_layers(model)[0].attn.num_heads)

    def sequence_patches(self, vlm: VLM, grid_thw: torch.Tensor) -> np.ndarray:
        """(patches,) for each position of the tower's sequence, the patch it holds as a row-major index on the
        (h/p, w/p) patch grid: the processor flattens merge window by merge window."""
        _, gh, gw = (int(v) for v in grid_thw[0])
        m = vlm.geometry.merge_size
        i = np.arange(gh * gw)
        window, inside = np.divmod(i, m * m)
        wr, wc = np.divmod(window, gw // m)
        r, c = np.divmod(inside, m)
        return (wr * m + r) * gw + wc * m + c

    def vision_attention(self, vlm: VLM, image: Image.Image, plan: Plan, layers: Any, heads: str | int) -> Any:
        """(1, h/p, w/p): the mean attention each patch receives from the patches of its attention block (the
        image, or its window in Qwen2.5-VL's windowed layers), from each block's own q/k and rotary embedding;
        several layers are averaged."""
        import torch

        blocks = self.vision_layers(vlm.model)
        if layers is None:
            layers = [self.feature_attention_layer(vlm.geometry, len(blocks))]
        rec = PackedVisionAttentionRecorder([b.attn for b in blocks], resolve_layers(layers, len(blocks)), heads)
        pixels, grid = self.tower_inputs(vlm, image, plan)
        stop = _stop_after(blocks[rec.layers[-1]])
        try:
            with rec, torch.inference_mode():
                try:
                    self.vision_tower(vlm.model)(pixels, grid_thw=grid)
                except _Stop:
                    pass
        finally:
            stop.remove()
        received = rec.result.mean(axis=0)  # (patches,) in the tower's sequence order
        (rows, cols), = self.patch_grids(vlm.geometry, plan)
        out = np.zeros(rows * cols, dtype=np.float32)
        out[self.sequence_patches(vlm, grid)] = received
        return out.reshape(1, rows, cols)

    def vision_attention_notes(self, geometry: QwenGeometry, layers: Any) -> tuple[str, ...]:
        return ("mean attention each patch receives from the other patches of the image",)


# ---------------------------------------------------------------------------------------------------------------
# Vision attention of packed towers


class PackedVisionAttentionRecorder(_Recorder):
    """Per chosen block of a packed Qwen-style tower: the mean attention each position receives within its
    attention block (`cu_seqlens`: per image, or per window), heads reduced. `result`: float32 (layers, N), N the
    tower's sequence positions in its own order."""

    def __init__(self, modules: Any, layer_ids: list[int], heads: str | int):
        super().__init__(modules, layer_ids)
        self.heads = _check_heads(heads, modules[0].num_heads)

    def _record(self, module, args, kwargs):
        import torch

        hidden = kwargs.get("hidden_states", args[0] if args else None)  # (N, D), after the block's norm
        cu = kwargs["cu_seqlens"].tolist()
        cos, sin = kwargs["position_embeddings"]  # (N, d)
        n, heads = hidden.shape[0], module.num_heads
        q, k, _ = module.qkv(hidden).reshape(n, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)  # (N, H, d) each
        rotary = getattr(sys.modules[type(module).__module__], "apply_rotary_pos_emb_vision")
        q, k = rotary(q, k, cos, sin)
        q, k = q.transpose(0, 1), k.transpose(0, 1)  # (H, N, d)
        out = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        for start, end in zip(cu[:-1], cu[1:]):  # one attention block at a time
            size = end - start
            received = torch.zeros(heads, size, dtype=torch.float32, device=hidden.device)
            step = max(1, 2 ** 24 // (heads * size))  # query rows per chunk: at most 16M scores at once
            for r0 in range(start, end, step):
                r1 = min(end, r0 + step)
                scores = (q[:, r0:r1] @ k[:, start:end].transpose(1, 2)) * module.scaling  # (H, rows, size)
                received += torch.softmax(scores, dim=-1, dtype=torch.float32).sum(dim=1)
            out[start:end] = _reduce_heads(received / size, self.heads)  # (size,): mean over the block's queries
        return out


# ---------------------------------------------------------------------------------------------------------------
# Image-only processors

_CLASSES: dict[str, type] = {}


def image_only_processor(class_name: str) -> type:
    """transformers' Qwen-VL processor `class_name` for images only: its own token setup, prompt expansion
    (`replace_image_token`: grid_thw.prod() // merge² image pads) and token types, without the video processor
    that cannot be built without torchvision (its sub-processors are read from __init__'s signature)."""
    if class_name not in _CLASSES:
        import transformers

        base = getattr(transformers, class_name)

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            base.__init__(self, image_processor, tokenizer, chat_template=chat_template)

        _CLASSES[class_name] = type(f"{class_name}ImagesOnly", (base,), {"__init__": __init__})
    return _CLASSES[class_name]


def make_tiny_qwen(directory: Any, processor_class: str, config: Any, model_class: str, image_processor: Any,
                   tokenizer: Any) -> None:
    """Save a tiny Qwen-VL checkpoint: the model, the images-only processor, named as the hub names it."""
    import transformers

    from ..adapter import name_processor_class
    from ..tiny import save_tiny

    processor = image_only_processor(processor_class)(image_processor=image_processor, tokenizer=tokenizer,
                                                      chat_template=QWEN_VL_TEMPLATE)
    save_tiny(directory, getattr(transformers, model_class)(config), processor, tokenizer)
    name_processor_class(directory / "processor_config.json", processor_class)


def qwen_tokenizer():
    """The tiny byte-level BPE with Qwen-VL's special tokens (image pad, video pad, vision start/end)."""
    from ..tiny import tiny_tokenizer

    return tiny_tokenizer(QWEN_SPECIALS, None, "<|im_end|>", "<|endoftext|>", None, dict(QWEN_NAMED))


def token_ids(tokenizer) -> dict[str, int]:
    """The special-token ids a Qwen-VL config names."""
    return {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
            (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
             ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}

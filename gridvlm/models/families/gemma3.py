"""Gemma 3 (Gemma3ForConditionalGeneration): SigLIP at 896 px, patch 14 → 64×64 patches, average-pooled 4×4 into
16×16 = 256 soft tokens per view; optional Pan & Scan crops, each its own 256-token view after the whole image.

The visual positions. The chat template writes `<start_of_image>` (boi); `Gemma3Processor` replaces it with
``"\\n\\n<start_of_image>" + "<image_soft_token>" × 256 + "<end_of_image>\\n\\n"`` per view (with Pan & Scan:
"Here is the original image {block} and here are some crops to help you see better {block} {block} …"). The
"\\n\\n" and the Pan & Scan sentences are plain text, tokenised together with their neighbours: "user\\n" +
"\\n\\n" becomes one "\\n\\n\\n" token in Gemma's own tokenizer, so where they start depends on the prompt, not on
the image. The visual positions are therefore each view's block from `<start_of_image>` to `<end_of_image>`
inclusive — special tokens, never merged — found in the processor's ids (`native_positions`): boi (a marker),
the view's 16×16 soft tokens row by row, eoi (a marker). The text between blocks is ordinary prompt text.

The language model: sliding-window and full-attention layers (each with its own rotary base), q/k RMS norms,
grouped KV heads, scores scaled by query_pre_attn_scalar^-½, and bidirectional attention among the soft tokens
of one image block — the forward reads that from `token_type_ids` (1 on soft tokens), which `native_inputs`
rebuilds for a finished reply.

Re-read from transformers 5.23: models/gemma3 processing_gemma3.py (`full_image_sequence`,
`replace_image_token`), image_processing_pil_gemma3.py (`pan_and_scan`, `_preprocess`), modeling_gemma3.py
(`Gemma3MultiModalProjector`, `Gemma3Attention`, `create_masks_for_vision_model`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...attention.mapping import Layout, LayoutBuilder
from ...geometry import Plan
from ..adapter import Checkpoint, ModelAdapter, name_processor_class, register_adapter
from ..errors import ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..loading import VLM

# The processor's Pan & Scan defaults (Gemma3Processor.images_kwargs): the checkpoints leave them null
PAN_AND_SCAN_DEFAULTS = {"pan_and_scan_min_crop_size": 256, "pan_and_scan_max_num_crops": 4,
                         "pan_and_scan_min_ratio_to_activate": 1.2}


@dataclass(frozen=True)
class Gemma3Geometry:
    """The encoder geometry of a Gemma 3 checkpoint, as its config and image processor state it."""

    image_size: int  # vision_config.image_size: every view (whole image, crops) is squashed to this square
    patch_size: int  # vision_config.patch_size, pixels
    tokens_per_view: int  # mm_tokens_per_image: soft tokens per view after the average pool (a square)
    pan_and_scan: bool  # do_pan_and_scan of the image processor (null in the hub checkpoints: off)
    min_crop: int  # pan_and_scan_min_crop_size, pixels
    max_crops: int  # pan_and_scan_max_num_crops
    min_ratio: float  # pan_and_scan_min_ratio_to_activate: long/short side ratio from which it crops
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def patches_side(self) -> int:
        """Patches per side of a view (64 at 896/14)."""
        return self.image_size // self.patch_size

    @property
    def tokens_side(self) -> int:
        """Soft tokens per side of a view (16)."""
        return math.isqrt(self.tokens_per_view)

    @property
    def pool(self) -> int:
        """k of the k × k average pool (4): patches per soft token along each side."""
        return self.patches_side // self.tokens_side

    def plan_params(self) -> dict[str, Any]:
        return {"pan_and_scan": self.pan_and_scan, "image_size": self.image_size,
                "tokens_per_view": self.tokens_per_view, "pan_and_scan_min_crop_size": self.min_crop,
                "pan_and_scan_max_num_crops": self.max_crops,
                "pan_and_scan_min_ratio_to_activate": self.min_ratio}

    def describe(self) -> str:
        g, k = self.tokens_side, self.pool
        crops = (f", Pan & Scan up to {self.max_crops} crops from long/short ≥ {self.min_ratio:g}"
                 if self.pan_and_scan else ", Pan & Scan off")
        return (f"{self.image_size}-px squashed views, patch {self.patch_size}, {k}×{k} average pool → "
                f"{g}×{g} = {self.tokens_per_view} tokens per view{crops}")


class Gemma3Adapter(ModelAdapter):
    name = "gemma3"
    model_types = ("gemma3",)
    model_class = "Gemma3ForConditionalGeneration"
    example = "google/gemma-3-4b-it"
    title = "Gemma 3"
    plan_mode = False
    checkpoints = (Checkpoint("google/gemma-3-4b-it", "4B"), Checkpoint("google/gemma-3-12b-it", "12B"),
                   Checkpoint("google/gemma-3-27b-it", "27B"))

    def read_geometry(self, config: Any, image_processor: Any) -> Gemma3Geometry:
        vision = config.vision_config

        def setting(name: str) -> Any:  # null in the checkpoints' preprocessor_config.json: the processor default
            value = getattr(image_processor, name, None)
            return PAN_AND_SCAN_DEFAULTS[name] if value is None else value

        geo = Gemma3Geometry(
            image_size=int(vision.image_size), patch_size=int(vision.patch_size),
            tokens_per_view=int(config.mm_tokens_per_image),
            pan_and_scan=bool(getattr(image_processor, "do_pan_and_scan", None)),
            min_crop=int(setting("pan_and_scan_min_crop_size")), max_crops=int(setting("pan_and_scan_max_num_crops")),
            min_ratio=float(setting("pan_and_scan_min_ratio_to_activate")),
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
        )
        size = getattr(image_processor, "size", None) or {}
        side = (size.get("height"), size.get("width")) if isinstance(size, dict) else (getattr(size, "height", None),
                                                                                       getattr(size, "width", None))
        if side != (geo.image_size, geo.image_size):
            raise ModelError(f"the checkpoint's processor resizes images to {side[1]}×{side[0]} but its vision tower "
                             f"takes {geo.image_size}×{geo.image_size}; its config and processor config disagree")
        g = geo.tokens_side
        if g * g != geo.tokens_per_view or g * geo.pool != geo.patches_side:
            raise ModelError(f"mm_tokens_per_image {geo.tokens_per_view} is not a square that pools the "
                             f"{geo.patches_side}×{geo.patches_side} patch grid evenly")
        return geo

    # ---- the visual sequence

    def layout(self, geo: Gemma3Geometry, plan: Plan) -> Layout:
        """Per view, in the model's order (the whole image, then the crops row-major): boi, the view's g × g
        soft tokens row by row, eoi."""
        g = geo.tokens_side
        cells = np.arange(g * g)
        lay = LayoutBuilder()
        for i, view in enumerate(plan.views):
            lay.separators(1)  # <start_of_image>
            row, col = (-1, -1) if view.is_thumbnail else (view.row, view.col)
            lay.features(i, row, col, cells // g, cells % g)
            lay.separators(1)  # <end_of_image>
        k = geo.pool
        return lay.build([(g, g)] * plan.num_views, [(h * k, w * k) for h, w in self.patch_pixels(geo, plan)])

    def patch_grids(self, geo: Gemma3Geometry, plan: Plan) -> list[tuple[int, int]]:
        n = geo.patches_side
        return [(n, n)] * plan.num_views

    def patch_pixels(self, geo: Gemma3Geometry, plan: Plan) -> list[tuple[float, float]]:
        """Each view is squashed to image_size² and cut into patch_size patches (64 × 14 = 896: no pixel is left
        unseen); in a view's input pixels (`Tile.input_size`) one patch is patch_size · side / image_size."""
        s, p = geo.image_size, geo.patch_size
        return [(p * v.input_size[1] / s, p * v.input_size[0] / s) for v in plan.views]

    def processor_kwargs(self, geo: Gemma3Geometry) -> dict[str, Any]:
        """Pan & Scan as the image processor's config sets it: Gemma3Processor's own call defaults
        (do_pan_and_scan False) would override the image processor's setting, so gridvlm passes it."""
        return {"do_pan_and_scan": geo.pan_and_scan, "pan_and_scan_min_crop_size": geo.min_crop,
                "pan_and_scan_max_num_crops": geo.max_crops, "pan_and_scan_min_ratio_to_activate": geo.min_ratio}

    def image_outputs(self, vlm: VLM, image: Image.Image) -> dict[str, Any]:
        """The image processor's outputs for `image` as the processor call makes them: pixel_values
        (views, 3, S, S), whole image first, then the crops; num_crops."""
        return vlm.processor.image_processor(images=image, return_tensors="pt", **self.processor_kwargs(vlm.geometry))

    def view_pixels(self, vlm: VLM, image: Image.Image, plan: Plan, exact: bool | None = None) -> torch.Tensor:
        """(views, 3, S, S): the checkpoint's image processor's pixel_values, whole image first, then the crops."""
        if not vlm.is_native(plan):
            raise ModelError(f"{self.name} models see only their own slicing; gridvlm cannot feed them another plan")
        pixels = self.image_outputs(vlm, image)["pixel_values"]
        if pixels.shape[0] != plan.num_views:
            raise ModelError(f"the processor made {pixels.shape[0]} views of this image where gridvlm's plan has "
                             f"{plan.num_views}; gridvlm cannot say which view is which for this checkpoint")
        return pixels.to(vlm.device, vlm.model.dtype)

    # ---- native mode

    def placeholder_token_id(self, vlm: VLM) -> int:
        return int(vlm.model.config.boi_token_id)

    def native_positions(self, vlm: VLM, prompt: str, expanded_ids: Sequence[int], plan: Plan) -> tuple[int, ...]:
        """Each view's `<start_of_image>` … `<end_of_image>` block in the processor's ids, in order (see the
        module docstring for why the "\\n\\n" text around the blocks is not part of them)."""
        config = vlm.model.config
        boi, eoi, soft = int(config.boi_token_id), int(config.eoi_token_id), vlm.image_token_id
        if vlm.tokenizer(prompt)["input_ids"].count(boi) != 1:
            raise ModelError(f"the chat template of {vlm.model_id!r} must write one <start_of_image> for the image")
        ids = np.asarray(list(expanded_ids))
        starts = np.flatnonzero(ids == boi)
        n = vlm.geometry.tokens_per_view
        block = np.array([boi, *[soft] * n, eoi])
        if (len(starts) != plan.num_views or (ids == soft).sum() != n * plan.num_views
                or any(not np.array_equal(ids[s:s + n + 2], block) for s in starts)):
            raise ModelError(f"{self.name}: the processor wrote {len(starts)} image blocks where gridvlm's plan has "
                             f"{plan.num_views} views of {n} tokens; gridvlm cannot say which position shows which "
                             "pixels for this checkpoint")
        return tuple(int(s) + j for s in starts for j in range(n + 2))

    def expanded_prompt(self, vlm: VLM, prompt: str, plan: Plan) -> str:
        """The text the processor tokenises: the template's `<start_of_image>` replaced by its expansion."""
        crops = len(plan.tiles) if plan.thumbnail is not None else 0
        expansion = vlm.processor.replace_image_token({"num_crops": [crops]}, 0)
        return prompt.replace(vlm.processor.boi_token, expansion, 1)

    def native_prompt_tokens(self, vlm: VLM, prompt: str, plan: Plan) -> int:
        """Prompt tokens of a native turn, counted without the image: the expanded text's tokens."""
        return len(vlm.tokenizer(self.expanded_prompt(vlm, prompt, plan))["input_ids"])

    def native_inputs(self, vlm: VLM, image: Image.Image, input_ids: Sequence[int]) -> dict[str, Any]:
        """input_ids, an all-ones attention mask, pixel_values of every view, and `token_type_ids` (1 on soft
        tokens, as the processor's mm_token_type_ids) from which the forward makes each image block bidirectional."""
        import torch

        ids = torch.as_tensor(list(input_ids), device=vlm.device).reshape(1, -1)
        pixels = self.image_outputs(vlm, image)["pixel_values"].to(vlm.device, vlm.model.dtype)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels,
                "token_type_ids": (ids == vlm.image_token_id).long()}

    # ---- a tiny checkpoint

    def make_tiny(self, directory: Path, seed: int) -> None:
        """SigLIP 896/14 (no head) + Gemma 3 text (a sliding-window and a full-attention layer; the window of 128
        is shorter than a one-image prompt), 256 tokens per view, Gemma's special tokens and chat template."""
        import torch
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig, \
            SiglipVisionConfig
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

        from ..tiny import SIGLIP_MEAN, SIGLIP_STD, TINY_TEXT, TINY_VISION, save_tiny, tiny_tokenizer

        tokenizer = tiny_tokenizer(
            ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
             "<end_of_image>", "<image_soft_token>"], "<bos>", "<eos>", "<pad>", "<unk>",
            {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"})
        # Gemma's vocabulary has tokens for runs of newlines: "user\n" + the expansion's "\n\n" tokenise as one
        # "\n\n\n", as in the real checkpoints (the reason for `native_positions`)
        tokenizer.add_tokens(["\n" * k for k in range(2, 6)])
        token = tokenizer.convert_tokens_to_ids
        text = Gemma3TextConfig(**{**TINY_TEXT, "num_hidden_layers": 2}, head_dim=16, query_pre_attn_scalar=16,
                                sliding_window=128, layer_types=["sliding_attention", "full_attention"],
                                bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=[tokenizer.eos_token_id, token("<end_of_turn>")])
        config = Gemma3Config(
            text_config=text,
            vision_config=SiglipVisionConfig(image_size=896, vision_use_head=False, **TINY_VISION),
            mm_tokens_per_image=256, boi_token_index=token("<start_of_image>"),
            eoi_token_index=token("<end_of_image>"), image_token_index=token("<image_soft_token>"),
            tie_word_embeddings=False)
        image_processor = Gemma3ImageProcessorPil(size={"height": 896, "width": 896}, image_mean=SIGLIP_MEAN,
                                                  image_std=SIGLIP_STD)
        processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=256,
                                    chat_template=GEMMA3_TEMPLATE)
        model = Gemma3ForConditionalGeneration(config)
        with torch.no_grad():  # transformers initialises the projection to zeros: every image would read as 0
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.2)
        save_tiny(directory, model, processor, tokenizer)
        name_processor_class(directory / "processor_config.json", "Gemma3Processor")


# google/gemma-3-4b-it's chat template (system turn folded into the first user turn; "assistant" is "model";
# text parts trimmed), written out here because the tiny checkpoint is built offline
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


register_adapter(Gemma3Adapter())

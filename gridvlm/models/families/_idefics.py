"""What Idefics3 and SmolVLM share: longest-edge resize, whole tiles + a global view last, pixel shuffle, markers.

The image processor resizes the longest edge to `size.longest_edge`, rounds both sides up to whole tiles
(`max_image_size.longest_edge`), cuts the tiles row by row and appends the resized image squashed to one tile
(the global view); an image that rounds to one tile is one view (`gridvlm.plan(..., "idefics3")` follows
that real path, not `get_number_of_image_patches`, which differs when longest_edge is not a multiple of the
tile). The processor writes, in place of the prompt's one `<image>`:

    for each tile row r:  for each tile c: <fake_token_around_image> <row_r_col_c> <image>×N   then "\\n"
    "\\n" <fake_token_around_image> <global-img> <image>×N <fake_token_around_image>

(one view: only the last line, without the leading "\\n"). Each view: (t/p)² patches of p px, pixel shuffle
by `scale_factor` → N = ((t/p)/s)² features, row by row, each s·p px of the view. How many tokens the
tokenizer makes of a marker or of "\\n\\n" (real tokenizers merge it into one) is read from the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...attention.mapping import Layout, LayoutBuilder
from ...geometry import Plan
from ..adapter import ModelAdapter
from ..errors import ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..loading import VLM

ROW_COL_TOKENS = tuple(f"<row_{r + 1}_col_{c + 1}>" for r in range(6) for c in range(6))  # the processor's markers


@dataclass(frozen=True)
class IdeficsGeometry:
    """The encoder geometry of an Idefics3 / SmolVLM checkpoint, and how its tokenizer splits the markers."""

    tile_size: int  # vision_config.image_size = max_image_size.longest_edge, pixels
    patch_size: int  # vision_config.patch_size, pixels
    scale_factor: int  # pixel shuffle: scale_factor × scale_factor patches per feature
    longest_edge: int  # size.longest_edge: the image's longest side is resized to this
    do_image_splitting: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tile_marker_tokens: int = 1  # tokens of one <row_r_col_c>
    global_marker_tokens: int = 1  # tokens of <global-img>
    row_break_tokens: int = 1  # tokens of the "\n" after a tile row
    global_break_tokens: int = 1  # tokens of the "\n\n" ending the last tile row before the global view

    @property
    def patches_side(self) -> int:
        return self.tile_size // self.patch_size

    @property
    def features_side(self) -> int:
        return self.patches_side // self.scale_factor

    def plan_params(self) -> dict[str, Any]:
        return {"longest_edge": self.longest_edge, "tile_size": self.tile_size,
                "tokens_per_tile": self.features_side ** 2, "do_image_splitting": self.do_image_splitting}

    def describe(self) -> str:
        g = self.features_side
        return (f"longest edge {self.longest_edge}, {self.tile_size}-px tiles + global view last, patch "
                f"{self.patch_size}, pixel shuffle {self.scale_factor}×{self.scale_factor} → {g}×{g} features "
                "per view")


class IdeficsAdapter(ModelAdapter):
    """Idefics3-style models: `model.model.{vision_model, connector, text_model}`."""

    plan_mode = False

    def read_geometry(self, config: Any, image_processor: Any) -> IdeficsGeometry:
        vision = config.vision_config
        tile, patch, scale = int(vision.image_size), int(vision.patch_size), int(config.scale_factor)
        if (tile // patch) % scale:
            raise ModelError(f"a {tile}-px tower with {patch}-px patches gives {tile // patch} patches per side, "
                             f"which pixel shuffle by {scale} cannot merge")
        processed = int(_longest(image_processor.max_image_size))
        if processed != tile:
            raise ModelError(f"the checkpoint's processor makes {processed}-px tiles but its vision tower takes "
                             f"{tile} px; its config and processor config disagree")
        return IdeficsGeometry(
            tile_size=tile, patch_size=patch, scale_factor=scale, longest_edge=int(_longest(image_processor.size)),
            do_image_splitting=bool(image_processor.do_image_splitting),
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
        )

    def processor_geometry(self, config: Any, processor: Any) -> IdeficsGeometry:
        from dataclasses import replace

        geo = self.read_geometry(config, processor.image_processor)
        per_tile = int(getattr(processor, "image_seq_len", geo.features_side ** 2))
        if per_tile != geo.features_side ** 2:
            raise ModelError(f"the processor writes {per_tile} image tokens per view but the tower gives "
                             f"{geo.features_side}² = {geo.features_side ** 2} features")
        tok = processor.tokenizer

        def count(text: str) -> int:
            return len(tok(text, add_special_tokens=False)["input_ids"])

        markers = {count(m) for m in ROW_COL_TOKENS}
        if len(markers) != 1:
            raise ModelError("the tokenizer splits the <row_r_col_c> markers into different numbers of tokens; "
                             "gridvlm cannot lay out this checkpoint's visual sequence")
        return replace(geo, tile_marker_tokens=markers.pop(), global_marker_tokens=count("<global-img>"),
                       row_break_tokens=count("\n"), global_break_tokens=count("\n\n"))

    # ---- the visual sequence

    def layout(self, geo: IdeficsGeometry, plan: Plan) -> Layout:
        g = geo.features_side
        cells = np.arange(g * g)
        lay = LayoutBuilder()
        views = plan.views
        thumb = [i for i, v in enumerate(views) if v.is_thumbnail]
        if thumb:
            rows, cols = plan.grid
            for r in range(rows):
                for c in range(cols):
                    i = next(k for k, v in enumerate(views) if (v.row, v.col) == (r, c) and not v.is_thumbnail)
                    lay.separators(1 + geo.tile_marker_tokens)  # <fake_token_around_image> <row_r_col_c>
                    lay.features(i, r, c, cells // g, cells % g)
                lay.newline(r, g - 1)  # the "\n" ending tile row r (the last one merged into "\n\n")
                extra = (geo.global_break_tokens if r == rows - 1 else geo.row_break_tokens) - 1
                if extra > 0:
                    lay.separators(extra)
            global_view, row, col = thumb[0], -1, -1
        else:
            global_view, row, col = 0, views[0].row, views[0].col
        lay.separators(1 + geo.global_marker_tokens)  # <fake_token_around_image> <global-img>
        lay.features(global_view, row, col, cells // g, cells % g)
        lay.separators(1)  # <fake_token_around_image>
        return lay.build([(g, g)] * plan.num_views, self.cell_pixels(geo, plan))

    def cell_pixels(self, geo: IdeficsGeometry, plan: Plan) -> list[tuple[float, float]]:
        """One feature = scale × scale patches (a 384-px view with 14-px patches: 9 cells of 42 px, 0–378)."""
        s = geo.scale_factor
        return [(h * s, w * s) for h, w in self.patch_pixels(geo, plan)]

    def patch_grids(self, geo: IdeficsGeometry, plan: Plan) -> list[tuple[int, int]]:
        n = geo.patches_side
        return [(n, n)] * plan.num_views

    def patch_pixels(self, geo: IdeficsGeometry, plan: Plan) -> list[tuple[float, float]]:
        t, p = geo.tile_size, geo.patch_size
        return [(p * v.input_size[1] / t, p * v.input_size[0] / t) for v in plan.views]

    def view_pixels(self, vlm: VLM, image: Image.Image, plan: Plan, exact: bool | None = None) -> torch.Tensor:
        """The processor's own views (views, 3, t, t) of the model's plan, on the model's device and dtype (every
        view is a whole tile, so `pixel_attention_mask` masks nothing)."""
        if not vlm.is_native(plan):
            raise ModelError(f"{self.name} models see only their own slicing; this plan is not it")
        return self.native_inputs(vlm, image, [])["pixel_values"][0]

    # ---- where the modules are

    def language_model(self, model: Any) -> Any:
        return model.model.text_model

    def text_layers(self, model: Any) -> Any:
        return model.model.text_model.layers

    def vision_tower(self, model: Any) -> Any:
        return model.model.vision_model

    def vision_layers(self, model: Any) -> Any:
        return model.model.vision_model.encoder.layers

    # ---- a tiny checkpoint

    def tiny_parts(self, processor_class: type, image_seq_len: int, longest_edge: int, tile: int):
        """(tokenizer, image processor, processor) of a tiny checkpoint with the markers as special tokens."""
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
        from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

        from ..tiny import SIGLIP_MEAN, SIGLIP_STD, tiny_tokenizer

        extra = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                 "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}
        tokenizer = tiny_tokenizer(["<|endoftext|>", "<|im_start|>", *extra.values(), *ROW_COL_TOKENS], None,
                                   "<end_of_utterance>", "<|endoftext|>", None, extra)
        image_processor = Idefics3ImageProcessorPil(
            size={"longest_edge": longest_edge}, max_image_size={"longest_edge": tile}, resample=1,
            image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD)  # Lanczos, SigLIP mean/std, as the checkpoints ship
        # transformers' SmolVLM template (HuggingFaceTB/SmolVLM-*-Instruct's): "User:<image>…<end_of_utterance>"
        processor = processor_class(image_processor=image_processor, tokenizer=tokenizer,
                                    image_seq_len=image_seq_len, chat_template=DEFAULT_CHAT_TEMPLATE)
        return tokenizer, image_processor, processor


def _longest(size: Any) -> int:
    value = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
    if value is None:
        raise ModelError(f"the image processor's size {size!r} has no longest_edge; gridvlm reads Idefics3-style "
                         "processors that resize the longest edge")
    return int(value)

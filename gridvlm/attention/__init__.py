"""Where the model looks, in three parts:

- `capture` — torch hooks on the attention modules (a Recorder-style context manager that removes its hooks
  on exit, also on error), `llm_attention` and `vision_attention`;
- `mapping` — pure numpy: a model's visual-sequence `Layout` → one map per view (`ViewMaps`) → a heatmap over
  the original image;
- `records` — a finished reply as the Chat tab keeps it (`ReplyRecord`) and `attention_maps`, from a record
  and the user's choices (rows, layers, heads, source) to `ViewMaps` and the shares of tiles, global view and
  newlines.

Importing this package loads neither torch nor gradio: torch comes with the first capture.
"""

from .capture import (
    HEADS,
    LLMAttentionRecorder,
    VisionAttentionRecorder,
    capture_llm_attention,
    decoder_layers,
    encoder_layers,
    feature_attention_layer,
    llm_attention,
    resolve_layers,
    text_layers,
    vision_attention,
    vision_layers,
    writer_rows,
)
from .errors import AttentionError
from .mapping import (
    FEATURE,
    NEWLINE,
    SEPARATOR,
    Layout,
    LayoutBuilder,
    ViewMaps,
    cell_box,
    heat_size,
    map_to_views,
    padding_mass,
    position_boxes,
    to_image,
    view_label,
    vision_view_maps,
)
from .records import (
    LLM,
    QUESTION,
    SOURCES,
    VISION,
    WHOLE_ANSWER,
    LayerChoice,
    ReplyMaps,
    ReplyRecord,
    attention_maps,
    query_rows,
    rebuild_inputs,
    reply_record,
    run_capture,
)

__all__ = [
    "HEADS", "LLMAttentionRecorder", "VisionAttentionRecorder", "capture_llm_attention", "decoder_layers",
    "encoder_layers", "feature_attention_layer", "llm_attention", "resolve_layers", "text_layers",
    "vision_attention", "vision_layers", "writer_rows", "AttentionError", "FEATURE", "NEWLINE", "SEPARATOR",
    "Layout", "LayoutBuilder", "ViewMaps", "cell_box", "heat_size", "map_to_views", "padding_mass",
    "position_boxes", "to_image", "view_label", "vision_view_maps", "LLM", "QUESTION", "SOURCES", "VISION",
    "WHOLE_ANSWER", "LayerChoice", "ReplyMaps", "ReplyRecord", "attention_maps", "query_rows", "rebuild_inputs",
    "reply_record", "run_capture",
]

"""A finished chat reply as the attention panel keeps it, and the one function from a reply + choices to maps.

`reply_record(vlm, image, plan, sequence_ids, prompt_tokens)` keeps small values only (the token ids, the
plan, how to load the model again, the image source as given): gr.State deep-copies it for every user.
`attention_maps(record, rows, layers, heads, source)` runs the capture that the choices need (one extra
forward pass; `cached` lets a caller keep its result), picks the rows, averages the layers and lays the
result out per view: `ReplyMaps` with the `ViewMaps` and the shares of tiles, global view and newlines.

torch and gridvlm.models are imported only when a record is made or a capture runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..geometry import Plan
from .capture import llm_attention, resolve_layers, text_layers, vision_attention, vision_layers, writer_rows
from .errors import AttentionError
from .mapping import Layout, ViewMaps, map_to_views, vision_view_maps

if TYPE_CHECKING:
    from ..imaging import ImageSource
    from ..models.loading import VLM, ModelKey

WHOLE_ANSWER = "whole answer"  # rows: the mean over the answer tokens' rows
QUESTION = "question (after the image)"  # rows: the mean over the prompt rows after the image
LLM, VISION = SOURCES = ("LLM → image", "vision encoder")

T = TypeVar("T")


@dataclass(frozen=True)
class LayerChoice:
    """What a source offers: its layer count and heads, and the layers shown by default (inclusive)."""

    count: int
    heads: int
    first: int
    last: int


@dataclass(frozen=True, eq=False)
class ReplyRecord:
    """One finished reply: enough to rebuild its inputs and capture its attention later, nothing large."""

    id: str
    model: ModelKey  # how to load the model again (the shared load_vlm cache entry)
    image: ImageSource  # as given: a path is cheaper to copy than a PIL image
    plan: Plan  # the plan the image was cut with (the model's own for a native reply)
    sequence_ids: tuple[int, ...]  # prompt (image placeholder expanded) + answer token ids
    prompt_tokens: int
    visual_positions: tuple[int, ...]  # where the image sits in sequence_ids
    answer_tokens: tuple[str, ...]  # each answer token, decoded alone
    text_layers: int
    text_heads: int
    vision_layers: int
    vision_heads: int
    vision_feature_attention_layer: int  # the encoder layer whose output feeds the projector

    def query_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(question rows, answer rows): the prompt positions after the image, and the row that wrote each
        answer token (`writer_rows`)."""
        start = (max(self.visual_positions) + 1) if self.visual_positions else 0
        question = np.arange(start, self.prompt_tokens, dtype=np.int64)
        return question, writer_rows(self.prompt_tokens, len(self.answer_tokens))

    def row_choices(self) -> list[str]:
        """The rows one can ask for: the whole answer, the question, then "k: token" per answer token."""
        return [WHOLE_ANSWER, QUESTION] + [f"{k}: {tok!r}" for k, tok in enumerate(self.answer_tokens)]

    def layer_choice(self, source: str) -> LayerChoice:
        """LLM: every layer by default; vision encoder: the layer that makes the features the LLM reads."""
        if _source(source) == VISION:
            layer = self.vision_feature_attention_layer
            return LayerChoice(self.vision_layers, self.vision_heads, layer, layer)
        return LayerChoice(self.text_layers, self.text_heads, 0, self.text_layers - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready but for the image)."""
        return {"id": self.id, "model": asdict(self.model), "image": self.image, "plan": self.plan.to_dict(),
                "sequence_ids": list(self.sequence_ids), "prompt_tokens": self.prompt_tokens,
                "visual_positions": list(self.visual_positions), "answer_tokens": list(self.answer_tokens),
                "text_layers": self.text_layers, "text_heads": self.text_heads, "vision_layers": self.vision_layers,
                "vision_heads": self.vision_heads,
                "vision_feature_attention_layer": self.vision_feature_attention_layer}


def reply_record(vlm: VLM, image: ImageSource, plan: Plan | str, sequence_ids: Sequence[int], prompt_tokens: int,
                 reply_id: str | None = None, visual_positions: Sequence[int] | None = None) -> ReplyRecord:
    """What a chat keeps of one finished reply for the attention panel.

    `sequence_ids`: the prompt with its image placeholder expanded to the visual positions (as
    `prepare_inputs(...).input_ids`) followed by the answer's token ids; `prompt_tokens`: the prompt's length.
    `plan`: "native" or the Plan the reply used. `visual_positions`: where the image sits
    (`PreparedInputs.visual_positions`); None = the image-token positions of the prompt. The embeddings are
    rebuilt with `encode` when attention is asked for, so nothing large is stored.
    """
    from ..models.visual import image_size, resolve_plan

    ids = tuple(int(i) for i in np.asarray(sequence_ids).reshape(-1))
    resolved = resolve_plan(vlm, image_size(image), plan)
    tower = vision_layers(vlm)
    if visual_positions is None:
        visual_positions = [i for i, t in enumerate(ids[:prompt_tokens]) if t == vlm.image_token_id]
    return ReplyRecord(
        id=reply_id or uuid.uuid4().hex,
        model=vlm.key,
        image=image,
        plan=resolved,
        sequence_ids=ids,
        prompt_tokens=int(prompt_tokens),
        visual_positions=tuple(int(i) for i in visual_positions),
        answer_tokens=tuple(vlm.tokenizer.decode([t]) for t in ids[prompt_tokens:]),
        text_layers=len(text_layers(vlm)),
        text_heads=int(vlm.model.config.text_config.num_attention_heads),
        vision_layers=len(tower),
        vision_heads=vlm.family.vision_heads(vlm.model),
        vision_feature_attention_layer=vlm.family.feature_attention_layer(vlm.geometry, len(tower)),
    )


def query_rows(record: ReplyRecord) -> tuple[np.ndarray, np.ndarray]:
    """(question rows, answer rows) of a reply (`ReplyRecord.query_rows`)."""
    return record.query_rows()


def rebuild_inputs(vlm: VLM, record: ReplyRecord) -> tuple[Any, np.ndarray, Layout]:
    """(inputs, visual positions, Layout) of a reply.

    Families with a plan mode: inputs_embeds (1, S, D), the token embeddings with the visual span replaced by
    `encode(vlm, image, plan)` (for the native plan the model's own embeddings). Families that see only their
    own slicing: a dict of model inputs (the reply's ids beside the processor's image outputs,
    `ModelAdapter.native_inputs`) that the whole model runs, its own rotary positions and masks included."""
    from ..imaging import load_image
    from ..models.visual import splice_visual

    positions = np.asarray(record.visual_positions, dtype=np.int64)
    if not vlm.family.plan_mode:
        layout = vlm.family.layout(vlm.geometry, record.plan)
        if len(positions) != len(layout):
            raise AttentionError(f"the reply has {len(positions)} visual positions but {vlm.family.name}'s layout "
                                 f"of its plan has {len(layout)}: the record does not belong to this model or image")
        inputs = vlm.family.native_inputs(vlm, load_image(record.image), record.sequence_ids)
        return inputs, positions, layout
    visual = vlm.encode(record.image, record.plan)
    if len(positions) != len(visual):
        raise AttentionError(f"the reply has {len(positions)} visual positions but encoding its image with its plan "
                             f"gives {len(visual)}: the record does not belong to this model or image")
    return splice_visual(vlm, record.sequence_ids, positions, visual.embeds), positions, visual.layout


@dataclass(frozen=True, eq=False)
class ReplyMaps:
    """Where one reply looked, for the chosen rows, layers, heads and source."""

    view_maps: ViewMaps
    shares: dict[str, float]  # fractions of the total on "tiles", "global view" and "newlines"
    source: str  # LLM or VISION
    layers: tuple[int, int]  # first and last layer averaged (inclusive)
    heads: str | int


def _no_cache(key: tuple, compute: Callable[[], T]) -> T:
    return compute()


def attention_maps(record: ReplyRecord, rows: str | int = WHOLE_ANSWER, layers: tuple[int, int] | None = None,
                   heads: str | int = "mean", source: str = LLM,
                   cached: Callable[[tuple, Callable[[], Any]], Any] = _no_cache) -> ReplyMaps:
    """The reply's attention for the chosen choices, per view.

    `rows` (LLM only): WHOLE_ANSWER, QUESTION, an answer token's index k or its "k: token" entry of
    `record.row_choices()`. `layers`: (first, last), inclusive; None = `record.layer_choice(source)`'s default.
    `heads`: "mean", "max" or a head index. `source`: LLM (one extra pass over the sequence; every layer is
    captured, so other layers and rows need no new pass) or VISION (the encoder over the plan's views).
    `cached(key, compute)`: the caller's cache of the captured weights (keys: ("llm", id, heads) and
    ("vision", id, first, last, heads)); by default nothing is kept. `compute()` is `run_capture(record, key)`,
    which a caller may run elsewhere itself (the app runs it inside @spaces.GPU).
    """
    source = _source(source)
    default = record.layer_choice(source)
    first, last = sorted(layers) if layers is not None else (default.first, default.last)
    picked = resolve_layers((first, last), default.count)
    if source == VISION:
        key = ("vision", record.id, first, last, heads)
        vlm = record.model.load()
        view_maps = vision_view_maps(cached(key, lambda: run_capture(record, key)), record.plan,
                                     vlm.family.patch_pixels(vlm.geometry, record.plan))
    else:
        key = ("llm", record.id, heads)
        weights, layout = cached(key, lambda: run_capture(record, key))
        vector = _pick_rows(record, weights[picked].mean(axis=0), rows)  # (visual,)
        view_maps = map_to_views(vector, layout, record.plan)
    return ReplyMaps(view_maps, view_maps.shares(), source, (picked[0], picked[-1]), heads)


def run_capture(record: ReplyRecord, key: tuple) -> Any:
    """The model pass a cache key of `attention_maps` names, from plain values only (so that it can run in a
    GPU worker process, e.g. under ZeroGPU's @spaces.GPU): ("llm", id, heads) → (weights, layout);
    ("vision", id, first, last, heads) → per-view maps."""
    if key[0] == "vision":
        _, _, first, last, heads = key
        return vision_attention(record.model.load(), record.image, record.plan, layers=(first, last), heads=heads)
    if key[0] == "llm":
        return _llm_weights(record, key[2])
    raise AttentionError(f"no capture is named {key[0]!r}")


def _source(source: str) -> str:
    if source not in SOURCES:
        raise AttentionError(f"source must be {LLM!r} or {VISION!r}, not {source!r}")
    return source


def _llm_weights(record: ReplyRecord, heads: str | int) -> tuple[np.ndarray, Layout]:
    """Every layer's attention from the question and answer rows to the visual positions, one extra pass:
    (layers, rows, visual) float32 and the visual sequence's layout."""
    vlm = record.model.load()
    embeds, visual, layout = rebuild_inputs(vlm, record)
    rows = np.concatenate(record.query_rows())
    return llm_attention(vlm, embeds, visual, rows, layers=None, heads=heads), layout


def _pick_rows(record: ReplyRecord, weights: np.ndarray, rows: str | int) -> np.ndarray:
    """(question + answer rows, visual) → (visual,): one answer token's row, or the mean over the answer's or the
    question's rows."""
    question, answer = record.query_rows()
    if rows == QUESTION:
        return weights[: len(question)].mean(axis=0)
    if rows in (WHOLE_ANSWER, None, ""):
        return weights[len(question):].mean(axis=0)
    try:
        k = int(rows) if isinstance(rows, (int, np.integer)) else int(str(rows).split(":", 1)[0])
    except ValueError:
        raise AttentionError(f"rows must be {WHOLE_ANSWER!r}, {QUESTION!r} or an answer token's index, not "
                             f"{rows!r}") from None
    if not 0 <= k < len(answer):
        raise AttentionError(f"the answer has {len(answer)} tokens; pick one of 0…{len(answer) - 1}")
    return weights[len(question) + k]

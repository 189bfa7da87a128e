"""What the app shows, made from gridvlm's results: captions, table rows, parameter text. No gradio here.

The app (``app.py``) only lays out components and wires events; every value it displays comes from a
function in this module or from `gridvlm.viz`, so it can be tested without a browser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import fit_budget, plan, strategy_info
from .errors import PlanError
from .geometry import Plan

PREVIEW_SIDE = 1024  # px; overlays are drawn on a preview this size, never on the full-resolution image


# ---------------------------------------------------------------------------------------------------------------
# The uploaded image, decoded once per upload and kept in the user's gr.State


@dataclass
class Workspace:
    """One user's image: decoded once, with everything a strategy switch reuses."""

    name: str  # file name shown to the user
    image: Any  # PIL.Image.Image, upright RGB, full resolution (the encoder's views are cut from it)
    preview: Any  # PIL.Image.Image, at most PREVIEW_SIDE px per side, for overlays
    seams: Any = None  # metrics' reusable seam-energy data for this image, filled on first use
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def open_workspace(source: Any, name: str | None = None) -> Workspace:
    """Decode `source` (path, bytes, file object) safely; ImageError says what is wrong with it."""
    from .imaging import load_image
    from .viz import preview

    image = load_image(source)
    label = name or (getattr(source, "name", None) or str(source)).replace("\\", "/").rsplit("/", 1)[-1]
    return Workspace(name=label, image=image, preview=preview(image, max_side=PREVIEW_SIDE))


# ---------------------------------------------------------------------------------------------------------------
# Strategies and their parameters


def strategy_about(name: str) -> str:
    """Markdown: the strategy's one-line summary, its reference and what a token budget moves."""
    info = strategy_info(name)
    return f"**{info.name}** ({info.family}) — {info.summary}.  \n*Reference:* {info.reference}.  \n*Budget moves:* {info.budget}."


def params_text(name: str) -> str:
    """The strategy's defaults as editable JSON, one parameter per line."""
    defaults = strategy_info(name).defaults
    if not defaults:
        return "{}"
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in defaults.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def params_help(name: str) -> str:
    """Markdown table of the strategy's parameters: type, default, range and meaning."""
    rows = ["| parameter | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for key, spec in strategy_info(name).params.items():
        if spec.choices:
            allowed = " / ".join(map(str, spec.choices))
        elif spec.min is not None or spec.max is not None:
            allowed = f"{_num(spec.min)} … {_num(spec.max)}"
        else:
            allowed = ""
        if spec.nullable:
            allowed = f"{allowed} or null".strip()
        default = json.dumps(spec.default)
        if len(default) > 40:
            default = default[:37] + "…"
        rows.append(f"| `{key}` | {spec.kind} | `{default}` | {allowed} | {spec.help} |")
    return "\n".join(rows)


def parse_params(name: str, text: str | None) -> dict[str, Any]:
    """The parameters the user changed, from the JSON they edited; values equal to the defaults are left out.

    Only the JSON syntax is checked here; `plan` checks names, types and ranges and says what would work.
    """
    if not text or not text.strip():
        return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"{name}: the parameters are not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            'write an object such as {"max_tiles": 6}'
        ) from None
    if not isinstance(values, dict):
        raise PlanError(f'{name}: the parameters must be a JSON object such as {{"max_tiles": 6}}, not {text.strip()!r}')
    defaults = strategy_info(name).defaults
    return {k: v for k, v in values.items() if k not in defaults or v != defaults[k]}


def make_plan(size: tuple[int, int], name: str, params: dict[str, Any], max_tokens: int | None) -> Plan:
    """`plan`, or `fit_budget` when a token budget is given."""
    if max_tokens is None:
        return plan(size, name, **params)
    return fit_budget(size, name, int(max_tokens), **params)


# ---------------------------------------------------------------------------------------------------------------
# Slice tab


def view_captions(p: Plan) -> list[str]:
    """One caption per view, in sequence order: index, grid position, encoder input size, tokens."""
    captions = []
    for v in p.views:
        where = "global" if v.is_thumbnail else f"r{v.row} c{v.col}"
        pad = f" · {v.padding:.0%} pad" if v.padding >= 0.005 else ""
        captions.append(f"#{v.index} {where} · {v.input_size[0]}×{v.input_size[1]} · {v.token_count} tok{pad}")
    return captions


def headline(p: Plan, seam_score: float | None = None) -> str:
    """Markdown: the numbers a user looks for first."""
    rows, cols = p.grid
    thumb = f" + global view ({p.thumbnail_position})" if p.thumbnail is not None else ""
    text = (f"**{p.strategy}** on {p.image_size[0]}×{p.image_size[1]}: grid {rows}×{cols}{thumb} · "
            f"**{len(p.tiles)} tiles** · **{p.num_views} views** · **{p.token_count} tokens**")
    if p.text_tokens:
        text += f" (+{p.text_tokens} text tokens)"
    if seam_score is not None:
        text += f" · seam score {seam_score:.3f}"
    return text


def notes_markdown(p: Plan) -> str:
    if not p.notes:
        return "*No reference quirks apply to this plan.*"
    return "\n".join(f"- {n}" for n in p.notes)


METRIC_LABELS = {
    "views": "views",
    "tokens": "visual tokens",
    "padding_fraction": "padding (share of encoder pixels)",
    "aspect_distortion": "aspect distortion",
    "max_upscale": "max upscale",
    "max_downscale": "max downscale",
    "coverage": "coverage (share of the image seen by a tile)",
    "tile_coverage": "tile coverage",
    "pixels_per_token": "original pixels per token",
    "vision_gflops": "vision encoder GFLOPs",
    "llm_prefill_gflops": "LLM prefill GFLOPs (image tokens)",
}


def metrics_rows(p: Plan, metrics: dict[str, Any], seam_score: float | None = None) -> list[list[Any]]:
    """``[quantity, value]`` rows: the token breakdown (summing to the total), then the plan's metrics."""
    rows: list[list[Any]] = [[f"tokens: {k}", v] for k, v in p.tokens.items()]
    rows.append(["tokens: total", p.token_count])
    if p.text_tokens:
        rows.append(["text tokens around the image", p.text_tokens])
    for key, value in metrics.items():
        if key in ("tokens",):
            continue
        rows.append([METRIC_LABELS.get(key, key.replace("_", " ")), _round(value)])
    if seam_score is not None:
        rows.append(["seam score (edge energy cut by tile borders)", _round(seam_score)])
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Compare tab

COMPARE_HEADERS = ["strategy", "views", "tokens", "coverage", "distortion", "seam score", "vision GFLOPs",
                   "LLM GFLOPs", "pixels per token"]


def compare_row(p: Plan, metrics: dict[str, Any], seam_score: float | None) -> list[Any]:
    return [p.strategy, p.num_views, p.token_count, _round(metrics.get("coverage")),
            _round(metrics.get("aspect_distortion")), _round(seam_score), _round(metrics.get("vision_gflops")),
            _round(metrics.get("llm_prefill_gflops")), _round(metrics.get("pixels_per_token"))]


def refused_markdown(refused: list[str]) -> str:
    if not refused:
        return ""
    return "**Cannot meet the budget:**\n" + "\n".join(f"- {r}" for r in refused)


# ---------------------------------------------------------------------------------------------------------------
# Pack tab

BATCH_HEADERS = ["layout", "rows", "row length", "real tokens", "padding tokens", "total tokens", "utilisation",
                 "attention cost (Σ L²)"]


def batch_row(label: str, stats: Any) -> list[Any]:
    """A `BatchStats` as a table row."""
    return [label, stats.rows, stats.row_len, stats.real_tokens, stats.padding_tokens, stats.total_tokens,
            round(stats.utilization, 4), stats.attention_cost]


def sequence_choices(packing: Any) -> list[tuple[str, int]]:
    """Dropdown choices for the attention-mask view: one per packed sequence."""
    return [
        (f"sequence {s}: images {', '.join(str(i) for i, _ in seq)} ({packing.lengths[s]} tokens)", s)
        for s, seq in enumerate(packing.sequences)
    ]


def _num(value: float | None) -> str:
    if value is None:
        return "…"
    return str(int(value)) if float(value).is_integer() else str(value)


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    return value

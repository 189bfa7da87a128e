"""What the app shows, made from gridvlm's results: captions, table rows, parameter text. No gradio here.

The tab modules (`slice_tab`, `compare_tab`, `pack_tab`, `chat_tab`) only lay out components and wire events;
every value they display comes from a function in this module or from `gridvlm.viz`, so it can be tested without a
browser.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import fit_budget, list_strategies, plan, strategy_info
from ..strategies import list_families
from ..errors import ImageError, PlanError
from ..geometry import Plan
from ..packing import LayoutComparison

ASSETS = Path(__file__).resolve().parent / "assets"  # package data: pip install 'gridvlm[app]' ships them
EXAMPLES = sorted(p for p in ASSETS.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
DEFAULT_IMAGE = ASSETS / "landscape_photo.jpg"
DEFAULT_STRATEGY = "llava-next"
PREVIEW_SIDE = 1024  # px; overlays are drawn on a preview this size, never on the full-resolution image
ALL_FAMILIES = "all families"


def strategy_choices(family: str = ALL_FAMILIES) -> list[str]:
    """Strategy names for a dropdown, grouped by family (families in listing order), or one family's."""
    families = list_families() if family == ALL_FAMILIES else [family]
    return [name for f in families for name in list_strategies(f)]


# ---------------------------------------------------------------------------------------------------------------
# The uploaded image, decoded once per upload and kept in the user's gr.State


@dataclass(frozen=True, eq=False)
class Workspace:
    """One user's image, as cheap to keep as it can be: the upload's path and size, and the preview as JPEG bytes
    (~100 KB). The full-size image is decoded when a view needs it and shared through `IMAGES`, one process-wide
    cache bounded in bytes, so a session's memory does not grow with its image.

    Compared and hashed by identity (eq=False): gradio hashes states that have change listeners.
    """

    path: str  # the uploaded file (gradio's temp dir) or an example
    size: tuple[int, int]  # (w, h) upright
    preview_jpeg: bytes  # at most PREVIEW_SIDE px long: overlays and seam energy use it

    @property
    def image(self) -> Any:
        """The full-resolution upright RGB image (decoded again when the shared cache let it go)."""
        return IMAGES.image(self.path)

    @property
    def source(self) -> str:
        """The upload's path, for `gridvlm.pixels` to decode at the scale its views need (ImageError once the file
        has gone)."""
        still_there(self.path)
        return self.path

    @property
    def preview(self) -> Any:
        """The preview as a PIL image (decoded from its bytes, shared through `IMAGES`)."""
        return IMAGES.preview(self.preview_jpeg)


class ImageCache:
    """Decoded images shared by every session: least recently used first out, at most `max_bytes` in all.

    Decoding happens outside the lock (two sessions may decode the same file once each); readers never wait for a
    decode. An image larger than the whole budget is returned without being kept.
    """

    def __init__(self, max_bytes: int):
        import threading
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return self._bytes

    def image(self, path: str) -> Any:
        from ..imaging import load_image

        stat = still_there(path)
        key = ("image", str(path), stat.st_mtime_ns, stat.st_size)

        def decode():
            with named_in_errors(path):
                return load_image(path)

        return self._get(key, decode)

    def preview(self, jpeg: bytes) -> Any:
        import hashlib
        import io

        from PIL import Image

        def decode():
            with Image.open(io.BytesIO(jpeg)) as im:
                return im.convert("RGB")

        return self._get(("preview", hashlib.sha1(jpeg).digest()), decode)

    def put(self, key: Any, image: Any) -> None:
        size = _nbytes(image)
        with self._lock:
            if key in self._items:
                return
            if size > self.max_bytes:
                return
            self._items[key] = image
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= _nbytes(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _get(self, key: Any, decode) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = decode()
        self.put(key, image)
        return image


def still_there(path: str) -> os.stat_result:
    """The upload's stat; ImageError (upload again) when the server no longer has the file."""
    try:
        return os.stat(path)
    except OSError:
        raise ImageError(f"{Path(path).name!r} is no longer on the server (the server restarted, or your session "
                         "ended and its upload was deleted): upload the image again") from None


def _nbytes(image: Any) -> int:
    w, h = image.size
    return w * h * len(image.getbands())


IMAGES = ImageCache(64 * 1024 * 1024)  # resized to Limits.image_cache_bytes when the app starts


def open_workspace(path: str) -> Workspace:
    """Check the file at `path` (ImageError says what is wrong with it) and keep what is cheap: its size and a
    preview decoded at the smallest JPEG DCT scale that still covers PREVIEW_SIDE (no full-size decode)."""
    import io

    from ..imaging import image_size, load_preview

    with named_in_errors(path):
        small = load_preview(path, PREVIEW_SIDE)
        size = image_size(path)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    return Workspace(path=str(path), size=size, preview_jpeg=buf.getvalue())


@contextlib.contextmanager
def named_in_errors(path: str) -> Iterator[None]:
    """ImageErrors name the uploaded file, not the server's temp folder it was saved in."""
    try:
        yield
    except ImageError as exc:
        raise ImageError(str(exc).replace(str(path), Path(path).name)) from None


# ---------------------------------------------------------------------------------------------------------------
# Strategies and their parameters


def strategy_about(name: str) -> str:
    """Markdown: the strategy's one-line summary, its reference and what a token budget moves."""
    info = strategy_info(name)
    return (f"**{info.name}** ({info.family}) — {info.summary}.  \n*Reference:* {info.reference}.  \n"
            f"*Budget moves:* {info.budget}.")


def params_text(name: str, changed: dict[str, Any] | None = None) -> str:
    """The strategy's defaults (with the `changed` values in) as editable JSON, one parameter per line."""
    defaults = {**strategy_info(name).defaults, **(changed or {})}
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
    if len(text) > MAX_PARAMS_CHARS:
        raise PlanError(f"{name}: the parameters are {len(text):,} characters long; write at most "
                        f"{MAX_PARAMS_CHARS:,}, one value per parameter, such as {{\"max_tiles\": 6}}")
    try:
        values = json.loads(text, parse_constant=_not_a_number, parse_float=_finite_float,
                            parse_int=_short_int)
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"{name}: the parameters are not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            'write an object such as {"max_tiles": 6}'
        ) from None
    except RecursionError:
        raise PlanError(f'{name}: the parameters are nested too deeply; write a flat object such as '
                        '{"max_tiles": 6}') from None
    except ValueError as exc:  # NaN, Infinity, 1e999 or an integer with thousands of digits
        raise PlanError(f"{name}: {exc}; use a finite number within the parameter's range") from None
    if not isinstance(values, dict):
        raise PlanError(f'{name}: the parameters must be a JSON object such as {{"max_tiles": 6}}, '
                        f"not {text.strip()!r}")
    defaults = strategy_info(name).defaults
    return {k: v for k, v in values.items() if k not in defaults or v != defaults[k]}


MAX_PARAMS_CHARS = 10_000  # the parameters box; every strategy's parameters fit in a few hundred


def _not_a_number(word: str):
    raise ValueError(f"{word} is not a number a parameter can take")


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large to be a number")
    return value


def _short_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:
        raise ValueError(f"{text[:12]}… ({len(text)} digits) is too large to be a number")
    return int(text)


def make_plan(size: tuple[int, int], name: str, params: dict[str, Any], max_tokens: int | None) -> Plan:
    """`plan`, or `fit_budget` when a token budget is given."""
    if max_tokens is None:
        return plan(size, name, **params)
    return fit_budget(size, name, int(max_tokens), **params)


def smallest_budget(size: tuple[int, int], name: str, params: dict[str, Any], most: int) -> int | None:
    """The fewest visual tokens `fit_budget` meets for `name` on `size` (bisection, up to `most`); None when the
    parameters themselves are refused or not even `most` tokens are enough."""
    def fits(n: int) -> bool:
        try:
            fit_budget(size, name, n, **params)
        except PlanError:
            return False
        return True

    try:
        plan(size, name, **params)
    except PlanError:
        return None
    if not fits(most):
        return None
    lo, hi = 1, most
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo


def budget_advice(size: tuple[int, int], name: str, max_tokens: int, params: dict[str, Any], most: int,
                  examples: int = 4) -> str:
    """What would work when `name` cannot meet `max_tokens` on `size`: the budget it needs (searched up to
    `most`) and a few strategies that do meet it ("" when the parameters, not the budget, are the problem)."""
    need = smallest_budget(size, name, params, most)
    if need is None:
        return ""
    fitting = []
    for other in list_strategies():
        try:
            fit_budget(size, other, max_tokens)
        except PlanError:
            continue
        fitting.append(other)
        if len(fitting) == examples:
            break
    advice = f"Raise the budget to {need}"
    if fitting:
        advice += f", or pick a strategy that fits {count(max_tokens, 'token')}, such as {', '.join(fitting)}"
    return advice + "."


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


def count(n: int, noun: str) -> str:
    """``"1 tile"``, ``"4 tiles"``: a number and its noun, singular for one."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def views_label(p: Plan) -> str:
    """The gallery's label: how many views it holds (on a narrow screen most of them are below the fold)."""
    return f"{count(p.num_views, 'view')} as the encoder sees them, in sequence order"


FULL_COVERAGE = 0.995  # coverage below this (share of the image some view sees) is flagged in the headline


def headline(p: Plan, seam_score: float | None = None, coverage: float | None = None) -> str:
    """Markdown: the numbers a user looks for first. `seam_score` only where the plan has seams (None: none);
    `coverage` (share of the image some view sees) is flagged when the views leave part of the image out."""
    rows, cols = p.grid
    thumb = f" + global view ({p.thumbnail_position})" if p.thumbnail is not None else ""
    text = (f"**{p.strategy}** on {p.image_size[0]}×{p.image_size[1]}: grid {rows}×{cols}{thumb} · "
            f"**{count(len(p.tiles), 'tile')}** · **{count(p.num_views, 'view')}** · "
            f"**{count(p.token_count, 'token')}**")
    if p.text_tokens:
        text += f" (+{count(p.text_tokens, 'text token')})"
    if seam_score is not None:
        text += f" · seam score {seam_score:.3f}"
    if coverage is not None and coverage < FULL_COVERAGE:
        text += f" · ⚠️ **the views see only {coverage:.0%} of the image**"
    return text


def legend_markdown(p: Plan, has_seams: bool) -> str:
    """What the overlay's marks mean, for the marks this plan's overlay has."""
    parts = ["coloured outlines: the tiles (label: row,col · tokens; hover a tile for its numbers"
             + ("; labels are left out where tiles are too small to hold them" if dense_labels(p) else "") + ")"]
    if any(v.padding > 0 for v in p.views):
        parts.append("grey: padding, input pixels the encoder gets that are not image")
    if p.thumbnail is not None:
        parts.append("dashed black frame: the global view, the whole image at low resolution")
    token = strategy_info(p.strategy).row_break_token
    if token is not None:
        parts.append(f"dark ◀ markers: the row-break token {token} the prompt writes after each row of tokens")
    if has_seams:
        parts.append("seams, the borders between tiles: pale yellow cuts little, dark red cuts text or edges "
                     "(colour bar: energy, 1 = the image's average)")
    return "**Legend.** " + "; ".join(parts) + "."


def dense_labels(p: Plan) -> bool:
    """Whether some tile of `p` is drawn without its full label (see `gridvlm.viz.tile_label`)."""
    from ..viz import tile_label

    return any(tile_label(t, p.image_size) != tile_label(t, None) for t in p.tiles)


def notes_markdown(p: Plan) -> str:
    if not p.notes:
        return "*No reference quirks apply to this plan.*"
    return "\n".join(f"- {n}" for n in p.notes)


METRIC_LABELS = {  # plan_metrics key -> what the table calls it
    "views": "views the encoder runs",
    "padding_fraction": "padding (share of encoder pixels)",
    "aspect_distortion": "aspect distortion (worst view, 0 = kept)",
    "max_upscale": "max upscale (linear)",
    "max_downscale": "max downscale (linear)",
    "coverage": "coverage (share of the image some view sees)",
    "tile_coverage": "tile coverage (global view excluded)",
    "pixels_per_token": "original pixels per token",
    "vision_gflops": "vision encoder GFLOPs (estimate)",
    "llm_prefill_gflops": "LLM prefill GFLOPs for the image (estimate)",
    "vision_model": "vision encoder assumed",
    "llm_model": "language model assumed",
}
_IN_BREAKDOWN = ("tokens", "text_tokens")


def metrics_rows(p: Plan, metrics: dict[str, Any], seam_score: float | None = None) -> list[list[str]]:
    """``[quantity, value]`` rows: the token breakdown (summing to the total), then the plan's metrics."""
    rows = [[f"tokens: {k}", str(v)] for k, v in p.tokens.items()]
    rows.append(["tokens: total", str(p.token_count)])
    if p.text_tokens:
        rows.append(["text tokens around the image", str(p.text_tokens)])
    rows += [[METRIC_LABELS.get(k, k.replace("_", " ")), _text(v)]
             for k, v in metrics.items() if k not in _IN_BREAKDOWN]
    if seam_score is not None:
        rows.append(["seam score (content cut by tile borders, 1 = average)", _text(seam_score)])
    return rows


def breakdown_html(p: Plan) -> str:
    """The plan's token breakdown as one stacked bar in HTML, with its legend: the parts of `p.tokens`, then the
    wrapper's text tokens, each coloured as `viz.token_breakdown_figure` colours it. HTML rather than a figure: the
    browser lays it out at once, where a plotly bar took ~90 ms of every Slice update to draw."""
    from html import escape

    from ..viz import PALETTE

    parts = dict(p.tokens)
    if p.text_tokens:
        parts["text (wrapper)"] = p.text_tokens
    total = sum(parts.values())
    title = f"{p.strategy}: {total:,} tokens"
    segments, legend = [], []
    for k, (key, n) in enumerate(parts.items()):
        colour = PALETTE[k % len(PALETTE)]
        what = escape(f"{key}: {n:,} tokens")
        segments.append(f'<span class="gv-part" style="flex-grow:{n};background:{colour}" title="{what}">{n:,}</span>')
        legend.append(f'<li><i style="background:{colour}"></i>{escape(key)} <b>{n:,}</b></li>')
    return (f'<figure class="gv-breakdown" aria-label="{escape(title)}"><figcaption>{escape(title)}</figcaption>'
            f'<div class="gv-bar">{"".join(segments)}</div><ul class="gv-legend">{"".join(legend)}</ul></figure>')


# ---------------------------------------------------------------------------------------------------------------
# Compare tab

COMPARE_COLUMNS = {  # table header -> (key of a comparison row, decimals shown)
    "strategy": ("strategy", None), "views": ("views", None), "tokens": ("tokens", None),
    "coverage": ("coverage", 3), "distortion": ("aspect_distortion", 3), "seam score": ("seam_score", 3),
    "vision GFLOPs": ("vision_gflops", 1), "LLM GFLOPs": ("llm_prefill_gflops", 1),
    "pixels per token": ("pixels_per_token", 0),
}


@dataclass(frozen=True)
class Refusal:
    strategy: str
    reason: str  # the PlanError's message: why no plan of this strategy meets the budget


@dataclass(frozen=True)
class Comparison:
    plans: dict[str, Plan]  # strategy -> its plan, in the registry's order
    rows: list[dict[str, Any]]  # plan_metrics + "strategy" + "seam_score", one per plan
    refused: list[Refusal]  # the chosen strategies that cannot meet the budget

    def table(self) -> list[list[Any]]:
        return [[_round(row[key], digits) for key, digits in COMPARE_COLUMNS.values()] for row in self.rows]


def compare(ws: Workspace, names: list[str], max_tokens: int | None) -> Comparison:
    """Every strategy in `names` on the user's image, in the registry's order (at one token budget when given;
    0 or None means each strategy's defaults)."""
    from ..metrics import plan_metrics, seam_energy

    plans, refused = {}, []
    for name in (n for n in list_strategies() if n in names):
        try:
            plans[name] = make_plan(ws.size, name, {}, max_tokens or None)
        except PlanError as exc:
            refused.append(Refusal(name, str(exc)))
    rows = [{"strategy": k, **plan_metrics(p), "seam_score": seam_energy(ws.preview, p).score}
            for k, p in plans.items()]
    return Comparison(plans, rows, refused)


def refused_markdown(refused: list[Refusal]) -> str:
    if not refused:
        return ""
    return "**Cannot meet the budget:**\n" + "\n".join(f"- {_without_name(r.reason, r.strategy)}" for r in refused)


def _without_name(reason: str, name: str) -> str:
    """A refusal under its strategy's name, without the name said twice ("llava-next: llava-next cannot …")."""
    return reason if reason.startswith(name) else f"{name}: {reason}"


# ---------------------------------------------------------------------------------------------------------------
# Pack tab

BATCH_HEADERS = ["layout", "rows", "row length", "real tokens", "padding tokens", "total tokens", "utilisation",
                 "attention cost (Σ L²)"]


@dataclass(frozen=True)
class ImageSet:
    """A set of images the Pack tab offers without an upload, with the settings it was chosen for."""

    label: str  # what the dropdown shows
    sizes: tuple[tuple[int, int], ...] | None  # (w, h) per image; None = the example image files
    tiling: str  # the strategy to compare with
    max_seq_len: int  # tokens per packed sequence


EXAMPLE_SET = "the example images (6 files)"
IMAGE_SETS = {s.label: s for s in (
    ImageSet(EXAMPLE_SET, None, DEFAULT_STRATEGY, 8192),
    # Found by a search over common photo sizes for sets where first-fit-decreasing needs fewer sequences than
    # the given order; the explanation under the table says why for whatever the user then changes.
    ImageSet("8 mixed photos, LLaVA-NeXT: the order matters",
             ((768, 1024), (336, 336), (512, 512), (147, 144), (4032, 3024), (1280, 720), (2000, 1000), (512, 512)),
             DEFAULT_STRATEGY, 8192),
    ImageSet("8 mixed photos at native resolution (Qwen2-VL): the order matters, padding wastes most",
             ((1760, 940), (2560, 853), (256, 256), (300, 200), (256, 256), (800, 800), (1280, 720), (1280, 720)),
             "qwen2-vl", 4096),
)}


@dataclass(frozen=True)
class PackView:
    """What the Pack tab shows, kept in the user's gr.State for the step slider and the mask dropdown."""

    names: list[str]  # one per image: the file name, or "W×H" for a set of sizes
    comparison: LayoutComparison

    @property
    def packing(self) -> Any:
        return self.comparison.packing

    def table(self) -> list[list[Any]]:
        """One row per layout, columns as BATCH_HEADERS."""
        return [[label, s.rows, s.row_len, s.real_tokens, s.padding_tokens, s.total_tokens, round(s.utilization, 4),
                 s.attention_cost] for label, s in self.comparison.layouts().items()]

    def explanation(self) -> str:
        """Markdown: what the numbers mean, one sentence per line."""
        return "\n\n".join(self.comparison.explanation())

    def images_markdown(self) -> str:
        """Markdown: one row per image with its tiling tokens and the NaViT grid matched to them."""
        c = self.comparison
        dropped = " (after dropping)" if self.packing.drop_rate else ""
        lines = [f"| # | image | size | {c.tiling} tokens | NaViT patches (resized to) | NaViT tokens{dropped} |",
                 "| --- | --- | --- | ---: | --- | ---: |"]
        for k, (name, (w, h), p, item) in enumerate(zip(self.names, c.sizes, c.tiled, self.packing.items)):
            rows, cols = item.grid
            nw, nh = item.size
            lines.append(f"| {k} | {name} | {w}×{h} | {p.token_count:,} | {rows}×{cols} ({nw}×{nh} px) "
                         f"| {item.counted_tokens:,} |")
        return "\n".join(lines)

    def step_caption(self, step: int) -> str:
        """What the packer did at `step` (1 = the first image placed; 0 = nothing placed yet)."""
        placements = self.packing.placements()
        if step <= 0 or not placements:
            return (f"Step 0 of {len(placements)}: nothing placed yet. The {self.packing.order} order considers the "
                    "images " + ("largest first." if self.packing.order == "first-fit-decreasing" else "as given."))
        p = placements[min(step, len(placements)) - 1]
        where = (f"opens sequence {p.sequence}" if p.opened else
                 f"fits into sequence {p.sequence} (now {p.lengths[p.sequence]:,} of {self.packing.max_seq_len:,})")
        return (f"Step {p.step + 1} of {len(placements)}: image {p.item} ({self.names[p.item]}, {p.tokens:,} tokens) "
                f"{where}.")


def pack_image_count(paths: list[str] | None, image_set: str) -> int:
    """How many images `pack_images_of` will read: for the limits, before any file is opened."""
    if paths:
        return len(paths)
    chosen = IMAGE_SETS.get(image_set)
    return len(EXAMPLES if chosen is None or chosen.sizes is None else chosen.sizes)


def pack_images_of(paths: list[str] | None, image_set: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Names and (w, h) sizes of the uploads, else of the chosen image set. Only the files' headers are read."""
    from ..imaging import image_size

    if not paths:
        chosen = IMAGE_SETS.get(image_set)
        if chosen is None:
            raise PlanError(f"{image_set!r} is not one of the image sets; pick one of: {', '.join(IMAGE_SETS)}")
        if chosen.sizes is not None:
            return [f"{w}×{h}" for w, h in chosen.sizes], list(chosen.sizes)
        paths = [str(p) for p in EXAMPLES]
    sizes = []
    for path in paths:
        with named_in_errors(path):
            sizes.append(image_size(path))
    return [Path(p).name for p in paths], sizes


def sequence_choices(packing: Any) -> list[tuple[str, int]]:
    """Dropdown choices for the attention-mask view: one per packed sequence."""
    return [
        (f"sequence {s}: images {', '.join(str(i) for i, _ in seq)} ({packing.lengths[s]:,} tokens)", s)
        for s, seq in enumerate(packing.sequences)
    ]


def whole(value: float | None, name: str = "the number") -> int:
    """A number box's value as an int; an emptied box gives 0, which gridvlm refuses with a readable message.
    NaN, infinities and non-numbers (which a client may send past the box) are refused here."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        raise PlanError(f"{name} must be a number, not {str(value)[:40]!r}") from None
    if number != number or abs(number) == float("inf"):
        raise PlanError(f"{name} must be a finite number, not {value}")
    if abs(number) >= 1e15:
        raise PlanError(f"{name}={number:.3g} is far too large; use a value within the box's range")
    return int(number)


NO_IMAGE = ("no image here: the server restarted or your session ended, so it no longer holds your image — upload "
            "it again (or pick an example)")


def _num(value: float | None) -> str:
    if value is None:
        return "…"
    return str(int(value)) if float(value).is_integer() else str(value)


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _round(value: Any, digits: int | None) -> Any:
    if isinstance(value, float) and digits is not None:
        return round(value, digits)
    return value


# ---------------------------------------------------------------------------------------------------------------
# Why this grid?


def explanation_markdown(e: Any) -> str:
    """`gridvlm.explain`'s answer as Markdown: the rule, every candidate with its scores (the winner in bold and
    marked), and the decision."""
    keys = list(dict.fromkeys(k for c in e.candidates for k in c.scores))
    header = "| | candidate | " + " | ".join(keys) + " | note |"
    lines = [f"**Rule.** {e.rule}", "", header, "| --- | --- | " + " | ".join("---:" for _ in keys) + " | --- |"]
    for c in e.candidates:
        label = f"**{c.label}**" if c.chosen else c.label
        cells = [_score(c.scores[k]) if k in c.scores else "" for k in keys]
        lines.append(f"| {'→' if c.chosen else ''} | {label} | " + " | ".join(cells) + f" | {c.note} |")
    lines += ["", f"**Decision.** {e.decision}"]
    return "\n".join(lines)


def _score(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.4g}"


# ---------------------------------------------------------------------------------------------------------------
# A view of the Slice tab as a link (URL query parameters) or the browser's memory carries it

LINK_KEYS = ("example", "strategy", "budget", "params")  # the query parameters a shared link may carry


@dataclass(frozen=True)
class SliceView:
    """What the Slice tab shows, in the words a link uses: an example image, a strategy, a budget, parameters."""

    strategy: str = DEFAULT_STRATEGY
    example: str | None = DEFAULT_IMAGE.stem  # an example's file stem; None: an image the user uploaded
    max_tokens: int | None = None  # None: the strategy's defaults (no budget)
    params: dict[str, Any] | None = None  # the parameters changed from the strategy's defaults
    upload: str | None = None  # the uploaded file's name, when the image is an upload

    def query(self) -> str:
        """The URL query string (``?strategy=…``) that opens this view; an upload cannot travel in it."""
        from urllib.parse import urlencode

        values = {"example": self.example or DEFAULT_IMAGE.stem, "strategy": self.strategy}
        if self.max_tokens is not None:
            values["budget"] = str(self.max_tokens)
        if self.params:
            values["params"] = json.dumps(self.params, separators=(",", ":"))
        return "?" + urlencode(values)

    @property
    def image(self) -> Path:
        """The example's file (the default image for an upload, which the server no longer has)."""
        return example_path(self.example) if self.example else DEFAULT_IMAGE

    def params_text(self) -> str:
        """The parameters box for this view: the strategy's defaults with the changed values in."""
        return params_text(self.strategy, self.params)


def example_path(name: str) -> Path:
    """The example image whose file stem is `name`; PlanError naming the examples for any other name."""
    for path in EXAMPLES:
        if path.stem == name:
            return path
    raise PlanError(f"there is no example image {name[:60]!r}; the examples are "
                    f"{', '.join(p.stem for p in EXAMPLES)}")


def view_from_query(query: dict[str, str]) -> SliceView | None:
    """The view a link asks for (None when its query has none of `LINK_KEYS`); PlanError for a value that
    cannot be shown, saying which and what would work. Absent keys keep the default view's values."""
    if not any(k in query for k in LINK_KEYS):
        return None
    strategy = query.get("strategy", DEFAULT_STRATEGY)
    if strategy not in list_strategies():
        raise PlanError(f"the link names a strategy {strategy[:60]!r} gridvlm does not have; pick one from the list")
    example = query.get("example", DEFAULT_IMAGE.stem)
    example_path(example)  # PlanError when there is no such example
    budget = whole(query["budget"], "the link's budget") if query.get("budget") else None
    changed = parse_params(strategy, query.get("params"))
    return SliceView(strategy=strategy, example=example, max_tokens=budget, params=changed or None)


def example_name(path: str | None) -> str | None:
    """The stem of the example image whose bytes the file at `path` holds (an example goes through gradio's
    cache, which keeps its name); None for an upload."""
    if not path:
        return None
    stem = Path(path).stem
    candidates = [p for p in EXAMPLES if p.name == Path(path).name]
    if not candidates:
        return None
    try:
        return stem if _digest(path) == _digest(candidates[0]) else None
    except OSError:
        return None


def _digest(path: str | Path) -> str:
    stat = os.stat(path)
    return _digest_of(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)  # a file is hashed once, not after every plan (stat in the key: a new file)
def _digest_of(path: str, _mtime_ns: int, _size: int) -> str:
    import hashlib

    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_view(ws: Workspace | None, strategy: str, use_defaults: bool, max_tokens: float,
                 params_json: str) -> SliceView:
    """The view the Slice tab's controls describe (the parameters only where they are this strategy's)."""
    example = example_name(ws.path) if ws is not None else DEFAULT_IMAGE.stem
    try:
        changed = parse_params(strategy, params_json)
    except PlanError:
        changed = {}
    if not set(changed) <= set(strategy_info(strategy).params):
        changed = {}
    return SliceView(strategy=strategy, example=example, max_tokens=None if use_defaults else whole(max_tokens),
                     params=changed or None, upload=None if example or ws is None else Path(ws.path).name)


def share_note(view: SliceView) -> str:
    """Markdown beside the link: what it opens, and what it cannot carry."""
    if view.upload:
        return (f"A link cannot carry an uploaded image: this one opens **{view.strategy}** with these settings on "
                f"the example *{view.image.stem}*; whoever opens it uploads **{view.upload}** themselves.")
    return f"Opens *{view.image.stem}* with **{view.strategy}** and these settings."

"""The resource budget of one request, stated once: what gridvlm refuses before it starts the work.

A public app serves strangers, so every piece of work a user can ask for has a size it may not exceed: the
pixels a plan's views may hold, the size of a packing, the length of a chat turn, the number of images per request.
Each refusal is a `GridVLMError` naming the limit, the value asked for and what would work.

`Limits()` holds the defaults. `Limits.from_env()` reads the ``GRIDVLM_*`` overrides listed in `ENV`; the app calls
it once at start and installs the result with `configure` (the core never reads the environment at import time).
`active()` is the budget in force: the defaults until something is configured.

    from gridvlm import limits
    limits.configure(limits.Limits.from_env())
    limits.check_views(plan)          # before rendering pixels
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import GridVLMError

MIB = 1024 * 1024


class LimitError(GridVLMError):
    """A request larger than the server's resource budget (`Limits`)."""


@dataclass(frozen=True)
class Limits:
    """Largest work one request may ask for. Every field can be overridden by its ``GRIDVLM_*`` variable (`ENV`)."""

    max_view_pixels: int = 32 * MIB  # total pixels of a plan's views (and its canvas): ~100 MB as uint8 RGB
    max_views: int = 512  # views of one plan whose pixels are rendered or drawn
    max_seq_len: int = 131_072  # tokens per packed sequence
    max_sequences: int = 64  # packed sequences per request
    max_images: int = 64  # images per request (Pack tab uploads)
    max_message_chars: int = 4_000  # one chat message, refused before it is tokenised
    max_history_turns: int = 32  # chat messages (user + assistant) carried into the next turn
    max_history_chars: int = 64_000  # their total length
    image_cache_bytes: int = 64 * MIB  # decoded full-size images kept for every session together
    max_models: int = 2  # loaded models kept; the least recently used leaves (never one that is replying)
    max_temp_bytes: int = 2 * 1024 * MIB  # uploads and gridvlm's own files on disk, all sessions together
    state_ttl_s: int = 1800  # s a session's values (image, plan, packing, last reply) are kept after being set
    allow_any_model: bool = False  # the model box accepts any hub id or local directory, not only the list

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, each replaced by its ``GRIDVLM_*`` variable when set (see `ENV`)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = ENV[f.name]
            text = environ.get(name, "").strip()
            if not text:
                continue
            if f.type in ("bool", bool):
                values[f.name] = text.lower() in ("1", "true", "yes", "on")
                continue
            try:
                number = int(float(text))
            except ValueError:
                raise LimitError(f"{name}={text!r} is not a number; set it to a whole number such as "
                                 f"{getattr(cls, f.name)}") from None
            if number < 1:
                raise LimitError(f"{name}={text!r} must be at least 1")
            values[f.name] = number
        return cls(**values)

    def describe(self) -> list[tuple[str, str, Any]]:
        """(field, environment variable, value) for each limit, in declaration order."""
        return [(f.name, ENV[f.name], getattr(self, f.name)) for f in fields(self)]


ENV = {f.name: "GRIDVLM_" + f.name.upper() for f in fields(Limits)}  # field -> its environment variable

_ACTIVE = Limits()


def active() -> Limits:
    """The budget in force (the defaults unless `configure` installed another)."""
    return _ACTIVE


def configure(limits: Limits | None = None, **changes: Any) -> Limits:
    """Install `limits` (default: the budget in force) with `changes` applied; returns the installed budget."""
    global _ACTIVE
    _ACTIVE = replace(limits or _ACTIVE, **changes)
    return _ACTIVE


# ---------------------------------------------------------------------------------------------------------------
# Checks: each runs before the work it guards and costs nothing next to it.


def view_pixels(plan: Any) -> int:
    """Pixels the views of `plan` hold (the sum of their input sizes) or its canvas, whichever is larger."""
    total = sum(int(v.input_size[0]) * int(v.input_size[1]) for v in plan.views)
    canvas = plan.canvas_size
    return max(total, int(canvas[0]) * int(canvas[1]) if canvas else 0)


def check_views(plan: Any, limits: Limits | None = None) -> None:
    """Refuse to render `plan`'s pixels when its views are too many or too large for the budget."""
    limits = limits or _ACTIVE
    check_plan_size(plan, limits)
    pixels = view_pixels(plan)
    if pixels > limits.max_view_pixels:
        raise LimitError(
            f"{plan.strategy}: the views of this plan hold {_mp(pixels)} pixels; this server renders at most "
            f"{_mp(limits.max_view_pixels)} (limit max_view_pixels). The plan and its numbers are still shown; "
            "for its pixels, lower the tile size, max_tiles, max_pixels or the token budget until the views hold "
            f"{pixels / limits.max_view_pixels:.3g}× fewer pixels.")


def check_plan_size(plan: Any, limits: Limits | None = None) -> None:
    """Refuse a plan with more views than can be drawn (its figure has one shape per view)."""
    limits = limits or _ACTIVE
    if len(plan.views) > limits.max_views:
        raise LimitError(f"{plan.strategy}: this plan has {len(plan.views)} views; this server draws at most "
                         f"{limits.max_views} (limit max_views). Lower the tile count or the token budget.")


def check_packing(max_seq_len: int, images: int, limits: Limits | None = None) -> None:
    """Refuse a packing request whose sequences or image count exceed the budget, before anything is read."""
    limits = limits or _ACTIVE
    if max_seq_len > limits.max_seq_len:
        raise LimitError(f"max_seq_len={max_seq_len:,} is larger than this server packs "
                         f"({limits.max_seq_len:,} tokens per sequence, limit max_seq_len); use at most "
                         f"{limits.max_seq_len:,}, e.g. 4096 or 8192 as NaViT trains with.")
    check_images(images, limits)


def check_sequences(sequences: int, limits: Limits | None = None) -> None:
    limits = limits or _ACTIVE
    if sequences > limits.max_sequences:
        raise LimitError(f"this packing needs {sequences} sequences; this server shows at most "
                         f"{limits.max_sequences} (limit max_sequences). Raise max_seq_len or pack fewer images.")


def check_images(images: int, limits: Limits | None = None) -> None:
    limits = limits or _ACTIVE
    if images > limits.max_images:
        raise LimitError(f"{images} images in one request; this server takes at most {limits.max_images} "
                         "(limit max_images). Upload fewer images at a time.")


def check_chat(message: str, history: Sequence[Any], limits: Limits | None = None) -> None:
    """Refuse a chat turn whose message or history is longer than the budget, before anything is tokenised."""
    limits = limits or _ACTIVE
    if len(message) > limits.max_message_chars:
        raise LimitError(f"the message has {len(message):,} characters; this server takes at most "
                         f"{limits.max_message_chars:,} (limit max_message_chars). Shorten it.")
    if len(history) > limits.max_history_turns:
        raise LimitError(f"the chat already has {len(history)} messages; this server carries at most "
                         f"{limits.max_history_turns} into a turn (limit max_history_turns). Press Clear to "
                         "start a new chat.")
    chars = sum(len(_content_text(m)) for m in history)
    if chars > limits.max_history_chars:
        raise LimitError(f"the chat so far has {chars:,} characters; this server carries at most "
                         f"{limits.max_history_chars:,} into a turn (limit max_history_chars). Press Clear to "
                         "start a new chat.")


def _content_text(message: Any) -> str:
    content = message.get("content", "") if isinstance(message, Mapping) else message
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(_content_text(c) for c in content)
    if isinstance(content, Mapping):
        return str(content.get("text", ""))
    return str(content or "")


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f} MP"

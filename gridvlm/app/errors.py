"""One rule for every handler of the app: whatever goes wrong reaches the page as a readable sentence.

`for_people` turns a user's mistake (GridVLMError), memory the limits failed to protect (MemoryError), input nested
too deeply (RecursionError) and any other failure into a `gr.Error` with a sentence, and remembers the sentence
for the user's session; `show_status` (wired with ``event.failure``) writes it into the tab's inline status, where it
stays after the toast is gone, and `clear_status` (``event.success``) empties it again.

`keep_whole` raises nothing at all: a failed event leaves every output as it was and returns the sentence into an
inline status, so gradio paints no "Error" badge over the last good figures (the Slice tab). Sentences are `plain`:
no exception class names, no library text in parentheses.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
from collections import OrderedDict

import gradio as gr

from gridvlm.errors import GridVLMError
from gridvlm.extras import MissingExtra

log = logging.getLogger("gridvlm.app")

_LAST: OrderedDict[str, str] = OrderedDict()  # session hash -> its last error sentence
_LAST_MAX = 4096  # sessions remembered (a sentence each)
_LOCK = threading.Lock()


def message_for(exc: BaseException) -> str:
    """The sentence a user reads for `exc`."""
    if isinstance(exc, (GridVLMError, MissingExtra)):  # bad input, or a feature whose extra is not installed
        return plain(str(exc))
    if isinstance(exc, MemoryError):
        return ("the server ran out of memory for this request; nothing was changed. Ask for less: a smaller "
                "token budget, fewer or smaller tiles, a shorter max_seq_len or fewer images.")
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to read; write a flat JSON object such as {\"max_tiles\": 6}."
    if isinstance(exc, OverflowError):
        return f"a number is too large to compute with ({exc}); use a value within the documented range."
    return ("the server could not do this (the details are in its log). Your inputs are unchanged; try other "
            "values, or upload the image again.")


# "(OSError: image file is truncated (0 bytes not processed))": the library's own words, for a log, not a page
_LIBRARY_DETAIL = re.compile(r"\s*\((?:[A-Za-z_.]*(?:Error|Exception|Warning))\b[^()]*(?:\([^()]*\)[^()]*)*\)")


def plain(text: str) -> str:
    """`text` without the exception class and library text that a message may carry in parentheses."""
    return _LIBRARY_DETAIL.sub("", text)


def for_people(fn):
    """Every failure of `fn` (a function or a generator function) becomes a readable gr.Error."""

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the page must get a sentence, whatever failed
                raise _readable(exc) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the page must get a sentence, whatever failed
            raise _readable(exc) from None

    return wrapper


def _readable(exc: BaseException) -> Exception:
    if isinstance(exc, gr.Error):
        _remember(exc.message)
        return exc
    text = sentence(exc)
    _remember(text)
    return gr.Error(text, duration=None, print_exception=False)


def sentence(exc: BaseException) -> str:
    """The sentence for `exc` (a gr.Error's own message); a failure that is not the user's mistake is logged."""
    if isinstance(exc, gr.Error):
        return plain(exc.message)
    if not isinstance(exc, (GridVLMError, MissingExtra)):
        log.exception("handler failed", exc_info=exc)
    return message_for(exc)


def warning(text: str) -> str:
    """Markdown for an inline status: the sentence, marked."""
    return f"⚠️ {text}"


def keep_whole(fn, outputs: int):
    """`fn` (returning `outputs` values, or one gr.skip()) for an event whose last output is an inline status.

    Success: `fn`'s values and an emptied status. Failure of any kind: every output left as it is (gr.skip())
    and the sentence in the status. Nothing is raised, so gradio paints no "Error" badge over the outputs: the
    last good figures stay, with the message beside them until the next success replaces it. A single gr.skip()
    from `fn` leaves the status too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the page must get a sentence, whatever failed
            return (*[gr.skip()] * outputs, warning(sentence(exc)))
        if isinstance(result, type(gr.skip())):
            return result
        return (*(result if isinstance(result, tuple) else (result,)), "")

    return wrapper


def _remember(text: str) -> None:
    session = session_id()
    if session is None:
        return
    with _LOCK:
        _LAST[session] = text
        _LAST.move_to_end(session)
        while len(_LAST) > _LAST_MAX:
            _LAST.popitem(last=False)


def session_id() -> str | None:
    """The session hash of the request being handled (None outside a request)."""

    try:
        from gradio.context import LocalContext

        request = LocalContext.request.get(None)
    except (ImportError, LookupError):
        return None
    return getattr(request, "session_hash", None) if request is not None else None


def last_error(session_hash: str | None) -> str:
    """The last error sentence of a session ("" when none), forgotten once read."""
    with _LOCK:
        return _LAST.pop(session_hash, "") if session_hash else ""


def show_status(request: gr.Request = None) -> str:
    """Markdown for a tab's inline status after a failed event: the sentence the toast showed."""
    text = last_error(getattr(request, "session_hash", None))
    return warning(text or "That did not work; see the message at the top right.")


def clear_status() -> str:
    return ""


def with_status(event, status) -> None:
    """After `event`: its error sentence into `status` when it failed, `status` emptied when it succeeded."""
    event.failure(show_status, None, status, queue=False, show_progress="hidden", api_visibility="private")
    event.success(clear_status, None, status, queue=False, show_progress="hidden", api_visibility="private")


def forget(session_hash: str) -> None:
    with _LOCK:
        _LAST.pop(session_hash, None)

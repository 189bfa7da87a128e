"""One rule for every handler of the app: whatever goes wrong reaches the page as a readable sentence.

`for_people` turns a user's mistake (GridVLMError), memory the limits failed to protect (MemoryError), input nested
too deeply (RecursionError) and any other failure into a `gr.Error` with a sentence, and remembers the sentence
for the user's session; `show_status` (wired with ``event.failure``) writes it into the tab's inline status, where it
stays after the toast is gone, and `clear_status` (``event.success``) empties it again.
"""

from __future__ import annotations

import functools
import inspect
import logging
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
        return str(exc)
    if isinstance(exc, MemoryError):
        return ("the server ran out of memory for this request; nothing was changed. Ask for less: a smaller "
                "token budget, fewer or smaller tiles, a shorter max_seq_len or fewer images.")
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to read; write a flat JSON object such as {\"max_tiles\": 6}."
    if isinstance(exc, OverflowError):
        return f"a number is too large to compute with ({exc}); use a value within the documented range."
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return (f"the server could not do this ({type(exc).__name__}{': ' + text if text else ''}). Your inputs are "
            "unchanged; try other values, or upload the image again.")


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
    if not isinstance(exc, (GridVLMError, MissingExtra)):
        log.exception("handler failed", exc_info=exc)
    text = message_for(exc)
    _remember(text)
    return gr.Error(text, duration=None, print_exception=False)


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
    return f"⚠️ {text}" if text else "⚠️ That did not work; see the message at the top right."


def clear_status() -> str:
    return ""


def with_status(event, status) -> None:
    """After `event`: its error sentence into `status` when it failed, `status` emptied when it succeeded."""
    event.failure(show_status, None, status, queue=False, show_progress="hidden", api_visibility="private")
    event.success(clear_status, None, status, queue=False, show_progress="hidden", api_visibility="private")


def forget(session_hash: str) -> None:
    with _LOCK:
        _LAST.pop(session_hash, None)

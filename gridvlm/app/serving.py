"""What keeps one public server safe for many users: shared concurrency limits, the upload component that leaves
no files behind, and the temp dir's hygiene (gridvlm's own folder, uploads of ended sessions, a bound on disk).

- `CPU` and `MODEL`: keyword arguments for every event listener. Events that share a ``concurrency_id`` share
  one limit, so at most `CPU_CONCURRENCY` CPU-heavy events (upload, plan, views, compare, pack, export) and
  `MODEL_CONCURRENCY` model events (load, chat, attention) run at once, whatever the mix.
- `UploadFile`: gr.File without the empty temp file gradio's File makes for every file of every event.
- `own_dir()`: gridvlm's own files (exports, tiny models) in one folder, emptied at start and on exit.
- `track_upload` / `session_ended`: an upload is deleted when the last session holding it ends.
- `check_disk`: the temp dir's total stays under `Limits.max_temp_bytes`.
- `one_at_a_time`: a second identical call of a session while the first runs does nothing (gradio's dropdown
  sends ``input`` twice for one choice).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import NamedString

from gridvlm import limits as L

from .errors import session_id

CPU_CONCURRENCY = 2  # CPU-heavy events running at once, all kinds together (a basic Space has 2 vCPUs)
MODEL_CONCURRENCY = 1  # model events at once: one model forward at a time shares the machine fairly
CPU = dict(concurrency_id="cpu", concurrency_limit=CPU_CONCURRENCY)
MODEL = dict(concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY)


class UploadFile(gr.File):
    """gr.File whose `type="filepath"` hands over the uploaded file's path without creating (and leaking) the
    empty ``NamedTemporaryFile`` gradio's File makes per file per event. Same component in the browser."""

    is_template = True  # the browser draws it as gr.File

    def _process_single_file(self, f: FileData) -> NamedString | bytes:
        if self.type != "filepath":
            return super()._process_single_file(f)
        from gradio_client import utils as client_utils

        if self.file_types and not client_utils.is_valid_file(f.path, self.file_types):
            raise gr.Error(f"this file type cannot be used here; upload one of {', '.join(self.file_types)}",
                           print_exception=False)
        return NamedString(f.path)


# ---------------------------------------------------------------------------------------------------------------
# Duplicate events

_RUNNING: set[tuple] = set()  # (session, handler, its arguments) of the calls running now
_RUNNING_LOCK = threading.Lock()


def _argument_key(value) -> object:
    """An argument as part of a call's identity: plain values by value, anything else (the session's own state
    objects, which gradio hands every event of the session as the same object) by identity."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_argument_key(v) for v in value)
    return ("object", id(value))


def one_at_a_time(fn):
    """`fn` for an event that gradio 6.31 may send twice at once: its dropdown dispatches ``input`` on a choice and
    again on the blur that follows it, so one choice would plan (and redraw the page) twice. A call identical to
    one of the same session that is still running returns gr.skip(), which changes nothing on the page; outside
    a request (tests, scripts) every call runs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        session = session_id()
        if session is None:
            return fn(*args, **kwargs)
        key = (session, fn.__qualname__, _argument_key(args), _argument_key(tuple(sorted(kwargs.items()))))
        with _RUNNING_LOCK:
            if key in _RUNNING:
                return gr.skip()
            _RUNNING.add(key)
        try:
            return fn(*args, **kwargs)
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(key)

    return wrapper


# ---------------------------------------------------------------------------------------------------------------
# Temp dir


def gradio_temp_dir() -> Path:
    """Where gradio keeps uploads and served files ($GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def own_dir() -> Path:
    """gridvlm's own files (exports, tiny models), under gradio's temp dir so that they can be served."""
    return gradio_temp_dir() / "gridvlm"


def clean_own_dir() -> None:
    shutil.rmtree(own_dir(), ignore_errors=True)


def prepare_temp_dir(port: int) -> Path:
    """Before the demo is built: give the server a temp dir of its own (unless $GRADIO_TEMP_DIR names one), empty
    it — uploads a crash left behind included — and empty it again on exit. Returns the folder."""
    chosen = not os.environ.get("GRADIO_TEMP_DIR")
    if chosen:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(tempfile.gettempdir()) / f"gridvlm-app-{port}")
    root = gradio_temp_dir()
    target = root if chosen else own_dir()
    shutil.rmtree(target, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    return root


_HOLDERS: dict[str, set[str]] = {}  # upload path -> sessions showing it
_SESSIONS: dict[str, set[str]] = {}  # session -> its uploads
_LOCK = threading.Lock()


def track_upload(path: str, session: str | None) -> None:
    """Remember that `session` holds the upload at `path` (only files in gradio's temp dir, never our assets)."""
    if not session or not _is_upload(path):
        return
    with _LOCK:
        _HOLDERS.setdefault(path, set()).add(session)
        _SESSIONS.setdefault(session, set()).add(path)


def session_ended(session: str | None) -> list[str]:
    """Delete the uploads no session holds any more once `session` ended; returns the deleted paths."""
    if not session:
        return []
    with _LOCK:
        mine = _SESSIONS.pop(session, set())
        orphans = []
        for path in mine:
            holders = _HOLDERS.get(path, set())
            holders.discard(session)
            if not holders:
                _HOLDERS.pop(path, None)
                orphans.append(path)
    for path in orphans:
        _remove_upload(path)
    return orphans


_SHIPPED: dict[tuple[str, int], Path] = {}  # (file name, bytes) -> a file the app ships (an example image)


def ships(paths) -> None:
    """Name the app's own files (the example images). gradio serves them, and the file box's default, from copies
    in its temp dir that look like uploads but are shared by every session: such a copy is never deleted (else the
    first session to end takes the default image away from everyone after it)."""
    for path in map(Path, paths):
        _SHIPPED[(path.name, path.stat().st_size)] = path


def _is_shipped_copy(p: Path) -> bool:
    import filecmp

    try:
        original = _SHIPPED.get((p.name, p.stat().st_size))
        return original is not None and filecmp.cmp(original, p, shallow=False)
    except OSError:
        return False


def _is_upload(path: str) -> bool:
    try:
        p, root = Path(path).resolve(), gradio_temp_dir().resolve()
    except OSError:
        return False
    return root in p.parents and own_dir().resolve() not in p.parents and not _is_shipped_copy(p)


def _remove_upload(path: str) -> None:
    p = Path(path)
    p.unlink(missing_ok=True)
    try:
        p.parent.rmdir()  # gradio keeps each upload in a folder of its own
    except OSError:
        pass


def disk_used(root: Path | None = None) -> tuple[int, int]:
    """(bytes, files) under gradio's temp dir."""
    total = files = 0
    for folder, _, names in os.walk(root or gradio_temp_dir()):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
                files += 1
            except OSError:
                pass
    return total, files


def check_disk(new_upload: str | None = None) -> None:
    """Keep the temp dir under `Limits.max_temp_bytes`: gridvlm's own files go first; when that is not enough the
    new upload is deleted and refused with a sentence."""
    limit = L.active().max_temp_bytes
    used, _ = disk_used()
    if used <= limit:
        return
    clean_own_dir()
    used, _ = disk_used()
    if used <= limit:
        return
    if new_upload and _is_upload(new_upload):
        _remove_upload(new_upload)
    raise L.LimitError(f"the server's space for uploads is full ({used / 2**20:,.0f} MB of "
                       f"{limit / 2**20:,.0f} MB, limit max_temp_bytes); try again in a few minutes, when other "
                       "sessions have ended, or pick an example")

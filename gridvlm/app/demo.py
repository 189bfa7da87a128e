"""The whole app: the four tabs in one gr.Blocks, queued, and how it is served.

    python -m gridvlm.app     # or `gridvlm app`, or `python app.py` (the Spaces entry point)

Serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (default 127.0.0.1:7860), no share link. Model code (torch,
transformers) is imported only when the Chat tab first uses a model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr

from gridvlm import limits

from . import display, errors, serving

MAX_FILE_SIZE = "25mb"  # per upload; larger files are refused by gradio before any handler runs
CSS = Path(__file__).resolve().parent / "assets" / "app.css"  # phone layout, gallery captions (package data)
PLOTLY_ONCE_JS = CSS.with_name("plotly_once.js")  # each gr.Plot update drawn once, not twice (see the file)
QUEUE_SIZE = 64  # events waiting beyond that are refused with "queue full" rather than piling up


def build_demo(budget: limits.Limits | None = None) -> gr.Blocks:
    """The app, queued, under `budget` (default: `Limits.from_env()`, read now). Per-user values (the upload's
    path and preview, the plan, the packing) live in gr.State; CPU-heavy and model events share one concurrency
    limit each (`serving.CPU`, `serving.MODEL`)."""
    from .chat_tab import build_chat_tab
    from .compare_tab import build_compare_tab
    from .pack_tab import build_pack_tab
    from .slice_tab import build_slice_tab

    _writable_temp_dir()
    budget = limits.configure(budget or limits.Limits.from_env())
    display.IMAGES.max_bytes = budget.image_cache_bytes
    serving.ships(display.EXAMPLES)  # gradio's copies of them are shared, never deleted with a session
    ttl = budget.state_ttl_s
    with gr.Blocks(title="gridvlm — how VLMs slice images", delete_cache=(600, ttl + 600)) as demo:
        ws = gr.State(None, time_to_live=ttl)
        plan_state = gr.State(None, time_to_live=ttl)
        gr.Markdown("# gridvlm\nHow vision-language models cut an image into tiles and visual tokens — computed "
                    "exactly as each model's reference code does.")
        build_slice_tab(demo, ws, plan_state)
        build_compare_tab(ws)
        build_pack_tab(ttl)
        build_chat_tab(ws, plan_state)  # @spaces.GPU (ZeroGPU) wraps only its generation
        demo.unload(_session_ended)
    return demo.queue(default_concurrency_limit=serving.CPU_CONCURRENCY, max_size=QUEUE_SIZE)


def _session_ended(request: gr.Request) -> None:
    """The page closed: its uploads (unless another session shows them) and its remembered error go."""
    serving.session_ended(request.session_hash)
    errors.forget(request.session_hash)


def prepare_server() -> None:
    """Before building the demo that will be served: a temp dir of the server's own, emptied now and on exit."""
    serving.prepare_temp_dir(_port())


def _port() -> int:
    return int(os.environ.get("GRADIO_SERVER_PORT", "7860"))


def _writable_temp_dir() -> None:
    """gradio caches files in <tmp>/gradio unless GRADIO_TEMP_DIR says otherwise; when another account on the
    machine made that folder first, this one cannot write there and the app fails at start. Then (and only when
    GRADIO_TEMP_DIR is unset) use a folder of this account's own."""
    default = Path(tempfile.gettempdir()) / "gradio"
    if not os.environ.get("GRADIO_TEMP_DIR") and default.exists() and not os.access(default, os.W_OK | os.X_OK):
        os.environ["GRADIO_TEMP_DIR"] = str(default.with_name(f"gradio-{os.getuid()}"))


def _stop_on_sigterm() -> None:
    """A container platform stops the server with SIGTERM, which by default ends Python without running its exit
    handlers (and so without emptying the temp dir): treat it as Ctrl-C, which gradio closes cleanly."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def page_head() -> str:
    """What the page's <head> gets: the app's CSS (not css_paths: gradio scopes those under .contain, below the
    page) and the script that draws each figure update once."""
    return f"<style>{CSS.read_text()}</style><script>{PLOTLY_ONCE_JS.read_text()}</script>"


def launch(demo: gr.Blocks | None = None) -> None:
    """Serve `demo` (default: `prepare_server()` then a new `build_demo()`) until interrupted (Ctrl-C or SIGTERM;
    either way the server's temp dir is emptied on the way out)."""
    _stop_on_sigterm()
    port = _port()
    if demo is None:
        prepare_server()
        demo = build_demo()
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=port,
        share=False,
        max_file_size=MAX_FILE_SIZE,
        head=page_head(),
        # gradio's run history copies every event's inputs and outputs (upload paths, figures of up to ~0.5 MB) into
        # the visitor's localStorage and rewrites the whole list on every event: once the Compare figure was in it,
        # a strategy switch took 3× longer in the browser
        run_history=False,
    )

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

from .chat_tab import build_chat_tab
from .compare_tab import build_compare_tab
from .pack_tab import build_pack_tab
from .slice_tab import build_slice_tab

MAX_FILE_SIZE = "25mb"  # per upload; larger files are refused by gradio before any handler runs
CONCURRENCY = 4  # events of one kind running at once, so one slow user does not block the others
QUEUE_SIZE = 64  # events waiting beyond that are refused with "queue full" rather than piling up
STATE_TTL_S = 1800  # s; a user's decoded image (~36 MB at 12 MP) is dropped this long after it was set


def build_demo() -> gr.Blocks:
    """The app, queued. Per-user values (the decoded image, the plan, the packing) live in gr.State."""
    _writable_temp_dir()
    with gr.Blocks(title="gridvlm — how VLMs slice images", delete_cache=(3600, 7200)) as demo:
        ws = gr.State(None, time_to_live=STATE_TTL_S)
        plan_state = gr.State(None, time_to_live=STATE_TTL_S)
        gr.Markdown("# gridvlm\nHow vision-language models cut an image into tiles and visual tokens — computed "
                    "exactly as each model's reference code does.")
        build_slice_tab(demo, ws, plan_state)
        build_compare_tab(ws)
        build_pack_tab(STATE_TTL_S)
        build_chat_tab(ws, plan_state)  # @spaces.GPU (ZeroGPU) wraps only its generation
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)


def _writable_temp_dir() -> None:
    """gradio caches files in <tmp>/gradio unless GRADIO_TEMP_DIR says otherwise; when another account on the
    machine made that folder first, this one cannot write there and the app fails at start. Then (and only when
    GRADIO_TEMP_DIR is unset) use a folder of this account's own."""
    default = Path(tempfile.gettempdir()) / "gradio"
    if not os.environ.get("GRADIO_TEMP_DIR") and default.exists() and not os.access(default, os.W_OK | os.X_OK):
        os.environ["GRADIO_TEMP_DIR"] = str(default.with_name(f"gradio-{os.getuid()}"))


def launch(demo: gr.Blocks | None = None) -> None:
    """Serve `demo` (default: a new `build_demo()`) until interrupted."""
    (demo or build_demo()).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        share=False,
        max_file_size=MAX_FILE_SIZE,
    )

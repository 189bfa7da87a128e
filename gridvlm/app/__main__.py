"""python -m gridvlm.app: serve the app (GRADIO_SERVER_NAME:GRADIO_SERVER_PORT, default 127.0.0.1:7860)."""

from . import launch

launch()

"""One rule for every handler of the app: a user's mistake (GridVLMError) becomes a readable gr.Error."""

from __future__ import annotations

import functools

from gridvlm.errors import GridVLMError
from gridvlm.extras import MissingExtra


def for_people(fn):
    """Bad input (GridVLMError), or a feature whose extra is not installed (MissingExtra), becomes a readable
    gr.Error in the browser instead of a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (GridVLMError, MissingExtra) as exc:
            import gradio as gr

            raise gr.Error(str(exc), print_exception=False) from None

    return wrapper

"""Optional dependencies: a missing one is named together with the extra that installs it.

    pip install 'gridvlm[models]'   # torch, transformers: pixel_values, gridvlm.models, attention capture
    pip install 'gridvlm[app]'      # gradio, plotly, kaleido: gridvlm.viz and the app

Standard library only, so the core can import it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

EXTRAS = {"torch": "models", "transformers": "models", "gradio": "app", "plotly": "app", "kaleido": "app"}


class MissingExtra(ModuleNotFoundError):
    """An optional dependency is not installed; the message says which `pip install 'gridvlm[...]'` adds it."""


def check(*modules: str, extra: str | None = None, what: str | None = None) -> None:
    """Raise MissingExtra for the first of `modules` that is not installed, without importing any of them."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a blocked entry in sys.modules
            found = False
        if not found:
            raise _missing(module, extra, what)


def require(module: str, extra: str | None = None, what: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingExtra naming the extra (default: EXTRAS[top-level name]) that installs it.

    `what` names the feature that needs it, for the message ("gridvlm.pixel_values needs torch ...").
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name not in (module, module.partition(".")[0]):  # it is installed; one of *its* imports is not
            raise
        raise _missing(module, extra, what) from None


def _missing(module: str, extra: str | None, what: str | None) -> MissingExtra:
    top = module.partition(".")[0]
    extra = extra or EXTRAS.get(top, "models")
    return MissingExtra(f"{what or 'this'} needs {top}, which is not installed: pip install 'gridvlm[{extra}]'",
                        name=top)

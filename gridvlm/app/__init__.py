"""gridvlm's Gradio app: one module per tab (`slice_tab`, `compare_tab`, `pack_tab`, `chat_tab` with its
`attention_panel`), the error wrapper (`errors`) and the display text (`display`, no gradio). The only part of
gridvlm that imports gradio; `import gridvlm.app` itself does not, `build_demo` and `launch` do on first use.

    from gridvlm.app import build_demo
    build_demo().launch()
"""

_LAZY = {"build_demo": "demo", "launch": "demo", "prepare_server": "demo"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        from ..extras import check

        check("gradio", "plotly", extra="app", what="gridvlm's app")
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gridvlm.app' has no attribute {name!r}")


__all__ = list(_LAZY)

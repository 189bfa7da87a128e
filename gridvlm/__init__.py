"""gridvlm: how vision-language models slice images, exactly as their reference code does.

Planning (`plan`, `fit_budget`, `list_strategies`, `strategy_info`) and packing (`pack`) are pure and
import neither torch, PIL nor gradio. Pixel functions (`load_image`, `views`, `pixel_values`) are
imported on first use.
"""

from .errors import GridVLMError, ImageError, PlanError
from .geometry import Plan, Tile
from .strategies import (
    Explanation, ParamSpec, StrategyInfo, explain, fit_budget, list_families, list_strategies, plan, strategy_info,
)

__version__ = "0.1.0"

_LAZY = {
    "load_image": "imaging",
    "image_size": "imaging",
    "views": "pixels",
    "pixel_values": "pixels",
    "pack": "packing",
    "Packing": "packing",
    "compare_layouts": "packing",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'gridvlm' has no attribute {name!r}")


__all__ = [
    "GridVLMError", "ImageError", "PlanError", "Plan", "Tile", "ParamSpec", "StrategyInfo", "fit_budget",
    "list_families", "list_strategies", "plan", "explain", "Explanation", "strategy_info", *_LAZY,
]

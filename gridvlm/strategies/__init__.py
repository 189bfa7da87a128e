"""Every slicing strategy, registered by name. Pure arithmetic: no pixels, torch, PIL or gradio.

One module per family: `native` (one view), `anyres` (best canvas from a list), `slices`
(variable slices), `grids` (resize-and-tile grids).
"""

from . import anyres, grids, native, slices  # noqa: F401  (importing registers the strategies)
from .registry import (
    BudgetKnob,
    ParamSpec,
    StrategyInfo,
    _REGISTRY,
    fit_budget,
    image_size_of,
    list_strategies,
    plan,
    strategy_info,
)

# The order users see in the CLI and the app's dropdown: from one view to tiling to native resolution.
ORDER = (
    "llava-1.5", "fixed-grid", "llava-1.5-hd", "llava-next", "llava-onevision", "llava-uhd", "minicpm-v",
    "ureader", "docowl-1.5", "internvl", "deepseek-vl2", "qwen2-vl", "idefics3", "smolvlm", "llava-mini", "navit",
)
_ordered = {name: _REGISTRY.pop(name) for name in ORDER}
_ordered.update(_REGISTRY)  # anything registered later keeps its place after the known ones
_REGISTRY.clear()
_REGISTRY.update(_ordered)

__all__ = [
    "BudgetKnob", "ParamSpec", "StrategyInfo", "fit_budget", "image_size_of", "list_strategies", "plan",
    "strategy_info",
]

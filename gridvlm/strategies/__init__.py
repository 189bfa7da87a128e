"""Every slicing strategy, registered by name. Pure arithmetic: no pixels, torch, PIL or gradio.

Each module in this package holds one family of strategies and registers them when imported; every module is
imported here, so a new strategy is one new file. `registry` and `reference` hold the shared machinery and data.
"""

import importlib
import pkgutil

from .registry import (
    BudgetKnob,
    Candidate,
    Explanation,
    explain,
    ParamSpec,
    PatchLayout,
    PixelRecipe,
    StrategyInfo,
    fit_budget,
    image_size_of,
    list_families,
    list_strategies,
    plan,
    register,
    strategy_info,
    unregister,
)

_SUPPORT = {"registry", "reference"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _SUPPORT and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BudgetKnob", "Candidate", "Explanation", "explain", "ParamSpec", "PatchLayout", "PixelRecipe", "StrategyInfo", "fit_budget", "image_size_of",
    "list_families", "list_strategies", "plan", "register", "strategy_info", "unregister",
]

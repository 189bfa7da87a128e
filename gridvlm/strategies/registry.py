"""The strategy registry: what each strategy is (`StrategyInfo`), and the entry points ``plan`` and ``fit_budget``.

A strategy module calls `register(StrategyInfo(...))` once per strategy with everything gridvlm knows about it:
planner, parameters, budget knob, how its reference makes pixels (`PixelRecipe`), the reference model for the
compute estimates, the public reference vectors that check it and its place in the listing. Every other part
of gridvlm (pixels, metrics, figures, CLI, app, tests) reads those facts from `strategy_info(name)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import PlanError
from ..geometry import Plan
from .reference import CLIP, Normalisation, ReferenceModel

MAX_SIDE = 1_000_000  # px; any real image is smaller, and the integer maths stays exact far beyond it


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a strategy: its type, default (the reference checkpoint's value) and valid range."""

    kind: str  # "int", "float", "bool", "str" or "pairs" (a list of [a, b] positive int pairs)
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False  # None is a valid value (meaning stated in help)

    @property
    def type(self) -> type:
        """The Python type of a value; "pairs" are lists of [a, b] lists."""
        return {"int": int, "float": float, "bool": bool, "str": str, "pairs": list}[self.kind]

    @property
    def range(self) -> tuple[float | None, float | None] | None:
        """(min, max) for numbers, None for the others."""
        return (self.min, self.max) if self.kind in ("int", "float") else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "default": self.default,
            "help": self.help,
            "choices": None if self.choices is None else list(self.choices),
            "min": self.min,
            "max": self.max,
            "nullable": self.nullable,
        }


@dataclass(frozen=True)
class BudgetKnob:
    """The parameter `fit_budget` moves, and the values it may take for a given token budget.

    `values(params, max_tokens)` lists candidate values from the smallest setting to the largest.
    When `monotone` is true the token count never falls as the value grows, so a binary search is used.
    `segments(params, max_tokens, image_size)`, when given, replaces `values` with several runs that are each
    monotone (a knob whose token count dips once, like Qwen2-VL's max_pixels on thin images); the best plan
    of all runs wins.
    """

    param: str
    description: str
    values: Callable[[dict[str, Any], int], Sequence[Any]]
    monotone: bool = False
    segments: Callable[[dict[str, Any], int, tuple[int, int]], list[Sequence[Any]]] | None = None


def subset_knob(param: str, tiles_of: Callable[[list[int], dict[str, Any]], int] | None = None) -> BudgetKnob:
    """A knob over a list parameter (pinpoints, grids, anchors…): the list cut to entries of at most k tiles."""
    count = tiles_of or (lambda pair, _p: pair[0] * pair[1])

    def values(p: dict[str, Any], _max_tokens: int) -> list[list[list[int]]]:
        sizes = sorted({count(pair, p) for pair in p[param]})
        return [[pair for pair in p[param] if count(pair, p) <= k] for k in sizes]

    return BudgetKnob(param, f"{param} with at most k tiles", values)


RESAMPLING_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")  # PIL's names


@dataclass(frozen=True)
class PatchLayout:
    """A reference that flattens its view into patches (Qwen2-VL style): `(patches, 3·T·p·p)` rows, in
    `merge_size × merge_size` blocks, the still image repeated over `temporal_patch_size` frames."""

    patch_size: int
    merge_size: int
    temporal_patch_size: int = 2


@dataclass(frozen=True)
class PixelRecipe:
    """How a strategy's reference makes the pixels of its views; `gridvlm.pixels` follows it for every plan.

    The default is "resize each canvas or view once, then cut": the plan's geometry (boxes, canvas, content
    boxes) says everything else. The flags name the references whose order of operations differs.
    """

    normalisation: Normalisation = CLIP  # the checkpoint's image_mean / image_std, not a class default
    resample: str = "bicubic"  # PIL filter, one of RESAMPLING_FILTERS
    pad_colour: tuple[int, int, int] = (0, 0, 0)  # RGB 0..255 that fills padding
    pad_to_square_first: bool = False  # paste on a max(w, h) square of pad_colour, THEN resize (expand2square)
    first_resize: tuple[int, int] | None = None  # (w, h) the whole image is resized to before the plan's resizes
    thumbnail_from_canvas: bool = False  # the global view squashes the resized canvas, not the original
    float_resize: bool = False  # exact path: crop, to float 0..1, torch bilinear antialiased interpolation
    patches: PatchLayout | None = None  # model input is a flat patch sequence (see PatchLayout)
    crop_first: bool = False  # views are cropped out of the image, THEN resized: the filter sees nothing outside

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLING_FILTERS:
            raise ValueError(f"resample must be one of {RESAMPLING_FILTERS}, got {self.resample!r}")


@dataclass(frozen=True)
class Candidate:
    """One option the reference weighed for an image: a grid, a canvas, a slice count, an anchor, a resize."""

    label: str  # what it is, in the reference's terms: "2×3 tiles (672×1008 canvas)", "resize to 1036×784"
    scores: dict[str, float]  # the numbers the reference ranks by, named as a person would ("effective resolution")
    chosen: bool = False  # the one the reference took (exactly one candidate per explanation)
    grid: tuple[int, int] | None = None  # (rows, cols) it would give, when it is a grid
    note: str = ""  # why it won or lost, when the scores alone do not say (a tie-break, a limit, a refusal)


@dataclass(frozen=True)
class Explanation:
    """Why a strategy cut an image as it did: the candidates the reference considered and which won."""

    strategy: str
    image_size: tuple[int, int]
    rule: str  # how the reference decides, in one or two sentences
    candidates: tuple[Candidate, ...]  # in the order the reference considers them
    decision: str  # which won and why, tie-breaks included

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if c.chosen)


@dataclass(frozen=True)
class StrategyInfo:
    """Everything gridvlm knows about one strategy. Only `name` … `planner` are required."""

    name: str
    family: str  # the group it is listed under ("anyres", "native resolution", …)
    summary: str
    reference: str  # the paper and code whose arithmetic the planner reproduces
    params: dict[str, ParamSpec]
    budget: str  # what fit_budget moves, in words
    planner: Callable[[int, int, dict[str, Any]], Plan] = field(repr=False, compare=False)
    knob: BudgetKnob | None = field(default=None, repr=False, compare=False)
    check: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False, compare=False)
    pixels: PixelRecipe = PixelRecipe()
    # When part of the recipe depends on the parameters or the image (a mode, a first resize):
    # (pixels, plan) -> the recipe for that plan. The normalisation never varies: it is the encoder's.
    pixels_for: Callable[[PixelRecipe, Plan], PixelRecipe] | None = field(default=None, repr=False, compare=False)
    reference_model: ReferenceModel | None = None  # encoder + LLM shapes for the compute estimates; None = unknown
    # Variant keys of the public reference vectors that check it; () = no runnable reference (the rule is the spec).
    vectors: tuple[str, ...] = ()
    order: float = 1000.0  # place in listings: lower first, then by name
    # The marker the prompt writes after each token row of a view (Pixtral's [IMG_BREAK], Fuyu's |NEWLINE|),
    # counted in text_tokens and drawn at each row's end; None = no per-row marker.
    row_break_token: str | None = None
    # (w, h, resolved params) -> why the reference chose this plan's grid/size (`explain`); None = a fixed rule.
    explainer: Callable[[int, int, dict[str, Any]], Explanation] | None = field(default=None, repr=False,
                                                                                 compare=False)

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: spec.default for name, spec in self.params.items()}

    def pixel_recipe(self, plan: Plan) -> PixelRecipe:
        """How the reference makes this plan's pixels."""
        return self.pixels if self.pixels_for is None else self.pixels_for(self.pixels, plan)


def at_most(strategy: str, low: str, high: str) -> Callable[[dict[str, Any]], None]:
    """A `StrategyInfo.check` that refuses parameters where `low` exceeds `high` (min_tiles and max_tiles …)."""
    def check(p: dict[str, Any]) -> None:
        if p[low] > p[high]:
            raise PlanError(f"{strategy}: {low} ({p[low]}) must not exceed {high} ({p[high]})")
    return check


_REGISTRY: dict[str, StrategyInfo] = {}


def register(info: StrategyInfo) -> StrategyInfo:
    """Add a strategy; it is planned, listed, tested and shown in the app from then on."""
    if info.name in _REGISTRY:
        raise RuntimeError(f"strategy {info.name!r} registered twice")
    _REGISTRY[info.name] = info
    return info


def unregister(name: str) -> None:
    """Remove a strategy registered with `register` (for tests and plug-ins; the built-in ones stay)."""
    _REGISTRY.pop(name, None)


def list_strategies(family: str | None = None) -> list[str]:
    """Registered strategy names in listing order (by `StrategyInfo.order`, then by name); only `family`'s when
    given."""
    names = sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].order, name))
    return names if family is None else [n for n in names if _REGISTRY[n].family == family]


def list_families() -> list[str]:
    """The families strategies are listed under, each in the place of its first strategy."""
    return list(dict.fromkeys(_REGISTRY[name].family for name in list_strategies()))


def strategy_info(name: str) -> StrategyInfo:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise PlanError(f"unknown strategy {name!r}; known strategies: {', '.join(list_strategies())}")
    return _REGISTRY[name]


# ---------------------------------------------------------------------------------------------
# Inputs


def image_size_of(image_or_size: Any) -> tuple[int, int]:
    """(w, h) from a size pair or a PIL image (its upright size: EXIF rotations 5–8 swap the sides)."""
    if hasattr(image_or_size, "size") and hasattr(image_or_size, "getexif"):
        w, h = image_or_size.size
        try:
            orientation = image_or_size.getexif().get(0x0112, 1)
        except Exception:  # a broken EXIF block does not change the pixel size
            orientation = 1
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        return _check_size((w, h))
    return _check_size(image_or_size)


def _check_size(size: Any) -> tuple[int, int]:
    try:
        w, h = size
    except (TypeError, ValueError):
        raise PlanError(f"image size must be (width, height) in pixels or a PIL image, got {size!r}") from None
    for name, v in (("width", w), ("height", h)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
            raise PlanError(f"image {name} must be a whole number of pixels, got {v!r}")
        if not 1 <= v <= MAX_SIDE:
            raise PlanError(f"image {name} must be between 1 and {MAX_SIDE:,} pixels, got {v!r}")
    return int(w), int(h)


def resolve_params(info: StrategyInfo, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, every value checked against its spec; PlanError names what would work."""
    unknown = sorted(set(params) - set(info.params))
    if unknown:
        known = ", ".join(info.params) or "none"
        raise PlanError(f"{info.name}: unknown parameter(s) {', '.join(unknown)}; its parameters are: {known}")
    resolved = {}
    for name, spec in info.params.items():
        value = params.get(name, spec.default)
        resolved[name] = _check_value(info.name, name, spec, value)
    if info.check is not None:
        info.check(resolved)
    return resolved


def _check_value(strategy: str, name: str, spec: ParamSpec, value: Any) -> Any:
    where = f"{strategy}: parameter {name}"
    if value is None:
        if spec.nullable:
            return None
        raise PlanError(f"{where} cannot be None ({spec.help})")
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise PlanError(f"{where} must be true or false, got {value!r}")
        return value
    if spec.kind == "str":
        if not isinstance(value, str) or (spec.choices and value not in spec.choices):
            raise PlanError(f"{where} must be one of {', '.join(map(repr, spec.choices))}, got {value!r}")
        return value
    if spec.kind == "pairs":
        return _check_pairs(where, value)
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise PlanError(f"{where} must be a whole number, got {value!r}")
        value = int(value)
    elif spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PlanError(f"{where} must be a number, got {value!r}")
        value = float(value)
    if spec.choices is not None and value not in spec.choices:
        raise PlanError(f"{where} must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        raise PlanError(f"{where} must be between {spec.min} and {spec.max}, got {value!r}")
    return value


def _check_pairs(where: str, value: Any) -> list[list[int]]:
    try:
        pairs = [list(p) for p in value]
    except TypeError:
        raise PlanError(f"{where} must be a list of [a, b] pairs, got {value!r}") from None
    if not pairs:
        raise PlanError(f"{where} must not be empty")
    for p in pairs:
        if len(p) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in p):
            raise PlanError(f"{where} must hold pairs of positive whole numbers, got {p!r}")
    return pairs


# ---------------------------------------------------------------------------------------------
# Entry points


def plan(image_or_size: Any, strategy: str, **params: Any) -> Plan:
    """The plan `strategy` makes for an image: views, boxes, token counts, exactly as its reference."""
    info = strategy_info(strategy)
    w, h = image_size_of(image_or_size)
    resolved = resolve_params(info, params)
    try:
        return info.planner(w, h, resolved)
    except (ZeroDivisionError, OverflowError) as exc:  # a degenerate size the reference cannot handle either
        raise PlanError(f"{strategy} cannot plan a {w}×{h} image with {resolved}: {exc}") from None


def explain(image_or_size: Any, strategy: str, **params: Any) -> Explanation:
    """Why `strategy` cuts this image as `plan` does: the candidates its reference considered, with the scores it
    ranks them by, and which won (tie-breaks included). The chosen candidate is the plan's grid or size."""
    info = strategy_info(strategy)
    w, h = image_size_of(image_or_size)
    resolved = resolve_params(info, params)
    if info.explainer is not None:
        try:
            return info.explainer(w, h, resolved)
        except (ZeroDivisionError, OverflowError) as exc:
            raise PlanError(f"{strategy} cannot plan a {w}×{h} image with {resolved}: {exc}") from None
    found = plan((w, h), strategy, **params)
    rows, cols = found.grid
    only = Candidate(f"{rows}×{cols} grid, {found.num_views} view{'s' * (found.num_views != 1)}",
                     {"visual tokens": float(found.token_count)}, chosen=True, grid=found.grid)
    return Explanation(strategy, (w, h), f"{strategy} has no choice to make: {info.summary}", (only,),
                       "its rule gives one plan for this image; there were no alternatives to weigh")


def fit_budget(image_or_size: Any, strategy: str, max_tokens: int, **params: Any) -> Plan:
    """The plan with the most visual tokens that is still ``<= max_tokens``, moving the strategy's knob."""
    info = strategy_info(strategy)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise PlanError(f"max_tokens must be a positive whole number, got {max_tokens!r}")
    size = image_size_of(image_or_size)
    knob = info.knob
    if knob is None:
        found = plan(size, strategy, **params)
        if found.token_count > max_tokens:
            raise PlanError(
                f"{strategy} always uses {found.token_count} visual tokens for a {size[0]}×{size[1]} image; "
                f"max_tokens={max_tokens} is below that"
            )
        return found
    if knob.param in params:
        raise PlanError(f"{strategy}: fit_budget sets {knob.param} itself; leave it out")
    base = resolve_params(info, params)
    values = knob.values(base, max_tokens)
    runs = knob.segments(base, max_tokens, size) if knob.segments else [values]

    def attempt(value: Any) -> Plan | None:
        try:
            return plan(size, strategy, **{**params, knob.param: value})
        except PlanError:
            return None

    found = [_search(run, attempt, max_tokens, knob.monotone) for run in runs]
    best = max((p for p in found if p is not None), key=lambda p: p.token_count, default=None)
    if best is None:
        smallest = next((p for p in map(attempt, values) if p is not None), None)
        minimum = f"its smallest setting needs {smallest.token_count}" if smallest else "no setting is valid"
        raise PlanError(
            f"{strategy} cannot fit a {size[0]}×{size[1]} image into {max_tokens} visual tokens by moving "
            f"{knob.param}: {minimum}"
        )
    return best


def _search(values: Sequence[Any], attempt, max_tokens: int, monotone: bool) -> Plan | None:
    if not monotone:
        best = None
        for value in values:
            found = attempt(value)
            if found is not None and found.token_count <= max_tokens:
                if best is None or found.token_count > best.token_count:
                    best = found
        return best
    lo, hi, best = 0, len(values) - 1, None
    while lo <= hi:  # largest index whose plan fits
        mid = (lo + hi) // 2
        found = attempt(values[mid])
        if found is not None and found.token_count <= max_tokens:
            best, lo = found, mid + 1
        else:
            hi = mid - 1
    return best

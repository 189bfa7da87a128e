"""Pixels as the encoder sees them: `views` (uint8 images) and `pixel_values` (normalised float32 tensors).

Every view is rendered from the plan's geometry (`Tile.box`, `canvas_box`, `content_box`, `Plan.canvas_size`),
so every registered strategy works without code of its own. What differs between references is only *how*
the pixels are made, and each strategy states that in its `PixelRecipe` (`strategy_info(name).pixel_recipe(plan)`):
the resampling filter, the pad colour, the encoder's mean/std that `pixel_values` defaults to, and flags for the
references whose order of operations is not "resize once, then cut" (`_square_pad_view`: pad to a square *then*
resize; `_uhd_release_views`: crop, then torch bilinear antialiased interpolation in float; a first resize of the
whole image; a global view squashed from the canvas; a flat patch layout; views cropped before resizing).

Two paths share this code:

- `exact=True` decodes at full resolution and follows the reference step by step, including transformers'
  arithmetic (`uint8 -> float64 * (1/255) -> float32`, then `(x - mean) / std` in float32). It equals the
  transformers PIL-backend processors exactly (0/255 apart; tests/test_pixels_reference.py, LLaVA-1.5/NeXT/
  OneVision, Qwen2-VL, Idefics3, InternVL, MiniCPM-V), and the other families' to within 1/255.
- the default fast path decodes a JPEG once, at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling via `draft`) when
  the error that scale is measured to cost every view stays within `DRAFT_ERROR_BUDGET` (`_draft_factor`),
  resizes each canvas or view once — bilinear and bicubic with torch's antialiased uint8 interpolation, which
  uses PIL's kernels and is 4-5× faster than PIL here (`_torch_resize`, reading PIL's own memory where it can
  be borrowed), other filters with PIL in horizontal bands on both cores — and writes every view straight
  into one preallocated float32 output: padding while the image decodes, each view's piece as soon as the
  resize it comes from is done, the two cores taking whatever is ready (`_run_graph`).
"""

from __future__ import annotations

import ctypes
import heapq
import math
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

import numpy as np
from PIL import Image

from .errors import PlanError
from .geometry import Plan, Tile
from .limits import check_views
from .imaging import ImageSource, exif_orientation, open_for_decode, to_upright_rgb
from .strategies import PixelRecipe, strategy_info
from .strategies.registry import RESAMPLING_FILTERS

if TYPE_CHECKING:
    import torch

__all__ = [
    "DRAFT_ERROR_BUDGET",
    "FAST_MEAN_ABS_BOUND",
    "pixel_values",
    "qwen_patchify",
    "qwen_pixel_values",
    "views",
]

_FILTERS = {name: getattr(Image.Resampling, name.upper()) for name in RESAMPLING_FILTERS}

# Fast path, DCT scale: what decoding at 1/k costs a view, as a function of r = the view's output pixels per
# *decoded* pixel (its resize ratio × k). Worst mean |fast − exact| over a view's content, in 1/255, measured
# per view on 8 JPEGs (photos of 1200×1600 to 5120×2880, an illustration with hard edges, a text page, a chart)
# × 11 strategies × k = 2, 4, 8; upper envelope, linear in between (bench/draft_error.py re-measures it).
# Below r ≈ 0.4 the bicubic resize that follows hides the DCT's block-wise low-pass; near r = 1 it shows.
# Not every single view lies under it: re-measured, two views of the text page do (1.44 at r 0.6 under
# llava-1.5 at 1/4, 3.04 at r 0.8 under ureader at 1/2); the promise the tests hold is per image.
DRAFT_ERROR_CURVE = ((0.0, 0.6), (0.4, 0.6), (0.45, 1.0), (0.55, 1.2), (0.7, 1.75), (0.95, 2.4), (1.0, 2.5))
# A plan decodes at the largest 1/k whose predicted error, its views' curve values weighted by their content
# pixels over all output pixels, stays within this (1/255): a little over half the promise, room for photos not
# measured. The worst whole-image error seen at the scales it picks is 1.11/255 (bench/draft_error.py).
DRAFT_ERROR_BUDGET = 1.1
DRAFT_FACTORS = (8, 4, 2)
# Fast path: PIL's reducing_gap — shrink by an integer box filter first while the remaining factor stays >= 2,
# then resample. About 3× faster for large downscales (PNGs, JPEGs beyond 1/8), ~0.3/255 mean difference.
REDUCING_GAP = 2.0
# Promise of the fast path, tested: mean absolute difference from exact=True, in 0..1 pixel units, per image.
FAST_MEAN_ABS_BOUND = 2 / 255

View = Union[np.ndarray, "torch.Tensor"]  # uint8 (h, w, 3), or float32 (3, h, w) in 0..1 (UHD release, exact)


# ------------------------------------------------------------------------------------------------- public API


def views(image: ImageSource, plan: Plan, exact: bool = True) -> list[Image.Image]:
    """What the encoder sees: one uint8 RGB image per view, in `plan.views` order, each `view.input_size`.

    Rendered exactly as the reference does (as `pixel_values(..., exact=True)` before normalising); padding is
    filled with the strategy's pad colour (its `PixelRecipe.pad_colour`). `exact=False` takes `pixel_values`' fast routes
    (reduced-scale JPEG decoding, torch's resize if torch is already imported; same FAST_MEAN_ABS_BOUND) — for previews.
    `image` is anything `load_image` takes. Raises `PlanError` if the plan was made for another size,
    `ImageError` if the image cannot be read, `LimitError` if the views exceed `gridvlm.limits.active()`.
    """
    check_views(plan)
    src = _decode(image, plan, draft=1 if exact else _draft_factor(plan))
    out = []
    for v in _render(src, plan, exact=exact):
        if not isinstance(v, np.ndarray):  # float (3, h, w) in 0..1 -> uint8, as ToPILImage would round
            v = (v.clamp(0, 1) * 255).round().to(dtype=_torch().uint8).permute(1, 2, 0).numpy()
        out.append(Image.fromarray(np.ascontiguousarray(v), "RGB"))
    return out


def pixel_values(source: ImageSource, plan: Plan, mean=None, std=None, exact: bool = False):
    """Model-ready float32 tensors: `(views, 3, h, w)` when every view has the same input size, else a list of
    `(3, h, w)` tensors, in `plan.views` order. Values are `(pixel / 255 - mean) / std`, per channel.

    `source` is a path, bytes, a binary file object or a PIL image. `mean`/`std` (3 floats each, 0..1 units)
    default to the strategy's encoder (its `PixelRecipe.normalisation`).

    `exact=True` reproduces the reference processor: full-resolution decode, its resampling filter, padding and
    order of operations, and transformers' float64-then-float32 arithmetic; it matches the transformers PIL backends
    exactly where tested (tests/test_pixels_reference.py), else to within 1/255. The default fast path decodes a
    JPEG once at the smallest DCT scale whose measured error fits `DRAFT_ERROR_BUDGET` (`_draft_factor`), resizes
    each canvas or view once (torch's antialiased interpolation where it reproduces PIL's filter, else PIL,
    box-reducing large downscales first: `REDUCING_GAP`) and writes `x · 1/(255·std) − mean/std` straight into one
    preallocated output — the padding while the image decodes, each tile as soon as its canvas is resized —
    splitting the work over both cores. Its mean absolute difference from `exact=True`, in 0..1 pixel units after
    de-normalising, is at most 2/255 per image (`FAST_MEAN_ABS_BOUND`, tested on photos, an illustration and text).
    Besides the decoded image only the resized canvases and views are held (tiles are read from their canvas,
    padding is never stored in uint8), and torch reads the decoded image's own memory where Pillow lends it (one
    block: up to 16 MiB), else a uint8 copy of the rows it reads (3 bytes a pixel). A view at the image's own size
    is read from the decoded image itself.

    Raises `PlanError` if `plan.image_size` is not the image's upright size, `ImageError` for unreadable input.
    """
    check_views(plan)
    torch = _torch()
    mean, std = _normalisation(plan, mean, std)
    sizes = {tuple(t.input_size) for t in plan.views}
    if not exact:
        if len(sizes) == 1:
            (w, h), = sizes
            shapes = [(len(plan.views), 3, h, w)]  # one (views, 3, h, w) block
        else:
            shapes = [(3, t.input_size[1], t.input_size[0]) for t in plan.views]
        jobs, layouts = _layout(plan, exact=False)
        scale, offset = _affine(mean, std)
        pad = np.array(_recipe(plan).pad_colour, dtype=np.float32).reshape(3, 1, 1) * scale + offset
        stacked = len(sizes) == 1
        draft = _draft_factor(plan)
        _, outputs = _run_jobs(
            jobs, lambda: _Decoded(_decode(source, plan, draft=draft), plan), parallel=True,
            allocate=lambda: _outputs(shapes, _padding_filler(layouts, stacked, pad)),  # during the decode
            writes=_normalised_writes(layouts, stacked, scale, offset, pad))
        tensors = [torch.from_numpy(a) for a in outputs]
        return tensors[0] if stacked else tensors
    src = _decode(source, plan, draft=1)
    rendered = _render(src, plan, exact=True)
    del src  # the views hold what they need; the decoded image can go before the float tensors are made
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    tensors = []
    for v in rendered:
        if not isinstance(v, np.ndarray):  # float32 (3, h, w) in 0..1 already
            tensors.append((v - mean_t) / std_t)
        else:
            tensors.append(_exact_normalise(v, mean, std))  # (3, h, w)
    if len(sizes) == 1:
        return torch.stack(tensors)  # (views, 3, h, w)
    return tensors


def qwen_patchify(pixels: "torch.Tensor", patch_size: int = 14, merge_size: int = 2,
                  temporal_patch_size: int = 2) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Qwen2-VL's flat patch layout: `(3, H, W)` (or `(1, 3, H, W)`) -> `(patches, 3·T·p·p)` and `grid_thw`.

    Patches come in merge_size × merge_size blocks, row-major; a still image is repeated `temporal_patch_size`
    times, exactly as `Qwen2VLImageProcessor.patchify`. `grid_thw` is `(1, 3)` int64: `[[1, H/p, W/p]]`.
    """
    torch = _torch()
    if pixels.dim() == 4:
        if pixels.shape[0] != 1:
            raise PlanError(f"qwen_patchify takes one view, got {pixels.shape[0]}")
        pixels = pixels[0]
    c, h, w = pixels.shape
    p, m = patch_size, merge_size
    if h % (p * m) or w % (p * m):
        raise PlanError(f"qwen_patchify needs sides that are multiples of {p * m}, got {w}×{h}")
    gh, gw = h // p, w // p
    x = pixels.reshape(c, gh // m, m, p, gw // m, m, p)
    x = x.permute(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, c, p, p)
    x = x.unsqueeze(5).expand(-1, -1, -1, -1, -1, temporal_patch_size, -1, -1)  # (…, c, T, p, p)
    patches = x.reshape(gh * gw, c * temporal_patch_size * p * p)
    return patches, torch.tensor([[1, gh, gw]], dtype=torch.int64)


def qwen_pixel_values(source: ImageSource, plan: Plan, mean=None, std=None,
                      exact: bool = False) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The flat patch layout of Qwen2-VL and its kin (every strategy whose recipe has `patches`):
    `(patches, 3·T·p·p)` float32 and `grid_thw` `[[1, H/p, W/p]]`, as their processors return them.

    `exact=True` is `qwen_patchify(pixel_values(..., exact=True))`. The fast path writes the layout in one pass
    from the decoded (and, if the plan says so, resized) uint8 image: each band of merge-block rows is
    normalised into temporal slot 0 of the output and copied to the other slots while it is still in cache,
    bands split over both cores; the output is allocated (its pages touched) on a worker during the decode.
    Same bound as `pixel_values` (FAST_MEAN_ABS_BOUND).
    """
    check_views(plan)
    layout = _recipe(plan).patches
    if layout is None:
        raise PlanError(f"qwen_pixel_values takes a plan whose model reads flat patches (qwen2-vl and its kin); "
                        f"{plan.strategy!r} takes whole views: use pixel_values")
    p, m, t = layout.patch_size, layout.merge_size, layout.temporal_patch_size
    if exact:
        return qwen_patchify(pixel_values(source, plan, mean, std, exact=True)[0], p, m, t)
    torch = _torch()
    mean, std = _normalisation(plan, mean, std)
    w, h = plan.views[0].input_size
    if h % (p * m) or w % (p * m):
        raise PlanError(f"qwen_pixel_values needs sides that are multiples of {p * m}, the plan has {w}×{h}")
    gh, gw = h // p, w // p
    outputs = _allocate([(gh // m, gw // m, m, m, 3, t, p, p)])
    src = _decode(source, plan, draft=_draft_factor(plan))
    if src.size == (w, h):  # the view is the decoded image itself: read it band by band, never copied whole
        def rows_of(y0: int, y1: int) -> np.ndarray:
            return _rgb_array(src, y0, y1)
    else:
        view = _render(src, plan, exact=False)[0]  # (h, w, 3) uint8
        del src

        def rows_of(y0: int, y1: int) -> np.ndarray:
            return view[y0:y1]
    patches = outputs.result()[0]  # (gh/m, gw/m, m, m, 3, T, p, p)
    scale, offset = _affine(mean, std)

    def band(rows: range) -> None:
        for r in rows:  # one row of merge blocks: m·p image rows
            x = rows_of(r * m * p, (r + 1) * m * p).reshape(m, p, gw // m, m, p, 3)
            x = np.ascontiguousarray(x.transpose(2, 0, 3, 5, 1, 4))  # uint8 (gw/m, m, m, 3, p, p)
            x = x.astype(np.float32)
            x *= scale
            x += offset
            for k in range(t):  # a still image fills every temporal slot
                patches[r, :, :, :, :, k] = x

    _map(band, _bands(gh // m, gw * p * m * p))
    return (torch.from_numpy(patches.reshape(gh * gw, 3 * t * p * p)),
            torch.tensor([[1, gh, gw]], dtype=torch.int64))


# ------------------------------------------------------------------------------------------------- decoding


def _decode(source: ImageSource, plan: Plan, draft: int) -> Image.Image:
    """The upright RGB image, decoded at 1/`draft` scale where the format allows it (JPEG), else in full.

    Returns a decoded image whose size is ceil(original / k) for the scale k actually used; see `_scale_of`.
    """
    with open_for_decode(source) as image:
        orientation = exif_orientation(image)
        w, h = image.size
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        if (w, h) != tuple(plan.image_size):
            pw, ph = plan.image_size
            raise PlanError(
                f"the plan was made for a {pw}×{ph} image but this image is {w}×{h} (upright, EXIF applied); "
                f"make the plan from this image, e.g. gridvlm.plan(image, {plan.strategy!r})"
            )
        if draft > 1 and image.format == "JPEG" and not isinstance(source, Image.Image):  # never touch theirs
            image.draft("RGB", (image.size[0] // draft, image.size[1] // draft))
        image.load()
        return to_upright_rgb(image, orientation)


def _draft_factor(plan: Plan) -> int:
    """The largest k in 8, 4, 2 at which a 1/k decode keeps every view at r ≤ 1 (never upsampling what the DCT
    reduced) and the predicted mean error, `DRAFT_ERROR_CURVE` at each view's r weighted by its content
    pixels over all output pixels, stays within `DRAFT_ERROR_BUDGET`; else 1."""
    needs = _view_needs(plan)
    total = sum(pixels for _, _, pixels in needs) or 1
    for k in DRAFT_FACTORS:
        if all(r * k <= 1.0 for r, _, _ in needs) and \
                sum(content * _draft_error(r * k) for r, content, _ in needs) / total <= DRAFT_ERROR_BUDGET:
            return k
    return 1


def _draft_error(r: float) -> float:
    """`DRAFT_ERROR_CURVE` at r, linear between its points (1/255)."""
    points = DRAFT_ERROR_CURVE
    for (r0, e0), (r1, e1) in zip(points, points[1:]):
        if r <= r1:
            return e0 + (e1 - e0) * (max(r, r0) - r0) / (r1 - r0)
    return math.inf


def _needed_resolution(plan: Plan) -> float:
    """Largest ratio (output pixels per original pixel, either axis) over every resize the decode feeds."""
    return max((r for r, _, _ in _view_needs(plan)), default=1.0)


def _view_needs(plan: Plan) -> list[tuple[float, float, int]]:
    """Per view: `(r, content pixels, pixels)`, r = output pixels per original pixel (larger axis) of the resize
    that reads the decoded image for it — the canvas for tiles cut from it (and a thumbnail squashed from it),
    the first resize when the recipe has one, else the view's own `box` -> `content_box`."""
    recipe = _recipe(plan)
    w, h = plan.image_size
    canvas = None
    if plan.canvas_size is not None and any(t.canvas_box is not None for t in plan.views):
        cx0, cy0, cx1, cy1 = _canvas_content(plan)
        canvas = max((cx1 - cx0) / w, (cy1 - cy0) / h)
    needs = []
    for t in plan.views:
        bx0, by0, bx1, by1 = t.box
        cx0, cy0, cx1, cy1 = t.content_box
        r = max((cx1 - cx0) / (bx1 - bx0), (cy1 - cy0) / (by1 - by0)) if bx1 > bx0 and by1 > by0 else 0.0
        if canvas is not None and (t.canvas_box is not None or (recipe.thumbnail_from_canvas and t.is_thumbnail)):
            r = max(r, canvas)
        if recipe.first_resize is not None:
            r = max(recipe.first_resize[0] / w, recipe.first_resize[1] / h)
        iw, ih = t.input_size
        needs.append((r, (1.0 - t.padding) * iw * ih, iw * ih))
    return needs


def _scale_of(src: Image.Image, plan: Plan) -> float:
    """Decoded pixels per original pixel: 1/k for a 1/k JPEG decode, whose size is ceil(original / k).

    Original x maps to x / k exactly (the last, partial DCT block makes the decoded size round up).
    """
    w, h = plan.image_size
    for k in (1, *DRAFT_FACTORS):
        if src.size == (-(-w // k), -(-h // k)):
            return 1.0 / k
    raise AssertionError(f"decoded size {src.size} is no 1/k scale of {w}×{h}")


# ------------------------------------------------------------------------------------------------- rendering
#
# A plan's pixels are made in two steps. Jobs resize: the canvas part the image covers (once, for every tile cut
# from it), each view made straight from the image, and, for the few references that need it, the padded canvas
# and what is squashed or resized from it. Then every view is put together from at most one piece of one job's
# array, padding around it: as a uint8 image (`_compose`, for `views` and the exact path) or straight into its
# float32 output slot (`_padding_filler`, `_normalised_writes`: the fast path), so that padding is only ever
# filled in, never resized, copied or normalised value by value, and a tile is normalised as soon as its canvas
# exists, on whichever core is free.


@dataclass(frozen=True)
class _Job:
    """One array a plan's views are cut from, made from the decoded image and the arrays of the jobs it
    `needs`."""

    make: Callable[["_Decoded", list], "np.ndarray | None"]  # -> uint8 (h, w, 3), or None for nothing
    needs: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Layout:
    """One view: `size` (w, h) of padding, with job `source`'s array — or its `box` (x0, y0, x1, y1) — at `at`,
    where it covers `extent` (w, h). Known from the plan alone, before the image is decoded."""

    size: tuple[int, int]
    source: int | None = None  # None, or a job that made None: the view is all padding
    box: tuple[int, int, int, int] | None = None  # None: the whole array
    at: tuple[int, int] = (0, 0)
    extent: tuple[int, int] = (0, 0)


class _Decoded:
    """The decoded image, its scale (decoded pixels per original pixel, `_scale_of`), and its pixels as the one
    array torch's resizes read however many views need them: PIL's own memory, (h, w, 4) R, G, B and a pad
    byte, where it can be borrowed (`_borrowed_pixels`), else a (h, w, 3) copy made on the first resize that
    reads every row (a resize of fewer rows copies just those)."""

    def __init__(self, image: Image.Image, plan: Plan):
        self.image = image
        self.scale = _scale_of(image, plan)
        self._pixels: np.ndarray | None = None
        self._tried = False
        self._owner = None  # what keeps borrowed pixels alive
        self._lock = threading.Lock()

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows y0..y1 as (rows, w, 3 or 4) uint8, to be read only while this object lives."""
        with self._lock:
            if not self._tried:
                self._tried = True
                borrowed = _borrowed_pixels(self.image)
                if borrowed is not None:
                    self._pixels, self._owner = borrowed
            if self._pixels is None and (y0, y1) == (0, self.image.size[1]):
                self._pixels = _rgb_array(self.image)
        if self._pixels is None:
            return _rgb_array(self.image, y0, y1)
        return self._pixels[y0:y1]


class _ArrowSchema(ctypes.Structure):
    pass


class _ArrowArray(ctypes.Structure):
    pass


# The Arrow C data interface's two structs (a stable ABI), through which Pillow exports an image's memory.
_ArrowSchema._fields_ = [("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
                         ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64),
                         ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
                         ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p),
                         ("private_data", ctypes.c_void_p)]
_ArrowArray._fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                        ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
                        ("buffers", ctypes.POINTER(ctypes.c_void_p)),
                        ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
                        ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p),
                        ("private_data", ctypes.c_void_p)]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _borrowed_pixels(image: Image.Image) -> tuple[np.ndarray, object] | None:
    """An RGB image's own pixel memory as a read-only (h, w, 4) uint8 array (R, G, B, pad), without a copy,
    and the object that must outlive every read of it; None where Pillow cannot lend it.

    Pillow exports an image through the Arrow C data interface (`__arrow_c_array__`, Pillow ≥ 11.2) when it
    lies in one memory block (up to 16 MiB: a 2016×1512 decode does, a 4032×3024 one does not). Torch's resize
    reads 4 bytes a pixel anyway, so this saves the 3-byte copy `_rgb_array` makes (0.2-0.4 ms for 960×540)
    and the kernel's own unpacking of it."""
    if image.mode != "RGB":
        return None
    try:
        schema_capsule, array_capsule = image.__arrow_c_array__()
        schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
        array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
    except Exception:  # noqa: BLE001 - several blocks, an older Pillow: the pixels are copied instead
        return None
    w, h = image.size
    if schema.format != b"+w:4" or schema.n_children != 1 or schema.children[0].contents.format != b"C" \
            or array.n_children != 1 or array.length != w * h or array.offset:
        return None
    values = array.children[0].contents
    if values.length != 4 * w * h or values.offset or values.n_buffers != 2 or not values.buffers[1]:
        return None
    pixels = np.frombuffer((ctypes.c_uint8 * (4 * w * h)).from_address(values.buffers[1]), dtype=np.uint8)
    pixels = pixels.reshape(h, w, 4)
    pixels.flags.writeable = False
    return pixels, (image, schema_capsule, array_capsule)


def _render(src: Image.Image, plan: Plan, exact: bool) -> list[View]:
    """Every view of `plan`, in order: uint8 (h, w, 3) arrays (or float (3, h, w) for UHD release, exact)."""
    if _recipe(plan).float_resize and exact:
        return _uhd_release_views(src, plan)
    jobs, layouts = _layout(plan, exact)
    made, _ = _run_jobs(jobs, lambda: _Decoded(src, plan), parallel=not exact)
    pad = _recipe(plan).pad_colour
    return [_compose(layout, made, pad) for layout in layouts]


def _run_jobs(jobs: list[_Job], decode: Callable[[], "_Decoded"], parallel: bool,
              allocate: Callable[[], list] | None = None,
              writes: tuple[tuple[Callable[[list, list], None], int | None], ...] = ()) -> tuple[list, list | None]:
    """One image's pixels as one graph of work (`_run_graph`): `decode()` first, and beside it `allocate()`,
    which needs nothing, so the other core makes the outputs while this one decodes; then every job's array,
    each once the decoded image and the arrays it needs exist; then each `(write, job)` as
    `write(outputs, arrays)` once the outputs and that job's array (None: no job) exist.
    Returns the jobs' arrays and the outputs."""
    first = 2  # node 0 decodes, node 1 allocates; the jobs follow, in order
    count = len(jobs)
    nodes = [(lambda results: decode(), ()), (lambda results: allocate() if allocate else None, ())]
    nodes += [(lambda results, job=job: job.make(results[0], results[first:first + count]),
               (0, *(first + j for j in job.needs))) for job in jobs]
    nodes += [(lambda results, write=write: write(results[1], results[first:first + count]),
               (1,) if job is None else (1, first + job)) for write, job in writes]
    results = _run_graph(nodes, parallel)
    return results[first:first + count], results[1]


def _layout(plan: Plan, exact: bool) -> tuple[list[_Job], list[_Layout]]:
    """The jobs that make `plan`'s pixels from the decoded image, and where each view's content comes from."""
    recipe = _recipe(plan)
    if recipe.pad_to_square_first:
        size = tuple(plan.views[0].input_size)
        return [_Job(lambda src, made: _square_pad_view(src.image, plan, recipe))], [_Layout(size, 0, extent=size)]
    resample, pad, first = _FILTERS[recipe.resample], recipe.pad_colour, recipe.first_resize
    jobs: list[_Job] = []
    layouts: list[_Layout | None] = [None] * len(plan.views)
    has_canvas = any(t.canvas_box is not None for t in plan.views)
    if has_canvas:
        part = _canvas_part(plan)  # where the image lies on the canvas, clipped to it
        jobs.append(_Job(lambda src, made: _canvas_resized(src, plan, resample, first, exact)))
    padded: int | None = None  # the job making the whole padded canvas, for views resized from it

    def from_padded(size: tuple[int, int], box: tuple[int, int, int, int] | None) -> _Layout:
        nonlocal padded
        if padded is None:
            padded = len(jobs)
            jobs.append(_Job(lambda src, made: _padded_canvas(made[0], plan, pad), needs=(0,)))
        jobs.append(_Job(lambda src, made: _resized_array(made[padded], box, size, resample), needs=(padded,)))
        return _Layout(size, len(jobs) - 1, extent=size)

    for i, t in enumerate(plan.views):
        size = tuple(t.input_size)
        if t.canvas_box is not None:
            x0, y0, x1, y1 = t.canvas_box
            if (x1 - x0, y1 - y0) != size:  # a tile the reference resizes after cutting it
                layouts[i] = from_padded(size, (x0, y0, x1, y1))
                continue
            px0, py0, px1, py1 = part
            ix0, iy0, ix1, iy1 = max(x0, px0), max(y0, py0), min(x1, px1), min(y1, py1)
            layouts[i] = _Layout(size) if ix0 >= ix1 or iy0 >= iy1 else \
                _Layout(size, 0, (ix0 - px0, iy0 - py0, ix1 - px0, iy1 - py0), (ix0 - x0, iy0 - y0),
                        (ix1 - ix0, iy1 - iy0))
        elif recipe.thumbnail_from_canvas and t.is_thumbnail and has_canvas:
            layouts[i] = from_padded(size, None)
        else:
            cx0, cy0, cx1, cy1 = (int(round(v)) for v in t.content_box)
            if cx1 <= cx0 or cy1 <= cy0:
                layouts[i] = _Layout(size)
                continue
            jobs.append(_Job(lambda src, made, t=t: _direct_region(src, plan, t, resample, first, exact,
                                                                   recipe.crop_first)))
            layouts[i] = _Layout(size, len(jobs) - 1, None, (cx0, cy0), (cx1 - cx0, cy1 - cy0))
    return jobs, layouts


def _compose(layout: _Layout, made: list, pad) -> np.ndarray:
    """A view as a uint8 (h, w, 3) array: its piece where it covers the view (a numpy view, no copy), else the
    piece pasted on padding."""
    w, h = layout.size
    piece = _piece(layout, made)
    if piece is not None and layout.at == (0, 0) and piece.shape[:2] == (h, w):
        return piece
    view = _filled(h, w, pad)
    if piece is not None:
        x, y = layout.at
        view[y:y + piece.shape[0], x:x + piece.shape[1]] = piece
    return view


def _piece(layout: _Layout, made: list) -> np.ndarray | None:
    array = None if layout.source is None else made[layout.source]
    if array is None or layout.box is None:
        return array
    x0, y0, x1, y1 = layout.box
    return array[y0:y1, x0:x1]


def _canvas_content(plan: Plan) -> tuple[int, int, int, int]:
    if plan.content_box is not None:
        return tuple(int(v) for v in plan.content_box)
    return (0, 0, plan.canvas_size[0], plan.canvas_size[1])


def _canvas_part(plan: Plan) -> tuple[int, int, int, int]:
    """The part of the canvas the resized image covers: its content box, clipped to the canvas (fixed-grid
    without resize may leave some of the image outside)."""
    cw, ch = plan.canvas_size
    x0, y0, x1, y1 = _canvas_content(plan)
    return max(x0, 0), max(y0, 0), min(x1, cw), min(y1, ch)


def _canvas_resized(src: _Decoded, plan: Plan, resample, first: tuple[int, int] | None,
                    exact: bool) -> np.ndarray:
    """The image resized ONCE to the canvas's content box (after the recipe's first resize, if any), (h, w, 3)
    uint8, only the part that lies on the canvas (`_canvas_part`)."""
    x0, y0, x1, y1 = _canvas_content(plan)
    ix0, iy0, ix1, iy1 = _canvas_part(plan)
    size, s = (x1 - x0, y1 - y0), src.scale
    if size == tuple(plan.image_size) and s == 1.0:
        # Not resized at all (fixed-grid resize=False): crop first so no full-size copy is made.
        return _cut(src.image, (ix0 - x0, iy0 - y0, ix1 - x0, iy1 - y0))
    if first is not None:
        resized = _resize(_first_resized(src.image, plan, s, resample, first, exact), size, resample,
                          (0, 0, *first), exact)
    else:
        resized = _resize(src.image, size, resample, _src_box((0, 0, *plan.image_size), s), exact, src.rows)
    return resized[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]


def _padded_canvas(part: np.ndarray, plan: Plan, pad) -> np.ndarray:
    """The whole canvas, (H, W, 3) uint8: the resized image on padding."""
    cw, ch = plan.canvas_size
    ix0, iy0, ix1, iy1 = _canvas_part(plan)
    if (ix0, iy0, ix1, iy1) == (0, 0, cw, ch):
        return part
    canvas = _filled(ch, cw, pad)
    canvas[iy0:iy1, ix0:ix1] = part
    return canvas


def _resized_array(array: np.ndarray, box: tuple[int, int, int, int] | None, size: tuple[int, int],
                   resample) -> np.ndarray:
    """`box` of a made array (all of it for None), resized to `size` with PIL: a view the reference squashes
    from the canvas (Idefics3's global image, Phi's), or a tile it resizes after cutting."""
    if box is not None:
        x0, y0, x1, y1 = box
        array = array[y0:y1, x0:x1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(array)).resize(size, resample))


def _direct_region(src: _Decoded, plan: Plan, t: Tile, resample, first: tuple[int, int] | None,
                   exact: bool, crop_first: bool = False) -> np.ndarray | None:
    """What a view made straight from the image shows: `t.box` resized to its rounded `content_box`, (h, w, 3)
    uint8, or None where that is empty.

    `crop_first` (Gemma 3 Pan & Scan, Idefics2's quadrants, Ovis2 original): the box is cut out first and the
    cut-out resized, so the filter does not read the pixels just outside the box as a box-resize of the whole
    image would."""
    cx0, cy0, cx1, cy1 = (int(round(v)) for v in t.content_box)
    size, box, s = (cx1 - cx0, cy1 - cy0), t.box, src.scale
    if size[0] <= 0 or size[1] <= 0:
        return None
    if s == 1.0 and all(float(v).is_integer() for v in box) and (box[2] - box[0], box[3] - box[1]) == size:
        # Same size: a crop (NaViT), or the image itself (Qwen2-VL at native size), never a resample.
        return _cut(src.image, tuple(int(v) for v in box))
    if first is not None:
        return _resize(_first_resized(src.image, plan, s, resample, first, exact), size, resample, (0, 0, *first),
                       exact)
    if crop_first and box != (0.0, 0.0, *map(float, plan.image_size)):
        cut = src.image.crop(tuple(int(round(v)) for v in _src_box(box, s)))
        # an empty cut (Idefics2's zero-width quadrants of a 1-px wide image) resizes to zeros there
        return _resize(cut, size, resample, (0, 0, *cut.size), exact) if cut.size[0] and cut.size[1] else None
    return _resize(src.image, size, resample, _src_box(box, s), exact, src.rows)


def _filled(h: int, w: int, colour) -> np.ndarray:
    """(h, w, 3) uint8 filled with `colour`, stored channel-first, as the model wants (3, h, w): the exact
    path normalises it whole rows at a time. (Broadcasting 3 values over an (h, w, 3) array runs a 3-long
    inner loop: 3 ms for a 672×672 canvas, 0.1 ms like this.)"""
    out = np.empty((3, h, w), dtype=np.uint8)
    for c in range(3):
        out[c] = colour[c]
    return out.transpose(1, 2, 0)


def _first_resized(src: Image.Image, plan: Plan, s: float, resample, first: tuple[int, int],
                   exact: bool) -> Image.Image:
    """The recipe's first resize of the whole image (Idefics3: to the longest-edge bound), from any scale."""
    return Image.fromarray(_resize(src, first, resample, _src_box((0, 0, *plan.image_size), s), exact))


# Fast path: a resize with at least this many output pixels per worker is split into horizontal bands.
_BAND_MIN_PIXELS = 60_000


def _resize(src: Image.Image, size, resample, box, exact: bool, rows=None) -> np.ndarray:
    """PIL resize of `box` (source pixels) to `size`, as (h, w, 3) uint8. The fast path hands bilinear and
    bicubic resizes of a whole-pixel box to torch (`_torch_resize`, reading `rows`, if given, for the pixels);
    the rest it lets PIL box-reduce large factors first and splits large outputs into horizontal bands, one per
    worker; a band resizes its own slice of `box`, and PIL's filter reads past a box's edge, so bands join
    without seams."""
    if not exact:
        resized = _torch_resize(src, size, resample, box, rows)
        if resized is not None:
            return resized
    gap = None if exact else REDUCING_GAP
    w, h = size
    bands = 1 if exact else min(_workers(), w * h // _BAND_MIN_PIXELS, h)
    if bands <= 1:
        return np.asarray(src.resize(size, resample, box=box, reducing_gap=gap))
    out = np.empty((h, w, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    dy = (y1 - y0) / h

    def band(rows: range) -> None:
        r0, r1 = rows.start, rows.stop
        part = src.resize((w, r1 - r0), resample, box=(x0, y0 + r0 * dy, x1, y0 + r1 * dy), reducing_gap=gap)
        out[r0:r1] = np.asarray(part)

    _map(band, _split(h, bands))
    return out


# PIL filters that torch's antialiased uint8 interpolation reproduces (same kernels: bicubic a = −0.5 as PIL,
# support scaled with the downscale factor); measured mean |torch − PIL| ≤ 0.005/255, max 2/255, on photos.
_TORCH_MODES = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}


def _antialiased_into(mode: str, x, size: list[int], out) -> None:
    """torch's antialiased interpolation of `x` to `size` (h, w), written into `out`: `_upsample_<mode>2d_aa`
    through its Python binding, which lets go of the GIL while it runs (`torch.ops.aten` keeps it, so the two
    threads' resizes would take turns)."""
    getattr(_torch()._C._nn, f"_upsample_{mode}2d_aa")(x, size, False, None, None, out=out)


def _torch_resize(src: Image.Image, size, resample, box, rows=None) -> np.ndarray | None:
    """`box` of `src` resized to `size` by torch's antialiased uint8 interpolation (vectorised, on torch's
    threads; 4-5× PIL's resampling on this project's CPUs), as (h, w, 3) uint8 — or None where it would not be
    PIL's resize: another filter, a box off whole pixels or outside the image, or torch not installed.
    `rows(y0, y1)` gives the source rows as (rows, w, 3 or 4) uint8 (`_Decoded.rows`); by default they are
    copied.

    One difference remains: a box smaller than the image is cut out first, so near its edges the filter does
    not read the pixels just outside it as PIL's would (mean 0.015/255 measured on an 800×650 box)."""
    mode = _TORCH_MODES.get(resample)
    if mode is None or not _torch_available():
        return None
    whole = tuple(int(round(v)) for v in box)
    x0, y0, x1, y1 = whole
    if any(abs(a - b) > 1e-6 for a, b in zip(whole, box)) or x0 < 0 or y0 < 0 or x1 > src.size[0] \
            or y1 > src.size[1] or x1 <= x0 or y1 <= y0:
        return None
    torch = _torch()
    pixels = _rgb_array(src, y0, y1) if rows is None else rows(y0, y1)  # (h, w, 3), or 4 with PIL's pad byte
    x = _as_tensor(pixels)[:, x0:x1].permute(2, 0, 1)[None]  # (1, c, h, w), channels last
    (w, h), (out_w, out_h), channels = (x1 - x0, y1 - y0), size, pixels.shape[2]
    if (out_w, out_h) == (w, h):
        return np.array(pixels[:, x0:x1, :3])  # nothing to resize: a copy, never the borrowed memory
    if out_w != w:
        # The horizontal pass on its own, into a channels-last buffer: torch's uint8 kernel rounds between its
        # two passes anyway, so this is its one-call result to the bit, and the vertical pass that follows
        # reads channels last and writes channels last. Measured on 960×540 -> 672×378: 1.0 ms in one call
        # (whose result is channel-first), 0.56 + 0.14 ms in two.
        wide = torch.empty((1, channels, h, out_w), dtype=torch.uint8, memory_format=torch.channels_last)
        _antialiased_into(mode, x, [h, out_w], wide)
        x = wide
    if out_h != h:
        x = torch.nn.functional.interpolate(x, size=(out_h, out_w), mode=mode, antialias=True,
                                            align_corners=False)  # (1, c, h, w) uint8, channels last
    return x[0].permute(1, 2, 0).numpy()[:, :, :3]  # (h, w, 3), as torch laid it out


def _rgb_array(image: Image.Image, y0: int = 0, y1: int | None = None) -> np.ndarray:
    """Rows y0..y1 of an RGB image as a (rows, w, 3) uint8 copy (read-only), in one call of PIL's raw encoder
    into a buffer that holds them all. `np.asarray(image)` goes through `tobytes()`, which encodes 64 KiB at
    a time and joins the pieces: measured 2-3× slower (4.5 ms against 1.6 ms for 2560×1600, 100 against
    45 ms for 5120×2880, on the busy 2-core machine)."""
    w = image.size[0]
    y1 = image.size[1] if y1 is None else y1
    encoder = Image._getencoder("RGB", "raw", ("RGB", 0, 1))
    encoder.setimage(image.im, (0, y0, w, y1))
    _, status, data = encoder.encode(w * (y1 - y0) * 3)
    if status != 1:  # it did not all fit (never seen): the ordinary way
        return np.asarray(image.crop((0, y0, w, y1)))
    return np.frombuffer(data, dtype=np.uint8).reshape(y1 - y0, w, 3)


def _cut(image: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    """`image.crop(box)` as (h, w, 3) uint8, copying only the box's rows where the box lies inside."""
    x0, y0, x1, y1 = box
    if 0 <= x0 < x1 <= image.size[0] and 0 <= y0 < y1 <= image.size[1]:
        return _rgb_array(image, y0, y1)[:, x0:x1]
    return np.asarray(image.crop(box))


def _src_box(box, s: float) -> tuple[float, float, float, float]:
    return (box[0] * s, box[1] * s, box[2] * s, box[3] * s)


def _square_pad_view(src: Image.Image, plan: Plan, recipe: PixelRecipe) -> np.ndarray:
    """Paste on a max(w, h) square of `colour`, THEN resize the square (LLaVA-1.5 'pad', OneVision multi-image).

    Padding first matters: the resize blends the image's edge with the pad colour. On the fast path `src` may
    be a reduced decode: the square is then built at that scale, the image pasted at the nearest whole pixel,
    and the resize reads the box where the reference's square lies, so the image lands where it does there.
    """
    size, resample = plan.tiles[0].input_size, _FILTERS[recipe.resample]
    s = _scale_of(src, plan)
    if s == 1.0:
        w, h = src.size
        side = max(w, h)
        square = Image.new("RGB", (side, side), recipe.pad_colour)
        square.paste(src, ((side - w) // 2, (side - h) // 2))
        return np.asarray(square.resize(size, resample))
    w, h = plan.image_size
    side = max(w, h)
    ox, oy = (side - w) // 2 * s, (side - h) // 2 * s  # the reference's paste offset, decoded pixels
    px, py = math.ceil(ox), math.ceil(oy)
    bx, by = px - ox, py - oy  # where the reference's square starts on ours
    square = Image.new("RGB", (math.ceil(bx + side * s), math.ceil(by + side * s)), recipe.pad_colour)
    square.paste(src, (px, py))
    return np.asarray(square.resize(size, resample, box=(bx, by, bx + side * s, by + side * s),
                                    reducing_gap=REDUCING_GAP))


def _uhd_release_views(src: Image.Image, plan: Plan) -> list["torch.Tensor"]:
    """LLaVA-UHD release (slice_logic.py process_image): crop each slice from the original, ToTensor (0..1 float),
    then torch bilinear interpolation with antialias to the view size. Returns float32 (3, h, w) in 0..1."""
    torch = _torch()
    out = []
    for t in plan.views:
        region = src.crop(tuple(int(v) for v in t.box))
        x = _as_tensor(np.asarray(region)).permute(2, 0, 1).to(torch.float32).div(255)  # ToTensor: (3, h, w)
        w, h = t.input_size
        x = torch.nn.functional.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False,
                                            antialias=True)[0]
        out.append(x)
    return out


# ------------------------------------------------------------------------------------------------- arithmetic


def _recipe(plan: Plan) -> PixelRecipe:
    return strategy_info(plan.strategy).pixel_recipe(plan)


def _normalisation(plan: Plan, mean, std):
    default_mean, default_std = _recipe(plan).normalisation
    mean = default_mean if mean is None else tuple(float(v) for v in mean)
    std = default_std if std is None else tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3:
        raise PlanError(f"mean and std need 3 values (R, G, B), got mean={mean!r}, std={std!r}")
    if any(not math.isfinite(v) or v <= 0 for v in std):
        raise PlanError(f"std must be 3 positive numbers, got {std!r}")
    return mean, std


def _exact_normalise(hwc: np.ndarray, mean, std) -> "torch.Tensor":
    """transformers' numpy arithmetic, step for step: uint8 -> float64 · (1/255) -> float32 (`rescale`), then
    `(x - mean) / std` in float32 (`normalize`). Returns (3, h, w)."""
    x = (hwc.transpose(2, 0, 1).astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(mean, dtype=np.float32).reshape(3, 1, 1)) / np.array(std, dtype=np.float32).reshape(3, 1, 1)
    return _torch().from_numpy(np.ascontiguousarray(x))


def _affine(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """`(x / 255 − mean) / std` as `x · scale + offset`, float32 `(3, 1, 1)` each."""
    scale = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32).reshape(3, 1, 1)
    offset = np.array([-m / s for m, s in zip(mean, std)], dtype=np.float32).reshape(3, 1, 1)
    return scale, offset


def _padding_filler(layouts: list[_Layout], stacked: bool, pad: np.ndarray) -> Callable[[list], None]:
    """What writes every view's padding, the pad colour's normalised value (3, 1, 1), into fresh outputs: all
    of a view around where its piece will lie. Known from the plan, so it runs while the image is decoded."""
    def fill(arrays: list[np.ndarray]) -> None:
        for i, layout in enumerate(layouts):
            slot = arrays[0][i] if stacked else arrays[i]
            (x, y), (w, h) = layout.at, layout.extent
            if layout.source is None or not w or not h:
                slot[...] = pad
                continue
            slot[:, :y] = pad
            slot[:, y + h:] = pad
            slot[:, y:y + h, :x] = pad
            slot[:, y:y + h, x + w:] = pad
    return fill


def _normalised_writes(layouts: list[_Layout], stacked: bool, scale: np.ndarray, offset: np.ndarray,
                       pad: np.ndarray) -> tuple[tuple[Callable[[list, list], None], int], ...]:
    """`(write, job)` pairs: `write(outputs, arrays)` puts a band of one view's piece into its float32
    (3, h, w) slot once `job` has made it, as `x · 1/(255·std) − mean/std` (one multiply and one in-cache add
    per value)."""
    writes = []
    for i, layout in enumerate(layouts):
        (w, h) = layout.extent
        if layout.source is None or not w or not h:
            continue
        parts = max(-(-h * 3 * w // _WRITE_VALUES), _workers() if len(layouts) == 1 else 1)
        for rows in _split(h, min(parts, h)):
            def write(arrays, made, i=i, layout=layout, rows=rows, w=w, h=h) -> None:
                slot = arrays[0][i] if stacked else arrays[i]
                x, y = layout.at
                part = slot[:, y + rows.start:y + rows.stop, x:x + w]
                piece = _piece(layout, made)
                if piece is None:  # nothing to show after all (an empty cut-out): padding
                    part[...] = pad
                    return
                if piece.shape[:2] != (h, w):
                    raise AssertionError(f"view {i}: made {piece.shape[:2]}, laid out {(h, w)}")
                np.multiply(piece[rows.start:rows.stop].transpose(2, 0, 1), scale, out=part)
                part += offset
            writes.append((write, layout.source))
    return tuple(writes)


# ------------------------------------------------------------------------------------------------- workers

# Work that splits (resize bands, normalising views, the patch layout) goes to a small thread pool: PIL's
# resampling and numpy's arithmetic release the GIL. One worker per core, at most 4.
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_BAND_VALUES = 256 * 1024  # float32 values per band of the patch layout: 1 MiB, stays in a core's cache
# Values per normalised write of a view: a 336×336 view (1.3 MiB of float32, in a core's 2 MiB L2) is one write;
# splitting it more cost more in hand-overs between the threads than the cache saved.
_WRITE_VALUES = 384 * 1024
_TOUCH_FROM = 4 * 1024 * 1024  # bytes: outputs this large have their pages touched as they are allocated


def _workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="gridvlm-pixels")
        return _POOL


def _map(fn, items) -> None:
    """fn(item) for every item, the first on this thread and the rest on the workers, when there is more than
    one; an item no worker has started yet when this thread is free runs here too, so a call never waits on a
    busy pool (exceptions re-raised here)."""
    items = list(items)
    if len(items) <= 1 or _workers() == 1 or threading.current_thread().name.startswith("gridvlm-pixels"):
        for item in items:
            fn(item)
        return
    futures = [_pool().submit(fn, item) for item in items[1:]]
    try:
        fn(items[0])
    finally:
        for item, future in zip(items[1:], futures):
            if future.cancel():
                fn(item)
            else:
                future.result()


def _run_graph(nodes: list[tuple[Callable[[list], object], tuple[int, ...]]], parallel: bool = True) -> list:
    """Run every node `(fn, needs)` as `fn(results)` once the nodes it needs have run; returns their results.

    This thread and, when `parallel`, the other workers take ready nodes, lowest index first (callers put the
    decode and the canvas first, the writes that read them last), so the work after one resize starts while
    another still runs. The first exception is re-raised here once every started node has stopped."""
    results: list = [None] * len(nodes)
    waiting = [len(set(needs)) for _, needs in nodes]
    readers: list[list[int]] = [[] for _ in nodes]
    for i, (_, needs) in enumerate(nodes):
        for j in set(needs):
            readers[j].append(i)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    state = {"left": len(nodes), "error": None}
    changed = threading.Condition()

    def work() -> None:
        while True:
            with changed:
                while not ready and state["left"] and state["error"] is None:
                    changed.wait()
                if state["error"] is not None or not state["left"]:
                    return
                i = heapq.heappop(ready)
            try:
                results[i] = nodes[i][0](results)
            except BaseException as exc:  # noqa: BLE001 — handed to the caller below
                with changed:
                    state["error"] = state["error"] or exc
                    changed.notify_all()
                return
            with changed:
                state["left"] -= 1
                for j in readers[i]:
                    waiting[j] -= 1
                    if not waiting[j]:
                        heapq.heappush(ready, j)
                changed.notify_all()

    inside = threading.current_thread().name.startswith("gridvlm-pixels")
    helpers = [_pool().submit(work) for _ in range(_workers() - 1)] if parallel and not inside and \
        len(nodes) > 1 else []
    work()
    for helper in helpers:
        if not helper.cancel():  # one the pool never started (busy with other calls) is not waited for
            helper.result()
    if state["error"] is not None:
        raise state["error"]
    return results


def _split(n: int, parts: int) -> list[range]:
    """`range(n)` in `parts` contiguous, near-equal pieces."""
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _bands(rows: int, values_per_row: int) -> list[range]:
    """Row bands of about `_BAND_VALUES` values each, at least one per worker when there are enough rows."""
    parts = max(-(-rows * values_per_row // _BAND_VALUES), min(_workers(), rows))
    return _split(rows, min(parts, rows))


def _outputs(shapes: list[tuple[int, ...]], then: Callable[[list], None] | None = None) -> list[np.ndarray]:
    """Empty float32 arrays of these shapes, with `then(arrays)` (the padding) done to them. Made while the
    image decodes (on the other core); large ones have their pages touched, so that their page faults do not
    follow the decode either."""
    arrays = [np.empty(shape, dtype=np.float32) for shape in shapes]
    for a in arrays:
        if a.nbytes >= _TOUCH_FROM:
            a.reshape(-1).view(np.uint8)[::4096] = 0
    if then is not None:
        then(arrays)
    return arrays


def _allocate(shapes: list[tuple[int, ...]]) -> Future:
    """`_outputs(shapes)` as a future, made on a worker while this thread decodes."""
    if _workers() == 1:
        done: Future = Future()
        done.set_result(_outputs(shapes))
        return done
    return _pool().submit(_outputs, shapes)


def _as_tensor(array: np.ndarray) -> "torch.Tensor":
    """A tensor sharing the array's memory, which is only read (np.asarray of a PIL image is read-only)."""
    import warnings

    torch = _torch()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array))


def _torch_available() -> bool:
    """Whether torch is already imported. `pixel_values` imports it first; `views` (the app's gallery, which
    may run without torch) never imports it, since that costs seconds: then PIL resamples, to within
    rounding of torch (FAST_MEAN_ABS_BOUND either way)."""
    return "torch" in sys.modules


def _torch():
    from .extras import require

    return require("torch", "models", what="gridvlm.pixel_values")

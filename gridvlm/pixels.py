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
  transformers PIL-backend processors to within 1/255 after de-normalising (tests/test_pixels_reference.py).
- the default fast path decodes a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling via `draft`) when every
  view needs at most 1/`DRAFT_MARGIN` of that resolution, resizes each canvas once, cuts tiles as numpy views of
  it and normalises all views with one fused multiply-add. Idefics3's two-step resize becomes one step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Union

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
    "DRAFT_MARGIN",
    "FAST_MEAN_ABS_BOUND",
    "pixel_values",
    "qwen_patchify",
    "qwen_pixel_values",
    "views",
]

_FILTERS = {name: getattr(Image.Resampling, name.upper()) for name in RESAMPLING_FILTERS}

# The fast path decodes a JPEG at 1/k scale only if the decoded image keeps at least DRAFT_MARGIN times the
# resolution every view needs, so the resize that follows is still a real downscale with its own antialiasing.
# At 1.4 the views of a 4032×3024 photo differ from a full decode by ~0.3/255 (k = 2) to ~0.65/255 (k = 4) on
# average; 1/8 with only 0.75× left would be 1.3/255.
DRAFT_MARGIN = 1.4
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
    (reduced-scale JPEG decoding, box-reduced downscales; same FAST_MEAN_ABS_BOUND) — for previews.
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
    order of operations, and transformers' float64-then-float32 arithmetic; it matches the transformers PIL
    backends to within 1/255 after de-normalising. The default fast path may decode JPEGs at reduced scale
    (see `DRAFT_MARGIN`), lets PIL box-reduce large downscales first (`REDUCING_GAP`), resizes Idefics3 in one
    step instead of two and fuses the arithmetic. Its mean absolute difference from `exact=True`, measured in
    0..1 pixel units after de-normalising, is at most 2/255 per image (`FAST_MEAN_ABS_BOUND`, tested; typically
    0.3/255-0.5/255 where a JPEG is decoded at reduced scale and ~0.05/255 elsewhere). Canvases are resized once
    and tiles are numpy views of them, so besides the decoded image only the resized canvases are held (a view
    at the image's own size, Qwen2-VL's usual case, passes through one uint8 array of it).

    Raises `PlanError` if `plan.image_size` is not the image's upright size, `ImageError` for unreadable input.
    """
    check_views(plan)
    torch = _torch()
    mean, std = _normalisation(plan, mean, std)
    scale = 1 if exact else _draft_factor(plan)
    src = _decode(source, plan, draft=scale)
    rendered = _render(src, plan, exact=exact)
    del src  # the views hold what they need; the decoded image can go before the float tensors are made
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    sizes = {tuple(t.input_size) for t in plan.views}
    if len(sizes) == 1 and all(isinstance(v, np.ndarray) for v in rendered) and not exact:
        # One (views, h, w, 3) uint8 block, then one fused multiply-add into a contiguous (views, 3, h, w) tensor.
        if len(rendered) == 1:
            block = rendered[0][None]  # a whole image as its only view (Qwen2-VL): no extra copy
        else:
            w, h = sizes.pop()
            block = np.empty((len(rendered), h, w, 3), dtype=np.uint8)
            for i, v in enumerate(rendered):
                block[i] = v
        return _fast_normalise(block, mean, std)  # (views, 3, h, w)
    tensors = []
    for v in rendered:
        if not isinstance(v, np.ndarray):  # float32 (3, h, w) in 0..1 already
            tensors.append((v - mean_t) / std_t)
        elif exact:
            tensors.append(_exact_normalise(v, mean, std))  # (3, h, w)
        else:
            tensors.append(_fast_normalise(v[None], mean, std)[0])  # (3, h, w)
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
    """Qwen2-VL's model-ready input: `(patches, 3·T·p·p)` float32 and `grid_thw`, as its processor returns them.

    `exact=True` is `qwen_patchify(pixel_values(..., exact=True))`. The fast path reorders the uint8 pixels
    into the patch layout first (one byte per value), then makes the float32 values with one multiply-add and
    repeats them over the temporal patch in the final copy; same bound as `pixel_values` (FAST_MEAN_ABS_BOUND).
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
    src = _decode(source, plan, draft=_draft_factor(plan))
    view = _render(src, plan, exact=False)[0]  # (h, w, 3) uint8
    del src
    h, w, _ = view.shape
    gh, gw = h // p, w // p
    src = _as_tensor(view).view(gh // m, m, p, gw // m, m, p, 3).permute(0, 3, 1, 4, 6, 2, 5)  # (…, m, m, 3, p, p)
    # Write straight into the output (no intermediate float copy: fresh memory costs page faults):
    # temporal slot 0 gets the converted, normalised pixels, slot 1 a copy of it (a still image fills both).
    out = torch.empty(gh * gw * 3 * t * p * p, dtype=torch.float32)
    slots = out.view(gh // m, gw // m, m, m, 3, t, p, p)
    first = slots[:, :, :, :, :, 0]
    first.copy_(src)
    first.mul_(torch.tensor([1.0 / (255.0 * v) for v in std], dtype=torch.float32).view(3, 1, 1))
    first.add_(torch.tensor([-u / v for u, v in zip(mean, std)], dtype=torch.float32).view(3, 1, 1))
    for k in range(1, t):
        slots[:, :, :, :, :, k].copy_(first)
    return out.view(gh * gw, 3 * t * p * p), torch.tensor([[1, gh, gw]], dtype=torch.int64)


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
    """The largest k in 8, 4, 2 such that a 1/k decode still has DRAFT_MARGIN× the resolution every view needs."""
    need = _needed_resolution(plan)
    for k in DRAFT_FACTORS:
        if need * k * DRAFT_MARGIN <= 1.0:
            return k
    return 1


def _needed_resolution(plan: Plan) -> float:
    """Largest ratio (output pixels per original pixel, either axis) over every resize the plan implies."""
    w, h = plan.image_size
    ratios = []
    if plan.canvas_size is not None and any(t.canvas_box is not None for t in plan.views):
        cx0, cy0, cx1, cy1 = _canvas_content(plan)
        ratios += [(cx1 - cx0) / w, (cy1 - cy0) / h]
    for t in plan.views:
        if t.canvas_box is not None:
            continue
        bx0, by0, bx1, by1 = t.box
        cx0, cy0, cx1, cy1 = t.content_box
        if bx1 > bx0 and by1 > by0:
            ratios += [(cx1 - cx0) / (bx1 - bx0), (cy1 - cy0) / (by1 - by0)]
    return max(ratios, default=1.0)


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


def _render(src: Image.Image, plan: Plan, exact: bool) -> list[View]:
    """Every view of `plan`, in order: uint8 (h, w, 3) arrays (or float (3, h, w) for UHD release, exact)."""
    s = _scale_of(src, plan)
    recipe = _recipe(plan)
    if recipe.pad_to_square_first:
        return [_square_pad_view(src, plan, recipe)]
    if recipe.float_resize and exact:
        return _uhd_release_views(src, plan)
    resample, pad = _FILTERS[recipe.resample], recipe.pad_colour
    first = recipe.first_resize if exact else None  # the fast path folds a first resize into the next one
    canvas = None
    if any(t.canvas_box is not None for t in plan.views):
        canvas = _canvas(src, plan, s, resample, pad, first, exact)
    out = []
    for t in plan.views:
        if t.canvas_box is not None:
            x0, y0, x1, y1 = t.canvas_box
            tile = canvas[y0:y1, x0:x1]  # a numpy view: no copy
            if (x1 - x0, y1 - y0) != tuple(t.input_size):
                tile = np.asarray(Image.fromarray(tile).resize(t.input_size, resample))
            out.append(tile)
        elif recipe.thumbnail_from_canvas and t.is_thumbnail and canvas is not None:
            out.append(np.asarray(Image.fromarray(canvas).resize(t.input_size, resample)))
        else:
            out.append(_direct_view(src, plan, t, s, resample, pad, first, exact, recipe.crop_first))
    return out


def _canvas_content(plan: Plan) -> tuple[int, int, int, int]:
    if plan.content_box is not None:
        return tuple(int(v) for v in plan.content_box)
    return (0, 0, plan.canvas_size[0], plan.canvas_size[1])


def _canvas(src: Image.Image, plan: Plan, s: float, resample, pad, first: tuple[int, int] | None,
            exact: bool) -> np.ndarray:
    """The plan's canvas, (H, W, 3) uint8: the image resized ONCE to the content box (after the recipe's first
    resize, when the exact path keeps one), padding around it."""
    cw, ch = plan.canvas_size
    x0, y0, x1, y1 = _canvas_content(plan)
    size = (x1 - x0, y1 - y0)
    # The part of the content that lies on the canvas (fixed-grid without resize may leave some outside).
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, cw), min(y1, ch)
    if size == tuple(plan.image_size) and s == 1.0:
        # Not resized at all (fixed-grid resize=False): crop first so no full-size copy is made.
        resized = src.crop((ix0 - x0, iy0 - y0, ix1 - x0, iy1 - y0))
        offset = (ix0, iy0)
    else:
        if first is not None:
            resized = src.resize(first, resample).resize(size, resample)
        else:
            resized = _resize(src, size, resample, _src_box((0, 0, *plan.image_size), s), exact)
        if (ix0, iy0, ix1, iy1) != (x0, y0, x1, y1):
            resized = resized.crop((ix0 - x0, iy0 - y0, ix1 - x0, iy1 - y0))
        offset = (ix0, iy0)
    if (ix0, iy0, ix1, iy1) == (0, 0, cw, ch):
        return np.asarray(resized)
    canvas = np.empty((ch, cw, 3), dtype=np.uint8)
    canvas[...] = pad
    canvas[offset[1]:offset[1] + resized.size[1], offset[0]:offset[0] + resized.size[0]] = np.asarray(resized)
    return canvas


def _direct_view(src: Image.Image, plan: Plan, t: Tile, s: float, resample, pad, first: tuple[int, int] | None,
                 exact: bool, crop_first: bool = False) -> np.ndarray:
    """A view made straight from the image: `t.box` resized into `t.content_box`, padding around it.

    `crop_first` (Gemma 3 Pan & Scan, Idefics2's quadrants, Ovis2 original): the box is cut out first and the
    cut-out resized, so the filter does not read the pixels just outside the box as a box-resize of the whole
    image would."""
    w, h = t.input_size
    cx0, cy0, cx1, cy1 = (int(round(v)) for v in t.content_box)
    size = (cx1 - cx0, cy1 - cy0)
    box = t.box
    if size[0] <= 0 or size[1] <= 0:
        region = None
    elif s == 1.0 and all(float(v).is_integer() for v in box) and (box[2] - box[0], box[3] - box[1]) == size:
        # Same size: a crop (NaViT), or the image itself (Qwen2-VL at native size), never a resample.
        region = src if size == src.size else src.crop(tuple(int(v) for v in box))
    elif first is not None:
        region = src.resize(first, resample).resize(size, resample)
    elif crop_first and box != (0.0, 0.0, *map(float, plan.image_size)):
        cut = src.crop(tuple(int(round(v)) for v in _src_box(box, s)))
        # an empty cut (Idefics2's zero-width quadrants of a 1-px wide image) resizes to zeros there
        region = _resize(cut, size, resample, (0, 0, *cut.size), exact) if cut.size[0] and cut.size[1] else None
    else:
        region = _resize(src, size, resample, _src_box(box, s), exact)
    if (cx0, cy0, cx1, cy1) == (0, 0, w, h) and region is not None:
        return np.asarray(region)
    view = np.empty((h, w, 3), dtype=np.uint8)
    view[...] = pad
    if region is not None:
        view[cy0:cy1, cx0:cx1] = np.asarray(region)
    return view


def _resize(src: Image.Image, size, resample, box, exact: bool) -> Image.Image:
    """PIL resize of `box` (source pixels) to `size`; the fast path lets PIL box-reduce large factors first."""
    return src.resize(size, resample, box=box, reducing_gap=None if exact else REDUCING_GAP)


def _src_box(box, s: float) -> tuple[float, float, float, float]:
    return (box[0] * s, box[1] * s, box[2] * s, box[3] * s)


def _square_pad_view(src: Image.Image, plan: Plan, recipe: PixelRecipe) -> np.ndarray:
    """Paste on a max(w, h) square of `colour`, THEN resize the square (LLaVA-1.5 'pad', OneVision multi-image).

    Padding first matters: the resize blends the image's edge with the pad colour. On the fast path `src` may
    be a reduced decode; the square is then built at that scale.
    """
    w, h = src.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), recipe.pad_colour)
    square.paste(src, ((side - w) // 2, (side - h) // 2))
    t = plan.tiles[0].input_size
    return np.asarray(square.resize(t, _FILTERS[recipe.resample]))


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


# Below this many values numpy's single thread beats torch's thread pool (whose start-up dominates small work).
_TORCH_NORMALISE_FROM = 8_000_000


def _fast_normalise(nhwc: np.ndarray, mean, std) -> "torch.Tensor":
    """uint8 (n, h, w, 3) -> float32 (n, 3, h, w), `x · 1/(255·std) − mean/std`: one multiply-add per value."""
    torch = _torch()
    a = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32).reshape(3, 1, 1)
    b = np.array([-m / s for m, s in zip(mean, std)], dtype=np.float32).reshape(3, 1, 1)
    if nhwc.size >= _TORCH_NORMALISE_FROM:
        x = _as_tensor(nhwc).permute(0, 3, 1, 2).contiguous().to(torch.float32)  # permute the 1-byte values
        return torch.addcmul(torch.from_numpy(b), x, torch.from_numpy(a), out=x)
    out = np.empty((nhwc.shape[0], 3, nhwc.shape[1], nhwc.shape[2]), dtype=np.float32)
    np.multiply(nhwc.transpose(0, 3, 1, 2), a, out=out)
    out += b
    return torch.from_numpy(out)


def _as_tensor(array: np.ndarray) -> "torch.Tensor":
    """A tensor sharing the array's memory, which is only read (np.asarray of a PIL image is read-only)."""
    import warnings

    torch = _torch()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array))


def _torch():
    from .extras import require

    return require("torch", "models", what="gridvlm.pixel_values")

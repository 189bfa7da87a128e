"""Loading images safely: any input a user can hand us becomes an upright RGB image or a clear `ImageError`.

Public:
    load_image(source, max_pixels=DEFAULT_MAX_PIXELS) -> PIL.Image.Image   upright, RGB, decoded
    image_size(source, max_pixels=DEFAULT_MAX_PIXELS) -> (width, height)   upright, header only
    open_for_decode(source, max_pixels=DEFAULT_MAX_PIXELS)                 context manager for decoders
    to_upright_rgb(image, orientation)                                     the conversion load_image applies
    exif_orientation(image) -> int                                         1..8, from header metadata only

`source` is a path (str or os.PathLike), bytes / bytearray / memoryview, a binary file object, or a PIL image.

Safety rules, and why:
- The pixel count is checked from the header, before any pixel memory is allocated, so a small file that declares
  a huge image (a decompression bomb) costs nothing. Images with a zero width or height are refused too.
- Pillow's global limits (`Image.MAX_IMAGE_PIXELS`, `ImageFile.LOAD_TRUNCATED_IMAGES`) are never changed here: they
  are process-wide and other code may rely on them. Pillow's own bomb error (above 2 x MAX_IMAGE_PIXELS, ~179 MP by
  default) still applies whatever `max_pixels` says, and becomes an `ImageError` like everything else.
  If some other code sets `ImageFile.LOAD_TRUNCATED_IMAGES = True`, truncated files can no longer be detected.
- Only common raster formats are identified (`READABLE_FORMATS`): EPS would start Ghostscript, and Pillow's rarer
  plugins are little fuzzed and are not formats people upload as photos.
- Nothing is ever written. Files that we open are closed again; file objects the caller passes stay open.
- No exception other than `ImageError` leaves `load_image` / `image_size` / `open_for_decode`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
from collections.abc import Iterator
from typing import IO, Union

import numpy as np
from PIL import ExifTags, Image, PngImagePlugin

from .errors import GridVLMError, ImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "READABLE_FORMATS",
    "ImageSource",
    "exif_orientation",
    "image_size",
    "load_image",
    "load_preview",
    "open_for_decode",
    "to_upright_rgb",
]

# 64 Mi pixels = 67,108,864, e.g. 8192 x 8192. Every common camera and phone photo (12-50 MP) fits; decoded as RGB it
# takes 192 MiB. Larger images are refused unless the caller raises the limit explicitly.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

# Pillow format ids we identify, in the order they are tried. TGA has no magic number, so it goes last.
READABLE_FORMATS = (
    "PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "JPEG2000", "ICO", "PPM", "QOI", "TGA",
)
_FORMATS_FOR_PEOPLE = "PNG, JPEG, WebP, GIF, BMP, TIFF …"
# Magic numbers that tell "a damaged image" from "not an image at all" in error messages.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Image.Image]

# EXIF orientation -> the transpose that shows the image upright (the same table as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})
# Pillow's own pattern for an orientation held in XMP rather than EXIF.
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([0-9])')

_FRAME_COUNT_IN_HEADER = frozenset({"JPEG", "PNG", "WEBP", "BMP"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Premultiplied-alpha modes have no direct conversion to RGB(A); undo the premultiplication first.
_UNPREMULTIPLIED = {"RGBa": "RGBA", "La": "LA"}


# ----------------------------------------------------------------------------------------------- public functions


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `source` into an upright RGB image.

    EXIF orientation is applied; alpha and transparency are composited on white; palette, 1-bit, greyscale,
    16-bit, 32-bit and float greyscale (scaled to 8 bits, 65535 -> 255), CMYK and other modes are converted to RGB;
    an animation gives its first frame (a PIL image passed in gives its current frame). The result carries no
    metadata (`info` is empty), so nothing can rotate it a second time. A PIL image passed in is left unchanged.

    Raises ImageError (and nothing else) for missing, empty, unreadable, truncated or corrupt input, for an
    unsupported source type, and for images with more than `max_pixels` pixels or a zero width or height.
    """
    owned = not isinstance(source, Image.Image)
    with open_for_decode(source, max_pixels) as image:
        orientation = exif_orientation(image)
        image.load()  # forces the full decode, so truncation is detected here
        # Some formats (ICO) only learn their true size while decoding.
        _check_size(image.size, _describe(source), max_pixels)
        rgb = to_upright_rgb(image, orientation)
        if rgb is image and not (owned and _single_frame(image)):
            # Never hand back the caller's own object, nor a multi-frame file whose other frames we have closed.
            rgb = image.copy()
        rgb.info = {}
        return rgb


def image_size(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The upright `(width, height)` of `source`, read from the header without decoding pixels.

    Width and height are swapped for EXIF orientations 5-8, so the result equals `load_image(source).size`.
    Raises ImageError exactly where `load_image` would refuse the header (truncated pixel data is not noticed).
    """
    with open_for_decode(source, max_pixels) as image:
        width, height = image.size
        return (height, width) if exif_orientation(image) in _SWAPS_SIDES else (width, height)


def load_preview(source: ImageSource, max_side: int = 1024, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An upright RGB picture of `source` for display, at most `max_side` px on its longer side.

    Its size is the one `Image.thumbnail((max_side, max_side))` gives the full image, so overlays drawn on it
    line up exactly as on a thumbnail. A JPEG file is decoded at the smallest DCT scale (1/2, 1/4 or 1/8) that
    still has at least that size, then resized bilinearly the rest of the way: a 4032×3024 photo decodes at
    2016×1512 for a 1024-px preview. Other formats, and PIL images, are resized from full resolution (the
    caller's image is not changed). Raises ImageError where `load_image` would.
    """
    owned = not isinstance(source, Image.Image)
    with open_for_decode(source, max_pixels) as image:
        orientation = exif_orientation(image)
        swap = orientation in _SWAPS_SIDES
        upright = image.size[::-1] if swap else image.size
        target = preview_size(upright, max_side)
        if owned and image.format == "JPEG" and target != upright:
            image.draft("RGB", target[::-1] if swap else target)  # Pillow keeps the decode >= this size
        image.load()
        _check_size(image.size, _describe(source), max_pixels)
        rgb = to_upright_rgb(image, orientation)
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
        elif rgb is image:
            rgb = image.copy()
        rgb.info = {}
        return rgb


def preview_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`(w, h)` that `Image.thumbnail((max_side, max_side))` makes of an image of `size`: the aspect ratio kept,
    each side rounded to whichever neighbour keeps it closest, at least 1 px; `size` itself if it fits."""
    w, h = size
    if w <= max_side and h <= max_side:
        return (w, h)
    aspect = w / h
    if 1 >= aspect:  # taller than wide: the height is max_side
        n = min(math.floor(max_side * aspect), math.ceil(max_side * aspect), key=lambda n: abs(aspect - n / max_side))
        return (max(n, 1), max_side)
    n = min(math.floor(max_side / aspect), math.ceil(max_side / aspect),
            key=lambda n: 0 if n == 0 else abs(aspect - max_side / n))
    return (max_side, max(n, 1))


@contextlib.contextmanager
def open_for_decode(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """Open `source` lazily and check its header; yield the image with its pixels not yet decoded.

    For decoders that want control over decoding, e.g. JPEG draft mode::

        with open_for_decode(source) as image:
            orientation = exif_orientation(image)   # before load(): reads header metadata only
            image.draft("RGB", (w, h))
            image.load()
            rgb = to_upright_rgb(image, orientation)

    Any exception raised inside the block (other than a GridVLMError) becomes an ImageError naming the input,
    so Pillow's OSError / SyntaxError / struct.error … never escape. Files opened here are closed on exit; a PIL
    image or a file object passed in is yielded / used as is and not closed.
    """
    name = _describe(source)
    _check_limit(max_pixels)
    if isinstance(source, Image.Image):
        _check_size(source.size, name, max_pixels)
        with _decode_errors(name):
            yield source
        return
    with _binary_stream(source, name) as stream:
        image = _identify(stream, name)
        with image, _decode_errors(name):
            _check_size(image.size, name, max_pixels)
            yield image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1-8, from metadata Pillow reads with the header; 1 if absent or damaged.

    Call it before `load()` so that `image_size` and `load_image` always agree on the upright size.
    """
    try:
        if isinstance(image, PngImagePlugin.PngImageFile) and "exif" not in image.info and image.tile:
            # Pillow's PNG getexif() decodes every pixel to look for an eXIf chunk after the image data;
            # we only honour metadata placed before it.
            value = _xmp_orientation(image.info)
        else:
            value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not make a readable photo unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_upright_rgb(image: Image.Image, orientation: int = 1) -> Image.Image:
    """Apply `orientation` and convert a decoded image to RGB; returns `image` itself only if nothing changes."""
    method = _UPRIGHT.get(orientation)
    # Transposing before converting moves fewer bytes for palette and greyscale images.
    upright = image.transpose(method) if method is not None else image
    return _to_rgb(upright)


# ------------------------------------------------------------------------------------------- reading the source


def as_pil_image(image: "Image.Image | np.ndarray") -> Image.Image:
    """A PIL image as is, or a uint8 array ``(H, W, 3)``, ``(H, W, 4)`` or ``(H, W)`` as a PIL image (no copy of
    a PIL image; other dtypes are clipped to 0..255)."""
    if isinstance(image, Image.Image):
        return image
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0 or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected a PIL image or an (H, W, 3) uint8 array, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr)


def _describe(source: object) -> str:
    """How error messages name the input."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"the given image data ({memoryview(source).nbytes:,} bytes)"
    if isinstance(source, Image.Image):
        return "the given PIL image"
    name = getattr(source, "name", None)
    if isinstance(name, (str, os.PathLike)):
        return repr(os.fspath(name))
    return "the given file object"


@contextlib.contextmanager
def _binary_stream(source: object, name: str) -> Iterator[IO[bytes]]:
    """A seekable binary stream over `source`; only a file opened here is closed afterwards."""
    if isinstance(source, (str, os.PathLike)):
        with _open_path(source, name) as stream:
            yield stream
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = source if isinstance(source, bytes) else memoryview(source).tobytes()
        if not data:
            raise ImageError(f"{name} is empty: it holds no image data")
        yield io.BytesIO(data)
    elif callable(getattr(source, "read", None)):
        yield _seekable(source, name)
    else:
        raise ImageError(
            f"cannot load an image from an object of type {type(source).__name__}: pass a path, bytes, "
            "a binary file object or a PIL image"
        )


@contextlib.contextmanager
def _open_path(path: object, name: str) -> Iterator[IO[bytes]]:
    # We open the file ourselves (rather than giving Pillow the path) so that messages are specific and Pillow never
    # memory-maps the file: a mapped image would change, or crash, when someone rewrites the file later.
    if _is_dir(path):
        raise ImageError(f"{name} is a directory, not an image file")
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise ImageError(f"{name} does not exist: there is no file at that path") from None
    except PermissionError:
        raise ImageError(f"{name} cannot be read: permission denied") from None
    except (OSError, ValueError, TypeError) as exc:  # ValueError: embedded NUL; TypeError: odd PathLike
        raise ImageError(f"{name} cannot be opened: {exc}") from exc
    with stream:
        yield stream


def _is_dir(path: object) -> bool:
    try:
        return os.path.isdir(path)
    except (OSError, ValueError, TypeError):  # an unopenable path is reported by open() below
        return False


def _seekable(stream: object, name: str) -> IO[bytes]:
    """Pillow seeks; a pipe or socket is read into memory first (as Pillow itself would do)."""
    if isinstance(stream, io.TextIOBase):
        raise ImageError(f"{name} is open in text mode; open the file with mode 'rb'")
    try:
        if stream.seekable():
            return stream
        return io.BytesIO(stream.read())
    except Exception as exc:  # noqa: BLE001 - arbitrary file-like objects fail in arbitrary ways
        raise ImageError(f"{name} cannot be read: {exc}") from exc


@functools.cache
def _readable_formats() -> tuple[str, ...]:
    # Image.open raises KeyError for an id with no plugin (e.g. AVIF in a build without libavif), so ask first.
    Image.init()
    return tuple(fmt for fmt in READABLE_FORMATS if fmt in Image.OPEN)


def _identify(stream: IO[bytes], name: str) -> Image.ImageFile.ImageFile:
    """Image.open: reads the header only."""
    try:
        return Image.open(stream, formats=_readable_formats())
    except Image.UnidentifiedImageError as exc:
        head = _head(stream)
        if head == b"":
            raise ImageError(f"{name} is empty: it holds no image data") from None
        if (fmt := _signature_format(head)) is not None:
            raise ImageError(f"{name} starts like a {fmt} file, but its header is damaged or truncated") from exc
        raise ImageError(f"{name} is not an image gridvlm can read ({_FORMATS_FOR_PEOPLE})") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check fires inside Image.open, before we see the size; the warning arrives here only
        # when warnings are configured as errors.
        raise ImageError(
            f"{name} is larger than Pillow will decode ({exc}); refusing it as a possible decompression bomb"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - plugins raise OSError, SyntaxError, struct.error, ValueError …
        raise ImageError(f"{name} has a damaged image header and cannot be read ({_reason(exc)})") from exc


def _head(stream: IO[bytes]) -> bytes | None:
    """The first bytes of the stream, or None if they cannot be read; only used to word an error."""
    try:
        stream.seek(0)
        return stream.read(16)
    except Exception:  # noqa: BLE001
        return None


def _signature_format(head: bytes | None) -> str | None:
    """The format whose magic number `head` starts with (only unmistakable ones)."""
    if not head:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for magic, fmt in _SIGNATURES if head.startswith(magic)), None)


# ------------------------------------------------------------------------------------------------------ checks


def _check_limit(max_pixels: object) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ImageError(f"max_pixels must be a positive whole number of pixels, not {max_pixels!r}")


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels: its header says {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            f"{name} is {width}x{height} = {width * height:,} pixels, more than max_pixels = {max_pixels:,}; "
            "refusing to decode it (a possible decompression bomb). Pass a larger max_pixels if it is genuine."
        )


@contextlib.contextmanager
def _decode_errors(name: str) -> Iterator[None]:
    """Turn whatever Pillow (or numpy) raises while decoding into an ImageError naming the input."""
    try:
        yield
    except GridVLMError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # raised by seek() on big frames
        raise ImageError(f"{name} is too large to decode safely ({exc})") from exc
    except MemoryError as exc:
        raise ImageError(f"{name} is too large to decode in the memory available") from exc
    except Exception as exc:  # noqa: BLE001 - the promise is that only ImageError escapes
        raise ImageError(f"{name} is truncated or corrupt and cannot be decoded ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _single_frame(image: Image.Image) -> bool:
    """A decoded file image that holds nothing more than its pixels, so it can be returned without a copy.

    Limited to formats whose frame count is known from the header: for GIF and TIFF, is_animated seeks
    through the file and may reset the decoded frame.
    """
    return image.format in _FRAME_COUNT_IN_HEADER and not getattr(image, "is_animated", False)


# -------------------------------------------------------------------------------------------------- conversion


def _xmp_orientation(info: dict) -> int:
    xmp = info.get("XML:com.adobe.xmp") or info.get("xmp") or b""
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", "replace")
    match = _XMP_ORIENTATION.search(xmp)
    return int(match[1]) if match else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_DEPTH_MODES:
        return _to_8bit(image).convert("RGB")
    if image.mode in _UNPREMULTIPLIED:
        image = image.convert(_UNPREMULTIPLIED[image.mode])
    if image.has_transparency_data:
        return _on_white(image.convert("RGBA"))
    if image.mode == "RGB":
        return image
    return image.convert("RGB")  # 1, L, P, CMYK (incl. Adobe-inverted JPEG), YCbCr, LAB, HSV, RGBX


def _on_white(rgba: Image.Image) -> Image.Image:
    """Composite on white: a transparent pixel shows as white, as in a browser on a white page."""
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, (0, 0), rgba)
    return canvas


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit or float greyscale to 8 bits; Pillow's own convert("L") clips at 255 instead.

    Integer modes are read as 16-bit samples (Pillow decodes 16-bit PNG/TIFF/PPM into them): 0..65535 -> 0..255,
    rounded, out-of-range values clipped. Float images whose values all lie in [0, 1] are scaled by 255;
    otherwise they are taken as 0..255 (Pillow's convention) and clipped. NaN becomes 0.
    """
    values = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        eight_bit = np.clip(np.rint(values), 0, 255)
    else:
        samples = np.clip(values, 0, 65535).astype(np.uint32)
        eight_bit = (samples * 255 + 32767) // 65535  # round(v * 255 / 65535) in exact integer arithmetic
    return Image.fromarray(eight_bit.astype(np.uint8))

"""gridvlm.imaging: load_image / image_size / open_for_decode. Every image is generated here, in tmp_path."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps, features

from gridvlm.errors import GridVLMError, ImageError
from gridvlm.imaging import DEFAULT_MAX_PIXELS, image_size, load_image, open_for_decode

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
ORIENTATION = 0x0112


# ----------------------------------------------------------------------------------------------------- helpers


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def save(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def quadrants(width: int = 64, height: int = 32) -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right white: every flip and turn is visible."""
    image = Image.new("RGB", (width, height), WHITE)
    image.paste(RED, (0, 0, width // 2, height // 2))
    image.paste(GREEN, (width // 2, 0, width, height // 2))
    image.paste(BLUE, (0, height // 2, width // 2, height))
    return image


def with_orientation(image: Image.Image, fmt: str, orientation: int, **options) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(image, fmt, exif=exif.tobytes(), **options)


def corner_colours(image: Image.Image) -> tuple:
    """Colours at the centres of the four quadrants: top-left, top-right, bottom-left, bottom-right."""
    width, height = image.size
    xs, ys = (width // 4, 3 * width // 4), (height // 4, 3 * height // 4)
    return tuple(image.getpixel((x, y)) for y in ys for x in xs)


def close_to(actual, expected, tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite IHDR's width and height (and its CRC) so the header declares a size the data does not have."""
    assert png[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return png[:16] + ihdr + crc + png[33:]


@pytest.fixture
def png_bytes() -> bytes:
    return encode(quadrants(), "PNG")


# ------------------------------------------------------------------------------------------------- round trips


def test_png_round_trip_is_pixel_exact(tmp_path, png_bytes):
    loaded = load_image(save(tmp_path, "q.png", png_bytes))
    assert loaded.mode == "RGB"
    assert np.array_equal(np.asarray(loaded), np.asarray(quadrants()))


def test_jpeg_round_trip_keeps_size_and_colours(tmp_path):
    loaded = load_image(save(tmp_path, "q.jpg", encode(quadrants(), "JPEG", quality=95)))
    assert (loaded.mode, loaded.size) == ("RGB", (64, 32))
    assert all(close_to(a, e) for a, e in zip(corner_colours(loaded), (RED, GREEN, BLUE, WHITE)))


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 64), height=st.integers(1, 64), fmt=st.sampled_from(["PNG", "JPEG", "BMP", "WEBP"]))
def test_any_small_rgb_image_round_trips_to_same_size_and_rgb(width, height, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        return
    loaded = load_image(encode(Image.new("RGB", (width, height), (10, 200, 30)), fmt))
    assert (loaded.mode, loaded.size) == ("RGB", (width, height))


def test_1x1_image():
    loaded = load_image(encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    assert loaded.size == (1, 1) and loaded.getpixel((0, 0)) == (1, 2, 3)


def test_1x100_image():
    loaded = load_image(encode(Image.new("RGB", (1, 100), (9, 8, 7)), "PNG"))
    assert loaded.size == (1, 100) and loaded.getpixel((0, 99)) == (9, 8, 7)


# ------------------------------------------------------------------------------------------------ orientation


def test_exif_orientation_6_turns_clockwise(tmp_path):
    loaded = load_image(save(tmp_path, "o6.jpg", with_orientation(quadrants(), "JPEG", 6, quality=95)))
    assert loaded.size == (32, 64)
    # A clockwise quarter turn takes stored top-left to upright top-right.
    assert all(close_to(a, e) for a, e in zip(corner_colours(loaded), (BLUE, RED, WHITE, GREEN)))


def test_exif_orientation_8_turns_anticlockwise(tmp_path):
    loaded = load_image(save(tmp_path, "o8.jpg", with_orientation(quadrants(), "JPEG", 8, quality=95)))
    assert loaded.size == (32, 64)
    # An anticlockwise quarter turn takes stored top-left to upright bottom-left.
    assert all(close_to(a, e) for a, e in zip(corner_colours(loaded), (GREEN, WHITE, RED, BLUE)))


@settings(max_examples=16, deadline=None)
@given(orientation=st.integers(1, 8))
def test_every_orientation_matches_pillow_exif_transpose_and_image_size(orientation):
    data = with_orientation(quadrants(), "PNG", orientation)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    loaded = load_image(data)
    assert np.array_equal(np.asarray(loaded), np.asarray(expected))
    assert image_size(data) == loaded.size


def test_loading_twice_does_not_turn_twice(tmp_path):
    once = load_image(save(tmp_path, "o6.jpg", with_orientation(quadrants(), "JPEG", 6)))
    assert load_image(once).size == once.size == image_size(once)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow warns while parsing; the photo must still load
def test_damaged_exif_is_ignored_not_fatal():
    data = encode(quadrants(), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f garbage")
    assert load_image(data).size == (64, 32)


# ---------------------------------------------------------------------------------------------- colour modes


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (3, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))
    image.putpixel((2, 0), (0, 0, 0, 128))
    loaded = load_image(encode(image, "PNG"))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == WHITE
    assert loaded.getpixel((1, 0)) == RED
    assert close_to(loaded.getpixel((2, 0)), (127, 127, 127), tolerance=1)


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((1, 0), 1)
    loaded = load_image(encode(image, "PNG", transparency=0))
    assert (loaded.getpixel((0, 0)), loaded.getpixel((1, 0))) == (WHITE, RED)


def test_la_greyscale_with_alpha_is_composited_on_white():
    image = Image.new("LA", (2, 1), (0, 0))
    image.putpixel((1, 0), (0, 255))
    loaded = load_image(encode(image, "PNG"))
    assert (loaded.getpixel((0, 0)), loaded.getpixel((1, 0))) == (WHITE, BLACK)


def test_rgb_png_with_transparent_colour_key_is_composited_on_white():
    image = Image.new("RGB", (2, 1), (1, 2, 3))
    image.putpixel((1, 0), RED)
    loaded = load_image(encode(image, "PNG", transparency=(1, 2, 3)))
    assert (loaded.getpixel((0, 0)), loaded.getpixel((1, 0))) == (WHITE, RED)


def test_one_bit_image_becomes_black_and_white():
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    loaded = load_image(encode(image, "PNG"))
    assert (loaded.getpixel((0, 0)), loaded.getpixel((1, 0))) == (BLACK, WHITE)


def test_16_bit_greyscale_png_is_scaled_to_8_bits():
    image = Image.fromarray(np.array([[0, 257 * 100, 32896, 65535]], dtype=np.uint16))
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    loaded = load_image(data)
    assert [loaded.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (100,) * 3, (128,) * 3, (255,) * 3]


def test_32_bit_integer_image_is_read_as_16_bit_samples():
    image = Image.fromarray(np.array([[-5, 257 * 7, 65535, 100_000]], dtype=np.int32))
    assert image.mode == "I"
    loaded = load_image(image)
    assert [loaded.getpixel((x, 0))[0] for x in range(4)] == [0, 7, 255, 255]


def test_float_image_in_unit_range_is_scaled_by_255():
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32))
    loaded = load_image(image)
    assert [loaded.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 0]


def test_cmyk_jpeg_becomes_rgb():
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    loaded = load_image(data)
    assert loaded.mode == "RGB" and close_to(loaded.getpixel((8, 8)), RED)


# ------------------------------------------------------------------------------------------------- animations


def animation(fmt: str, **options) -> bytes:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)


def test_animated_gif_gives_first_frame():
    data = animation("GIF")
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert load_image(data).getpixel((4, 4)) == RED


def test_animated_png_gives_first_frame():
    data = animation("PNG")
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert load_image(data).getpixel((4, 4)) == RED


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_animated_webp_gives_first_frame():
    data = animation("WEBP", lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert load_image(data).getpixel((4, 4)) == RED


# ----------------------------------------------------------------------------------------------- source kinds


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_input(png_bytes, kind):
    assert load_image(kind(png_bytes)).size == (64, 32)


def test_str_path_input(tmp_path, png_bytes):
    assert load_image(str(save(tmp_path, "q.png", png_bytes))).size == (64, 32)


def test_binary_file_object_input_is_read_and_left_open(tmp_path, png_bytes):
    with open(save(tmp_path, "q.png", png_bytes), "rb") as stream:
        assert load_image(stream).size == (64, 32)
        assert not stream.closed


def test_unseekable_stream_input(png_bytes):
    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            return self._data.readinto(buffer)

    assert load_image(io.BufferedReader(Pipe(png_bytes))).size == (64, 32)


def test_pil_image_input_gives_a_new_rgb_image_and_leaves_the_input_alone():
    original = Image.new("RGBA", (5, 4), (0, 0, 0, 0))
    loaded = load_image(original)
    assert loaded is not original
    assert (loaded.mode, loaded.size, loaded.getpixel((0, 0))) == ("RGB", (5, 4), WHITE)
    assert original.mode == "RGBA" and original.getpixel((0, 0)) == (0, 0, 0, 0)


def test_rgb_pil_image_input_is_copied_not_returned():
    original = Image.new("RGB", (5, 4), RED)
    loaded = load_image(original)
    loaded.putpixel((0, 0), GREEN)
    assert original.getpixel((0, 0)) == RED


def test_loading_writes_nothing(tmp_path, png_bytes):
    path = save(tmp_path, "q.png", png_bytes)
    before = path.stat().st_mtime_ns
    load_image(path)
    image_size(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.png"]
    assert path.read_bytes() == png_bytes and path.stat().st_mtime_ns == before


# ------------------------------------------------------------------------------------------------------ errors


def test_text_file_is_not_an_image(tmp_path):
    path = save(tmp_path, "notes.txt", b"shopping list: eggs, milk\n")
    with pytest.raises(ImageError, match=r"notes\.txt.*not an image.*PNG, JPEG"):
        load_image(path)


def test_empty_bytes():
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_empty_file(tmp_path):
    with pytest.raises(ImageError, match=r"empty\.png.*empty"):
        load_image(save(tmp_path, "empty.png", b""))


def test_truncated_jpeg(tmp_path):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, "JPEG", quality=90)
    with pytest.raises(ImageError, match=r"cut\.jpg.*truncated"):
        load_image(save(tmp_path, "cut.jpg", data[: len(data) // 2]))


def test_truncated_png(tmp_path):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, "PNG")
    with pytest.raises(ImageError, match=r"cut\.png.*truncated"):
        load_image(save(tmp_path, "cut.png", data[: len(data) * 2 // 3]))


def test_truncation_is_detected_without_touching_pillows_global_switch(tmp_path):
    data = encode(quadrants(), "JPEG")
    with pytest.raises(ImageError):
        load_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_png_cut_inside_its_header_is_called_damaged_not_foreign(png_bytes):
    with pytest.raises(ImageError, match="starts like a PNG file, but its header is damaged"):
        load_image(png_bytes[:40])


def test_missing_path(tmp_path):
    with pytest.raises(ImageError, match=r"nowhere\.png.*does not exist"):
        load_image(tmp_path / "nowhere.png")


def test_directory_path(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_text_mode_file_object(tmp_path, png_bytes):
    with open(save(tmp_path, "q.png", png_bytes), encoding="latin-1") as stream:
        with pytest.raises(ImageError, match="text mode"):
            load_image(stream)


@pytest.mark.parametrize("source", [None, 42, 3.5, ["q.png"], {"path": "q.png"}, np.zeros((2, 2, 3))])
def test_unsupported_source_type(source):
    with pytest.raises(ImageError, match="cannot load an image from an object of type"):
        load_image(source)


@pytest.mark.parametrize("max_pixels", [0, -1, 1.5, "big", None, True])
def test_bad_max_pixels(png_bytes, max_pixels):
    with pytest.raises(ImageError, match="max_pixels"):
        load_image(png_bytes, max_pixels=max_pixels)


def test_image_error_is_a_value_error():
    with pytest.raises(ValueError):
        load_image(b"not an image")
    assert issubclass(ImageError, GridVLMError)


def test_eps_is_refused_without_running_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError, match="not an image"):
        load_image(eps)


# -------------------------------------------------------------------------------------- decompression bombs


def _no_decoding(monkeypatch):
    """A bomb must be refused from its header: decoding any pixels fails the test."""
    from PIL import ImageFile

    def decode(self, *args, **kwargs):
        raise AssertionError("pixels were decoded before the size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)


def test_png_header_declaring_10_gigapixels_is_refused_before_decoding(tmp_path, png_bytes, monkeypatch):
    path = save(tmp_path, "bomb.png", patch_png_size(png_bytes, 100_000, 100_000))
    _no_decoding(monkeypatch)
    with pytest.raises(ImageError, match="decompression bomb") as caught:
        load_image(path)
    assert "bomb.png" in str(caught.value) and "10000000000" in str(caught.value)


def test_image_above_max_pixels_is_refused_with_size_and_limit(png_bytes, monkeypatch):
    bomb = patch_png_size(png_bytes, 9000, 9000)  # 81 Mpx: above our default, below Pillow's warning
    _no_decoding(monkeypatch)
    with pytest.raises(ImageError) as caught:
        load_image(bomb)
    assert "9000x9000" in str(caught.value) and f"{DEFAULT_MAX_PIXELS:,}" in str(caught.value)


def test_pillows_bomb_warning_does_not_escape_even_as_an_error(png_bytes):
    bomb = patch_png_size(png_bytes, 10_000, 10_000)  # 100 Mpx: Pillow warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError):
            load_image(bomb)


def test_max_pixels_is_a_local_limit(png_bytes):
    max_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="2,048"):
        load_image(png_bytes, max_pixels=64 * 32 - 1)
    assert load_image(png_bytes, max_pixels=64 * 32).size == (64, 32)
    assert Image.MAX_IMAGE_PIXELS == max_before


def test_zero_width_header_is_refused(png_bytes):
    with pytest.raises(ImageError):
        load_image(patch_png_size(png_bytes, 0, 32))


def test_zero_height_pil_image_is_refused():
    with pytest.raises(ImageError, match="no pixels"):
        load_image(Image.new("RGB", (5, 0)))


def test_image_size_refuses_a_bomb_too(png_bytes):
    with pytest.raises(ImageError, match="9000x9000"):
        image_size(patch_png_size(png_bytes, 9000, 9000))


# ------------------------------------------------------------------------------------------------- image_size


def test_image_size_swaps_sides_of_exif_rotated_jpeg(tmp_path):
    path = save(tmp_path, "o6.jpg", with_orientation(quadrants(), "JPEG", 6))
    assert image_size(path) == (32, 64) == load_image(path).size


def test_image_size_reads_only_the_header():
    # Half the pixel data is missing: decoding fails, but the header alone still gives the size.
    data = with_orientation(quadrants(512, 256), "JPEG", 8)
    truncated = data[: len(data) // 2]
    assert image_size(truncated) == (256, 512)
    with pytest.raises(ImageError):
        load_image(truncated)


def test_image_size_of_pil_image():
    assert image_size(Image.new("L", (7, 3))) == (7, 3)


def test_image_size_errors_are_image_errors(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        image_size(tmp_path / "missing.jpg")


# -------------------------------------------------------------------------------------------- open_for_decode


def test_open_for_decode_yields_an_undecoded_image_for_draft_decoding(tmp_path):
    path = save(tmp_path, "big.jpg", encode(quadrants(512, 256), "JPEG"))
    with open_for_decode(path) as image:
        assert image.size == (512, 256) and image.tile  # header read, pixels not yet
        image.draft("RGB", (128, 64))
        image.load()
        assert image.size == (128, 64)


def test_open_for_decode_turns_decoding_errors_into_image_errors():
    data = encode(quadrants(512, 256), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        with open_for_decode(data[: len(data) // 2]) as image:
            image.load()


def test_open_for_decode_checks_the_header_first(png_bytes):
    with pytest.raises(ImageError, match="max_pixels"):
        with open_for_decode(png_bytes, max_pixels=100):
            pytest.fail("the block must not run for a refused image")


# ---------------------------------------------------------------------------------------------- fuzzing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_give_rgb_or_image_error(data):
    try:
        loaded = load_image(data, max_pixels=1_000_000)
    except ImageError:
        return
    assert loaded.mode == "RGB"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=4),
)
def test_damaged_images_give_rgb_or_image_error(fmt, cut, flips):
    if fmt == "WEBP" and not features.check("webp"):
        return
    data = bytearray(encode(quadrants(), fmt))
    for where, mask in flips:
        data[int(where * (len(data) - 1))] ^= mask
    data = data[: max(1, int(cut * len(data)))]
    try:
        loaded = load_image(bytes(data), max_pixels=1_000_000)
    except ImageError:
        return
    assert loaded.mode == "RGB" and loaded.width * loaded.height <= 1_000_000


def test_module_imports_without_torch():
    code = "import sys, gridvlm.imaging; assert 'torch' not in sys.modules"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)

"""The fast path's resampling pieces: torch's antialiased resize against PIL's, rows read from a decoded image,
padded canvases — each compared with the PIL operation it stands in for."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import gridvlm
from images import photo_like
from gridvlm import pixels as P

pytest.importorskip("torch")

FILTERS = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC]


@pytest.fixture(scope="module")
def photo():
    return photo_like(640, 480, seed=11)


@settings(max_examples=40, deadline=None)
@given(resample=st.sampled_from(FILTERS),
       box=st.tuples(st.integers(0, 200), st.integers(0, 150), st.integers(300, 640), st.integers(250, 480)),
       size=st.tuples(st.integers(1, 700), st.integers(1, 500)))
def test_torch_resize_is_pils_resize(photo, resample, box, size):
    """Same kernels as PIL (bicubic a = −0.5, support widened by the downscale factor), up or down: within one
    grey level everywhere but near the box's edges, where PIL also reads the pixels just outside the box."""
    got = P._torch_resize(photo, size, resample, box)
    assert got is not None and got.shape == (size[1], size[0], 3) and got.dtype == np.uint8
    expected = np.asarray(photo.resize(size, resample, box=box)).astype(int)
    diff = np.abs(got.astype(int) - expected)
    if box == (0, 0, 640, 480):
        assert diff.max() <= 2 and diff.mean() <= 0.05  # the whole image: nothing outside to read
    else:  # PIL's bicubic reads 2 source pixels past the box (bilinear 1): up to 2·zoom output pixels
        my = 1 + int(np.ceil(2 * max(1.0, size[1] / (box[3] - box[1]))))
        mx = 1 + int(np.ceil(2 * max(1.0, size[0] / (box[2] - box[0]))))
        inner = diff[my:size[1] - my, mx:size[0] - mx]
        assert inner.max(initial=0) <= 2 and (inner.mean() <= 0.05 if inner.size else True)


@pytest.mark.parametrize("resample, box", [
    (Image.Resampling.LANCZOS, (0, 0, 640, 480)),  # a filter torch does not have
    (Image.Resampling.NEAREST, (0, 0, 640, 480)),
    (Image.Resampling.BICUBIC, (0, 0, 639.5, 480)),  # a box off whole pixels (a reduced decode of an odd size)
])
def test_torch_resize_leaves_the_rest_to_pil(photo, resample, box):
    assert P._torch_resize(photo, (300, 200), resample, box) is None
    got = P._resize(photo, (300, 200), resample, box, exact=False)  # PIL does it
    assert got.shape == (200, 300, 3)


def test_fast_views_without_torch_use_pil(photo, monkeypatch):
    """views(exact=False) serves the app, which may run without torch: then PIL resamples, with the same
    result up to rounding."""
    plan = gridvlm.plan(photo, "llava-next")
    with_torch = P.views(photo, plan, exact=False)
    monkeypatch.setattr(P, "_torch_available", lambda: False)
    monkeypatch.setattr(P, "_torch", lambda: pytest.fail("torch was used"))
    without = P.views(photo, plan, exact=False)
    for a, b in zip(with_torch, without):
        assert np.abs(np.asarray(a, int) - np.asarray(b, int)).mean() <= 0.5


@settings(max_examples=30, deadline=None)
@given(w=st.integers(1, 300), h=st.integers(1, 120), rows=st.tuples(st.integers(0, 119), st.integers(1, 120)))
def test_rgb_array_is_the_images_rows(w, h, rows):
    image = photo_like(w, h, seed=w * 1000 + h) if w > 1 and h > 1 else Image.new("RGB", (w, h), (9, 80, 200))
    y0, y1 = min(rows[0], h - 1), max(min(rows[1], h), min(rows[0], h - 1) + 1)
    got = P._rgb_array(image, y0, y1)
    assert got.shape == (y1 - y0, w, 3) and np.array_equal(got, np.asarray(image)[y0:y1])


def test_rgb_array_reads_images_larger_than_one_pil_block():
    """Pillow keeps images over 16 MiB in several blocks of rows; the rows come out whole and in order."""
    image = Image.new("RGB", (2600, 2000))  # 20.8 MB as PIL holds it (4 bytes a pixel)
    image.paste((200, 10, 30), (0, 1500, 2600, 2000))
    got = P._rgb_array(image, 1000, 2000)
    assert np.array_equal(got, np.asarray(image)[1000:2000])


@pytest.mark.parametrize("colour", [(0, 0, 0), (127, 127, 127), (122, 116, 104), (255, 0, 255)])
def test_filled_has_the_colour_everywhere(colour):
    out = P._filled(5, 7, colour)
    assert out.shape == (5, 7, 3) and (out == np.array(colour, np.uint8)).all()
    assert P._filled(0, 4, colour).shape == (0, 4, 3)


# ----------------------------------------------------------------------------------------- torch's two passes


def _one_call(pixels: np.ndarray, size, mode: str) -> np.ndarray:
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(np.ascontiguousarray(pixels[:, :, :3])).permute(2, 0, 1)[None]
    y = torch.nn.functional.interpolate(x, size=(size[1], size[0]), mode=mode, antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).numpy()


@settings(max_examples=40, deadline=None)
@given(resample=st.sampled_from(FILTERS), borrowed=st.booleans(),
       size=st.tuples(st.one_of(st.just(640), st.integers(1, 900)), st.one_of(st.just(480), st.integers(1, 700))))
def test_two_pass_resize_is_torchs_one_call_to_the_bit(photo, resample, borrowed, size):
    """The horizontal pass on its own, then the vertical one (either skipped where that side keeps its size),
    from a copy of the rows or from PIL's own 4-byte pixels: exactly what one interpolate call returns."""
    decoded = P._Decoded(photo, gridvlm.plan(photo, "llava-next"))
    rows = decoded.rows if borrowed else None
    got = P._torch_resize(photo, size, resample, (0, 0, 640, 480), rows)
    mode = "bicubic" if resample == Image.Resampling.BICUBIC else "bilinear"
    assert got.shape == (size[1], size[0], 3)
    assert np.array_equal(got, _one_call(np.asarray(photo), size, mode))


def test_an_unresized_box_is_a_copy_not_the_borrowed_memory(photo):
    decoded = P._Decoded(photo, gridvlm.plan(photo, "llava-next"))
    got = P._torch_resize(photo, (200, 100), Image.Resampling.BICUBIC, (10, 20, 210, 120), decoded.rows)
    assert np.array_equal(got, np.asarray(photo)[20:120, 10:210]) and got.flags.owndata


# ----------------------------------------------------------------------------------------- borrowed pixels


def test_borrowed_pixels_are_the_images_own_memory(photo):
    pixels, owner = P._borrowed_pixels(photo)
    assert pixels.shape == (480, 640, 4) and not pixels.flags.writeable
    assert np.array_equal(pixels[:, :, :3], np.asarray(photo))
    assert owner is not None


@pytest.mark.parametrize("image", [
    Image.new("RGB", (2600, 2000)),  # 20.8 MB as PIL holds it: several blocks, so it cannot be lent
    Image.new("L", (64, 48)),
    Image.new("RGBA", (64, 48)),
], ids=["several-blocks", "L", "RGBA"])
def test_pixels_that_cannot_be_borrowed_are_copied(image):
    assert P._borrowed_pixels(image) is None
    if image.mode == "RGB":
        image.paste((200, 10, 30), (0, 1500, 2600, 2000))
        decoded = P._Decoded(image, gridvlm.plan(image, "llava-next"))
        assert np.array_equal(decoded.rows(1400, 1600), np.asarray(image)[1400:1600])


# ----------------------------------------------------------------------------------------- the work graph


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), max_size=3), min_size=1, max_size=30), st.booleans())
def test_graph_runs_every_node_once_after_what_it_needs(needs_lists, parallel):
    nodes_needs = [tuple(sorted({j for j in needs if j < i})) for i, needs in enumerate(needs_lists)]
    order: list[int] = []
    lock = threading.Lock()

    def node(i):
        def run(results):
            assert all(results[j] == j for j in nodes_needs[i])  # its inputs are there
            with lock:
                order.append(i)
            return i
        return run

    results = P._run_graph([(node(i), needs) for i, needs in enumerate(nodes_needs)], parallel=parallel)
    assert results == list(range(len(nodes_needs))) and sorted(order) == results
    for i, needs in enumerate(nodes_needs):
        assert all(order.index(j) < order.index(i) for j in needs)


def test_graph_raises_the_first_error_and_runs_nothing_that_needed_it():
    ran = []

    def fail(results):
        raise ValueError("no pixels")

    nodes = [(fail, ()), (lambda r: ran.append(1), (0,)), (lambda r: ran.append(2), ())]
    with pytest.raises(ValueError, match="no pixels"):
        P._run_graph(nodes)
    assert 1 not in ran


def test_work_finishes_while_every_worker_is_busy_elsewhere():
    """Another session's work may hold the whole pool: a call then does its own work rather than wait."""
    release = threading.Event()
    blockers = [P._pool().submit(release.wait, 30) for _ in range(P._workers())]
    try:
        done = []
        P._map(done.append, range(5))
        assert sorted(done) == list(range(5))
        assert P._run_graph([(lambda r: 1, ()), (lambda r: r[0] + 1, (0,))]) == [1, 2]
    finally:
        release.set()
        for blocker in blockers:
            blocker.result()


def test_work_started_on_a_worker_does_not_wait_for_the_pool():
    """Nested calls (a view's resize inside a graph node on a worker) run where they are."""
    assert P._pool().submit(lambda: P._run_graph([(lambda r: 2, ()), (lambda r: r[0] * 3, (0,))])).result(
        timeout=30) == [2, 6]

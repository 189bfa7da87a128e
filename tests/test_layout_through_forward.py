"""The layout of every family's visual sequence, checked through the real transformers model's forward.

For each visual position gridvlm's layout names a view, a feature cell and (from the tower's patch geometry) the
pixels of the view's input that cell covers. `model_probe` reads from the model itself which pixels of the
processor's `pixel_values` each position of the language model's input depends on. The two must agree
position by position: features on exactly their cell's pixels, newlines and markers on none.

How `pixel_values` elements map to (view, y, x) of the views' input pixels is the one family-specific piece,
written here from the processors' documented output shapes (`PIXEL_GRIDS`); every family must have one.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow  # builds and runs tiny random-weight models

from gridvlm import attention as A  # noqa: E402
from gridvlm.models import list_adapters, load_vlm, make_tiny_vlm, prepare_inputs  # noqa: E402

import model_probe as probe  # noqa: E402


def views_batch(owner: np.ndarray, inputs) -> list[np.ndarray]:
    """(1, views, 3, H, W) pixel_values (LLaVA-NeXT / OneVision anyres): one (H, W) owner map per view."""
    per_view = owner[0]  # (views, 3, H, W)
    assert (per_view == per_view[:, :1]).all(), "the three channels of a pixel feed different positions"
    return list(per_view[:, 0])


def images_batch(owner: np.ndarray, inputs) -> list[np.ndarray]:
    """(images, 3, H, W) pixel_values (LLaVA-1.5: one 336 × 336 view per image): one (H, W) owner map per image."""
    assert (owner == owner[:, :1]).all(), "the three channels of a pixel feed different positions"
    return list(owner[:, 0])


def padded_images_batch(owner: np.ndarray, inputs) -> list[np.ndarray]:
    """(images, 3, H, W) pixel_values padded at the bottom/right to the largest image, with `image_sizes` (h, w)
    per image (Pixtral / Mistral 3): one (h, w) owner map per image."""
    assert (owner == owner[:, :1]).all(), "the three channels of a pixel feed different positions"
    sizes = inputs["image_sizes"].tolist()
    return [owner[i, 0, :h, :w] for i, (h, w) in enumerate(sizes)]


# family → reads the owner array of pixel_values as one (H, W) map per view, in the processor's view order
PIXEL_GRIDS = {
    "llava-next": views_batch,
    "llava-onevision": views_batch,
    "llava-1.5": images_batch,
    "mistral3": padded_images_batch,
}

SIZES = [(640, 480), (1000, 300), (300, 900)]


def noise_image(w: int, h: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h))


@pytest.fixture(scope="module")
def vlms(tmp_path_factory):
    root = tmp_path_factory.mktemp("through_forward")
    return {}, root


def get_vlm(vlms, family):
    cache, root = vlms
    if family not in cache:
        cache[family] = load_vlm(make_tiny_vlm(root / family, family, seed=4), device="cpu")
    return cache[family]


def test_every_family_has_a_pixel_grid_reader():
    assert set(list_adapters()) <= set(PIXEL_GRIDS), set(list_adapters()) - set(PIXEL_GRIDS)


def cell_input_box(layout: A.Layout, i: int) -> tuple[float, float, float, float]:
    """gridvlm's claim: the input pixels of position i's cell, from the layout's patch geometry."""
    v = layout.view[i]
    ch, cw = layout.cell_px[v]
    r, c = layout.feat_row[i], layout.feat_col[i]
    return c * cw, r * ch, (c + 1) * cw, (r + 1) * ch


def unpooled_native_layout(vlm, size):
    """The native plan and layout when no position is pooled from several cells (OneVision pools big images)."""
    plan = vlm.native_plan(size)
    return plan, vlm.family.layout(vlm.geometry, plan)


@pytest.mark.parametrize("family", sorted(PIXEL_GRIDS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_each_native_position_sees_exactly_its_cell(vlms, family, size):
    if family not in list_adapters():
        pytest.skip(f"{family} is not a family gridvlm.models runs")
    vlm = get_vlm(vlms, family)
    image = noise_image(*size)
    prepared = prepare_inputs(vlm, image, "native", [], "What is in this picture?")
    plan, layout = unpooled_native_layout(vlm, image.size)
    positions = list(prepared.visual_positions)
    assert len(positions) == len(layout)
    with probe.patches_isolated(vlm):
        pixels, embeds = probe.language_inputs(vlm, prepared.kwargs)
        owner = probe.owners(pixels, embeds, positions)
    maps = PIXEL_GRIDS[family](owner, prepared.kwargs)
    assert len(maps) == plan.num_views
    pooled = (owner == probe.SHARED).any()
    for i in range(len(layout)):
        if layout.kind[i] != A.FEATURE:
            assert all((m != i).all() for m in maps), f"position {i} ({layout.kind[i]}) depends on pixels"
            continue
        v = layout.view[i]
        if pooled and not plan.views[v].is_thumbnail:
            continue  # pooled tile features mix several cells: checked one by one in the pooling test
        seen_in = [k for k, m in enumerate(maps) if (m == i).any()]
        assert seen_in == [v], (i, seen_in, v)
        assert probe.box_of(maps[v] == i) == pytest.approx(cell_input_box(layout, i)), i

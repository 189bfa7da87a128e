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
    """(1, views, 3, H, W) pixel_values (LLaVA-NeXT / OneVision anyres; Idefics3 / SmolVLM: the tiles row by row,
    then the global view): one (H, W) owner map per view."""
    return views_stack(owner[0], inputs)


def views_stack(owner: np.ndarray, inputs) -> list[np.ndarray]:
    """(views, 3, H, W) pixel_values (InternVL: the tiles row by row, then the thumbnail; Gemma 3: the whole image,
    then its Pan & Scan crops): one (H, W) map per view."""
    assert (owner == owner[:, :1]).all(), "the three channels of a pixel feed different positions"
    return list(owner[:, 0])


def flattened_patches(owner: np.ndarray, inputs) -> list[np.ndarray]:
    """(patches, 3 · T · p · p) pixel_values of the Qwen-VL processors (one image): one (H, W) owner map of the
    resized image. Which element holds which pixel is read from the processor itself: a colour-coded image
    already at the resized size (resize off: that size is where smart_resize leaves it), its raw values decoded
    from the flattened output. Qwen-VL checkpoints merge 2×2 patches and repeat a still image into 2 frames."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    _, gh, gw = (int(v) for v in inputs["image_grid_thw"][0])
    frames, merge = 2, 2
    p = int(round((owner.shape[1] / (3 * frames)) ** 0.5))
    h, w = gh * p, gw * p
    index = np.arange(h * w).reshape(h, w)
    coded = np.stack([index % 256, index // 256 % 256, index // 65536], axis=-1).astype(np.uint8)  # (H, W, 3)
    processor = Qwen2VLImageProcessorPil(patch_size=p, merge_size=merge, temporal_patch_size=frames,
                                         do_resize=False, do_rescale=False, do_normalize=False)
    from PIL import Image

    flat = processor(images=Image.fromarray(coded), return_tensors="np")["pixel_values"]
    assert flat.shape == owner.shape
    values = np.rint(flat).astype(np.int64).reshape(len(flat), 3, frames, p * p)
    pixel = values[:, 0] + 256 * values[:, 1] + 65536 * values[:, 2]  # (patches, frames, p·p)
    assert (pixel == pixel[:, :1]).all(), "the frames of a patch hold different pixels"
    assert np.array_equal(np.sort(pixel[:, 0].reshape(-1)), np.arange(h * w)), "not every pixel once"
    per_element = owner.reshape(len(owner), 3, frames, p * p)
    assert (per_element == per_element[:, :1, :1]).all(), "the channels or frames of a pixel feed different positions"
    out = np.empty(h * w, dtype=np.int64)
    out[pixel[:, 0].reshape(-1)] = per_element[:, 0, 0].reshape(-1)
    return [out.reshape(h, w)]


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
    "llava-1.5": views_stack,  # (images, 3, 336, 336): one view per image
    "mistral3": padded_images_batch,
    "gemma3": views_stack,
    "qwen2-vl": flattened_patches,
    "qwen2.5-vl": flattened_patches,
    "qwen3-vl": flattened_patches,
    "internvl": views_stack,
    "idefics3": views_batch,
    "smolvlm": views_batch,
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
            assert layout.has_footprint, "positions read several cells but the layout has no footprint"
            continue  # pooled tile features read several cells: test_pooled_positions_read_their_bilinear_taps
        seen_in = [k for k, m in enumerate(maps) if (m == i).any()]
        assert seen_in == [v], (i, seen_in, v)
        assert probe.box_of(maps[v] == i) == pytest.approx(cell_input_box(layout, i)), i


def footprint_masks(layout: A.Layout, i: int, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """gridvlm's claim for a pooled position: per view, the input pixels of the cells its footprint reads."""
    masks = [np.zeros(shape, dtype=bool) for shape in shapes]
    for (v, r, c), w in zip(layout.foot_cells[i], layout.foot_weights[i]):
        if w > 0:
            ch, cw = layout.cell_px[v]
            masks[v][round(r * ch):round((r + 1) * ch), round(c * cw):round((c + 1) * cw)] = True
    return masks


def test_pooled_positions_read_their_bilinear_taps(vlms):
    """OneVision's anyres_max_9 (1280×960: 81×108 tile features resized bilinearly to 70×93): each pooled
    position depends on exactly the pixels of the 2 × 2 (or fewer) cells its footprint names, across tile seams
    too — read from the model's forward one position at a time (a sample: every seam-crossing kind and others)."""
    family = "llava-onevision"
    if family not in list_adapters():
        pytest.skip(f"{family} is not a family gridvlm.models runs")
    vlm = get_vlm(vlms, family)
    image = noise_image(1280, 960)
    prepared = prepare_inputs(vlm, image, "native", [], "What is in this picture?")
    plan = vlm.native_plan(image.size)
    layout = vlm.family.layout(vlm.geometry, plan)
    assert layout.has_footprint and len(layout) == len(prepared.visual_positions)
    views_read = [len({v for (v, _, _), w in zip(layout.foot_cells[i], layout.foot_weights[i]) if w > 0})
                  for i in range(len(layout))]
    pooled = [i for i in np.nonzero(layout.feature)[0] if not plan.views[layout.view[i]].is_thumbnail]
    rng = np.random.default_rng(0)
    sample = sorted({*rng.choice([i for i in pooled if views_read[i] == 1], 4, replace=False).tolist(),
                     *rng.choice([i for i in pooled if views_read[i] == 2], 4, replace=False).tolist(),
                     *[i for i in pooled if views_read[i] == 4][:2], pooled[0], pooled[-1]})
    positions = list(prepared.visual_positions)
    with probe.patches_isolated(vlm):
        pixels, embeds = probe.language_inputs(vlm, prepared.kwargs)
        for i in sample:
            seen = PIXEL_GRIDS[family](probe.support(pixels, embeds, positions[i]).astype(np.int64),
                                       prepared.kwargs)
            expect = footprint_masks(layout, i, [m.shape for m in seen])
            for v, (got, want) in enumerate(zip(seen, expect)):
                assert (got.astype(bool) == want).all(), (i, v, probe.box_of(got.astype(bool)), probe.box_of(want))


@pytest.mark.parametrize("kept,out", [(81, 70), (108, 93), (54, 37), (10, 3), (7, 6)])
def test_bilinear_taps_are_torch_interpolate_weights(kept, out):
    """The footprint's weights: F.interpolate(mode="bilinear") of one-hot rows gives each output row's weight
    on each source row (bilinear is separable, so rows and columns are checked alike)."""
    import torch.nn.functional as F

    from gridvlm.models.families._llava import bilinear_taps

    eye = torch.eye(kept, dtype=torch.float32)[None, :, :, None].expand(1, kept, kept, 2)  # channel k: row k
    ref = F.interpolate(eye, [out, 2], mode="bilinear")[0, :, :, 0].T.numpy()  # (out, kept)
    at, w = bilinear_taps(3, kept, out)
    mine = np.zeros((out, kept))
    np.add.at(mine, (np.arange(out)[:, None].repeat(2, 1), at - 3), w)
    np.testing.assert_allclose(mine, ref, atol=1e-5)  # float32 rounding of the source coordinate, as torch

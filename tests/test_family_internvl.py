"""InternVL through gridvlm.models, against transformers' own processor, model and eager attention.

The tiny checkpoint has InternVL3-*-hf's geometry (448-px tiles, patch 14, CLS, pixel shuffle 0.5 → 256 per
view, 1–12 tiles, thumbnail last) with random weights; everything runs offline on CPU.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from hypothesis import given, settings, strategies as st  # noqa: E402

pytestmark = pytest.mark.slow  # builds and runs a tiny random-weight model

from gridvlm import attention as A  # noqa: E402
from gridvlm.models import load_vlm, make_tiny_vlm, prepare_inputs, view_pixels  # noqa: E402

from fast_processors import blank, without_pixel_work  # noqa: E402

TILE, CELL = 448, 28  # InternVL3-*-hf: view side; one feature = 2 × 2 patches of 14 px


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return make_tiny_vlm(tmp_path_factory.mktemp("internvl") / "tiny", "internvl", seed=2)


@pytest.fixture(scope="module")
def vlm(directory):
    return load_vlm(directory, device="cpu")


@pytest.fixture(scope="module")
def counting_processor(vlm, directory):
    """The checkpoint's processor with transformers' GOT-OCR2 image processor minus the resampling."""
    import copy

    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    processor = copy.copy(vlm.processor)
    processor.image_processor = without_pixel_work(GotOcr2ImageProcessorPil).from_pretrained(directory)
    return processor


def noise_image(w: int, h: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h))


def test_tiny_checkpoint_is_marked_and_has_the_real_geometry(vlm, directory):
    import transformers

    assert vlm.random_weights and "random weights" in vlm.label
    config = transformers.AutoConfig.from_pretrained(directory)
    assert config.model_type == "internvl" and list(config.vision_config.image_size) == [TILE, TILE]
    g = vlm.geometry
    assert (g.tile_size, g.patch_size, g.merge, g.min_tiles, g.max_tiles) == (TILE, 14, 2, 1, 12)
    assert g.features_side ** 2 == vlm.processor.image_seq_length == 256


def image_tokens(processor, image, image_token_id):
    """(image tokens, views) transformers' processor makes of `image`."""
    out = processor(images=image, text="<IMG_CONTEXT>", return_tensors="np")
    return int((out["input_ids"] == image_token_id).sum()), out["pixel_values"].shape[0]


sizes = st.one_of(
    st.tuples(st.integers(1, 3000), st.integers(1, 3000)),
    st.integers(1, 60).flatmap(lambda s: st.sampled_from([(s, 50 * s), (50 * s, s)])),  # 1:50 panoramas
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(size=sizes)
def test_native_plan_counts_what_the_processor_counts(vlm, counting_processor, size):
    plan = vlm.native_plan(size)
    tokens, views = image_tokens(counting_processor, blank(*size), vlm.image_token_id)
    assert (tokens, views) == (plan.token_count, plan.num_views)
    assert (plan.thumbnail is not None) == (views > 1)


@pytest.mark.parametrize("size", [(640, 480), (1000, 300), (300, 900), (448, 448), (2000, 40), (13, 7), (1, 1),
                                  (1920, 1080), (897, 449)])
def test_real_pixels_give_the_layouts_span(vlm, size):
    """The unchanged processor on real pixels: its expansion is `layout` position for position (`<img>`, image
    tokens, `</img>`)."""
    image = noise_image(*size, seed=sum(size))
    prepared = prepare_inputs(vlm, image, "native", [], "Describe it.")
    plan = vlm.native_plan(image)
    layout = vlm.family.layout(vlm.geometry, plan)
    ids = prepared.input_ids[0].numpy()[list(prepared.visual_positions)]
    image_token = ids == vlm.image_token_id
    assert np.array_equal(image_token, layout.feature)
    tok = vlm.processor.tokenizer
    assert ids[0] == tok.start_image_token_id and ids[-1] == tok.end_image_token_id
    assert prepared.kwargs["pixel_values"].shape == (plan.num_views, 3, TILE, TILE)


def test_thumbnail_is_the_last_view_and_its_own_heatmap(vlm):
    image = noise_image(1000, 300, seed=1)
    plan = vlm.native_plan(image)
    assert plan.views[-1].is_thumbnail and not any(v.is_thumbnail for v in plan.views[:-1])
    layout = vlm.family.layout(vlm.geometry, plan)
    vector = np.zeros(len(layout))
    vector[layout.feature & (layout.view == plan.num_views - 1)] = 1.0  # all mass on the thumbnail
    maps = A.map_to_views(vector, layout, plan)
    assert maps.labels[-1] == "global view" and maps.shares()["global view"] == pytest.approx(1.0)
    heat = A.to_image(maps, plan, (100, 30), which="global")
    assert heat.sum() == pytest.approx(256.0) and A.to_image(maps, plan, (100, 30)).sum() == 0


def test_position_boxes_are_28_px_cells_of_the_stretched_image(vlm):
    """A tile (r, c) shows columns c·448…(c+1)·448 of the image stretched to cols·448 × rows·448 (the
    processor's resize); feature (i, j) of it shows 28 px of that, mapped back to original pixels."""
    w, h = 1000, 300
    plan = vlm.native_plan((w, h))
    rows, cols = plan.grid
    layout = vlm.family.layout(vlm.geometry, plan)
    boxes = A.position_boxes(layout, plan)
    sx, sy = w / (cols * TILE), h / (rows * TILE)
    for k in np.nonzero(layout.feature)[0][::37]:
        v = plan.views[layout.view[k]]
        i, j = layout.feat_row[k], layout.feat_col[k]
        if v.is_thumbnail:
            expect = (j * CELL * w / TILE, i * CELL * h / TILE, (j + 1) * CELL * w / TILE, (i + 1) * CELL * h / TILE)
        else:
            x0, y0 = v.col * TILE + j * CELL, v.row * TILE + i * CELL
            expect = (x0 * sx, y0 * sy, (x0 + CELL) * sx, (y0 + CELL) * sy)
        assert boxes[k] == pytest.approx(expect)


@pytest.mark.parametrize("heads", ["mean", 1])
def test_vision_attention_equals_eager_tower(vlm, heads):
    image = noise_image(700, 500, seed=5)
    plan = vlm.native_plan(image)
    maps = A.vision_attention(vlm, image, "native", heads=heads)
    assert maps.shape == (plan.num_views, 32, 32)
    tower = vlm.family.vision_tower(vlm.model)
    before = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = tower(view_pixels(vlm, image, plan), output_attentions=True)
    finally:
        tower.set_attn_implementation(before)
    w = out.attentions[-1].numpy()[:, :, 0, 1:]  # (views, heads, patches): CLS → patches, last layer
    ref = w.mean(axis=1) if heads == "mean" else w[:, heads]
    assert np.abs(maps.reshape(len(maps), -1) - ref).max() <= 1e-5


def test_vision_heatmaps_of_a_reply(vlm):
    image = noise_image(640, 480, seed=6)
    prepared = prepare_inputs(vlm, image, "native", [], "What is it?")
    sequence = prepared.input_ids[0].tolist() + [300, 301, 302]  # plain text tokens
    record = A.reply_record(vlm, image, "native", sequence, prepared.prompt_tokens,
                            visual_positions=prepared.visual_positions)
    maps = A.attention_maps(record, source=A.VISION)
    assert [m.shape for m in maps.view_maps.maps] == [(32, 32)] * record.plan.num_views
    mass = maps.view_maps.view_mass  # CLS → patches: each view's row sums to 1 minus CLS → CLS
    assert np.all((mass > 0.5) & (mass < 1))
    llm = A.attention_maps(record, rows=0)
    assert len(llm.view_maps.maps) == record.plan.num_views and 0 < llm.view_maps.total <= 1 + 1e-6

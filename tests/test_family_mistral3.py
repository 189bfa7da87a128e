"""Mistral 3 (gridvlm.models.families.mistral3) on a tiny random-weight checkpoint, against transformers' own
PixtralProcessor / PixtralImageProcessorPil and Mistral3ForConditionalGeneration."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow  # builds and runs a tiny random-weight model

from gridvlm import PlanError  # noqa: E402
from gridvlm import attention as A  # noqa: E402
from gridvlm.models import chat, load_vlm, make_tiny_vlm, prepare_inputs  # noqa: E402

FAMILY = "mistral3"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_vlm(tmp_path_factory.mktemp("mistral3") / "tiny", FAMILY, seed=2)


@pytest.fixture(scope="module")
def vlm(tiny_dir):
    return load_vlm(tiny_dir, device="cpu")


def noise_image(w: int, h: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.NEAREST)


def test_tiny_checkpoint_has_mistral_small_geometry_and_transformers_processor(vlm):
    assert vlm.random_weights and type(vlm.model).__name__ == "Mistral3ForConditionalGeneration"
    assert type(vlm.processor).__module__ == "transformers.models.pixtral.processing_pixtral"
    assert type(vlm.processor.image_processor).__name__ == "PixtralImageProcessorPil"
    cfg = vlm.model.config
    assert (cfg.vision_config.image_size, cfg.vision_config.patch_size, cfg.spatial_merge_size) == (1540, 14, 2)
    assert vlm.geometry.longest_edge == 1540 and vlm.geometry.cell == 28
    assert not vlm.family.plan_mode


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 8000), h=st.integers(1, 8000))
def test_native_plan_is_the_processors_resize_and_token_count(vlm, w, h):
    """PixtralProcessor's own helpers (no pixels): the 28-px resize it asks the image processor for, and the
    token count it writes ([IMG] per cell, one [IMG_BREAK]/[IMG_END] per row)."""
    from transformers.models.pixtral.image_processing_pil_pixtral import get_resize_output_image_size

    rh, rw = get_resize_output_image_size(np.broadcast_to(np.zeros(1, np.uint8), (h, w, 3)), size=(1540, 1540),
                                          patch_size=(28, 28), input_data_format="channels_last")
    if rh == 0 or rw == 0:  # past 1540:1 a side floors to 0 px: nothing to resize to, refused readably
        with pytest.raises(PlanError, match="shrinks to an empty"):
            vlm.native_plan((w, h))
        return
    plan = vlm.native_plan((w, h))
    assert plan.views[0].input_size == (rw, rh)
    if h in (1, 3):
        return  # the helper below guesses channels from an (h, w, 3) array: h = 1 or 3 reads as channels-first
    counted = vlm.processor._get_num_multimodal_tokens(image_sizes=[(h, w)]).num_image_tokens[0]
    assert plan.token_count + plan.text_tokens == counted == len(vlm.family.layout(vlm.geometry, plan))


@pytest.mark.parametrize("size", [(2, 2), (1, 40), (40, 1), (300, 200), (640, 480), (1540, 1540), (1541, 700),
                                  (5000, 100), (100, 5000), (2000, 40), (29, 57), (4000, 3000)])
def test_processor_writes_the_layouts_tokens_in_order(vlm, size):
    """Real processor calls, 1:50 and 1-px images included: [IMG] at every feature, [IMG_BREAK] at every newline,
    [IMG_END] at the marker, and the view size the processor reports."""
    image = noise_image(*size, seed=sum(size))
    inputs = vlm.processor(images=image, text="[IMG]", return_tensors="pt")
    plan = vlm.native_plan(image)
    layout = vlm.family.layout(vlm.geometry, plan)
    ids = inputs["input_ids"][0].tolist()
    start = ids.index(vlm.image_token_id)
    span = ids[start:start + len(layout)]
    tok = vlm.processor.tokenizer.convert_tokens_to_ids
    expect = np.choose(layout.kind, [tok("[IMG]"), tok("[IMG_BREAK]"), tok("[IMG_END]")]).tolist()
    assert span == expect
    assert not {tok("[IMG]"), tok("[IMG_BREAK]"), tok("[IMG_END]")} & set(ids[start + len(layout):])
    assert ids.count(vlm.image_token_id) == plan.token_count
    assert tuple(inputs["image_sizes"][0].tolist()) == plan.views[0].input_size[::-1]


def test_the_plan_follows_the_processor_not_the_image_processor_alone(vlm):
    """PixtralProcessor passes patch 14·2 = 28 to the image processor: a 300×200 image becomes 308×224, where
    the image processor alone (patch 14) gives 308×210."""
    image = noise_image(300, 200)
    alone = vlm.processor.image_processor(images=image, return_tensors="pt")["image_sizes"][0].tolist()
    through = vlm.processor(images=image, text="[IMG]", return_tensors="pt")["image_sizes"][0].tolist()
    assert alone == [210, 308] and through == [224, 308]
    assert vlm.native_plan(image).views[0].input_size == (308, 224)


@pytest.mark.parametrize("heads", ["mean", 1])
def test_vision_attention_equals_the_eager_tower(vlm, heads):
    """The tower's own eager attention over the one image (its block of the block-diagonal mask), mean received."""
    image = noise_image(300, 200, seed=3)
    plan = vlm.native_plan(image)
    maps = A.vision_attention(vlm, image, plan, heads=heads)
    inputs = vlm.family.native_inputs(vlm, image, [])
    tower = vlm.family.vision_tower(vlm.model)
    before = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = tower(inputs["pixel_values"], image_sizes=inputs["image_sizes"], output_attentions=True)
    finally:
        tower.set_attn_implementation(before)
    w = out.attentions[-1][0].mean(dim=1)  # (heads, N): feature layer -1 is the last layer
    ref = (w.mean(dim=0) if heads == "mean" else w[heads]).numpy()
    assert len(maps) == 1 and maps[0].shape == (16, 22)  # 224×308 px / 14
    assert np.abs(maps[0].reshape(-1) - ref).max() <= 1e-5
    np.testing.assert_allclose(maps[0].sum(), 1.0, atol=1e-5)


def test_a_reply_record_draws_heatmaps_on_28_px_cells(vlm):
    image = noise_image(300, 200, seed=7)
    reply = chat(vlm, image, "native", [], "What is in this picture?", max_new_tokens=3, min_new_tokens=3)
    for _ in reply:
        pass
    record = A.reply_record(vlm, image, "native", reply.sequence_ids, reply.prompt_tokens,
                            visual_positions=reply.visual_positions)
    for source in (A.LLM, A.VISION):
        maps = A.attention_maps(record, source=source)
        assert len(maps.view_maps.maps) == 1
        assert A.to_image(maps.view_maps, record.plan, (150, 100)).sum() > 0
    layout = vlm.family.layout(vlm.geometry, record.plan)
    assert layout.grids == ((8, 11),)
    boxes = A.position_boxes(layout, record.plan)
    assert boxes[0] == pytest.approx((0, 0, 28 * 300 / 308, 28 * 200 / 224))
    assert np.isnan(boxes[~layout.feature]).all()


def test_native_prompt_ends_each_row_as_the_processor_does(vlm):
    prepared = prepare_inputs(vlm, noise_image(640, 480), "native", [], "Describe it.")
    ids = prepared.input_ids[0]
    span = ids[list(prepared.visual_positions)]
    tok = vlm.processor.tokenizer.convert_tokens_to_ids
    assert int((span == tok("[IMG_END]")).sum()) == 1 and int(span[-1]) == tok("[IMG_END]")
    assert int((span == tok("[IMG_BREAK]")).sum()) == 504 // 28 - 1

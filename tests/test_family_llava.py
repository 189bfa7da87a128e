"""LLaVA-1.5 (gridvlm.models.families.llava) on a tiny random-weight checkpoint, against transformers' own
LlavaProcessor / CLIPImageProcessorPil and LlavaForConditionalGeneration."""

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

import gridvlm  # noqa: E402
from gridvlm import attention as A  # noqa: E402
from gridvlm.models import ModelError, chat, load_vlm, make_tiny_vlm, prepare_inputs, view_pixels  # noqa: E402

FAMILY = "llava-1.5"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_vlm(tmp_path_factory.mktemp("llava15") / "tiny", FAMILY, seed=2)


@pytest.fixture(scope="module")
def vlm(tiny_dir):
    return load_vlm(tiny_dir, device="cpu")


def noise_image(w: int, h: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.NEAREST)


def test_tiny_checkpoint_loads_with_transformers_own_processor(tiny_dir, vlm):
    import transformers

    processor = transformers.AutoProcessor.from_pretrained(tiny_dir, backend="pil")
    assert type(processor).__name__ == "LlavaProcessor"
    assert type(processor.image_processor).__name__ == "CLIPImageProcessorPil"
    assert vlm.random_weights and type(vlm.model).__name__ == "LlavaForConditionalGeneration"
    assert vlm.geometry.mode == "crop" and vlm.geometry.features_side == 24


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 6000), h=st.integers(1, 6000))
def test_native_plan_is_the_processors_resize_and_crop(vlm, w, h):
    """The view the plan describes is the processor's: its shortest-edge resize (transformers' own helper, on a
    zero-memory array of the image's shape) and its centred 336 × 336 crop."""
    from transformers.image_transforms import get_resize_output_image_size

    plan = vlm.native_plan((w, h))
    rh, rw = get_resize_output_image_size(np.broadcast_to(np.zeros(1, np.uint8), (h, w, 3)), size=336,
                                          default_to_square=False, input_data_format="channels_last")
    assert plan.canvas_size == (rw, rh)
    top, left = int((rh - 336) / 2.0), int((rw - 336) / 2.0)  # the image processor's center_crop
    view = plan.views[0]
    assert view.canvas_box == (left, top, left + 336, top + 336)
    assert plan.token_count == 576 == view.token_count


@pytest.mark.parametrize("size", [(2, 2), (3, 700), (700, 3), (336, 336), (500, 400), (1024, 768), (300, 900),
                                  (4000, 80), (80, 4000), (337, 335)])
def test_processor_writes_what_the_plan_counts_and_its_pixels(vlm, size):
    """Real processor calls, extreme ratios included: 576 image tokens, and gridvlm's exact pixels of the native
    plan equal the processor's pixel_values."""
    image = noise_image(*size, seed=sum(size))
    inputs = vlm.processor(images=image, text="<image>", return_tensors="pt")
    plan = vlm.native_plan(image)
    assert int((inputs["input_ids"] == vlm.image_token_id).sum()) == plan.token_count
    mine = view_pixels(vlm, image, plan, exact=True)
    assert mine.shape == inputs["pixel_values"].shape == (1, 3, 336, 336)
    assert (mine - inputs["pixel_values"]).abs().max().item() <= 1e-5


def test_multi_view_plan_is_each_views_block_in_order_without_newlines(vlm):
    """The plan-mode rule: views·576 positions, view after view, each 24 × 24 row-major, no newline."""
    image = noise_image(900, 500)
    plan = gridvlm.plan(image, "internvl", max_tiles=4)
    layout = vlm.family.layout(vlm.geometry, plan)
    g = 24
    assert len(layout) == plan.num_views * g * g and layout.feature.all()
    assert layout.view.tolist() == np.repeat(np.arange(plan.num_views), g * g).tolist()
    cells = np.arange(g * g)
    for v in range(plan.num_views):
        at = layout.view == v
        assert (layout.feat_row[at] == cells // g).all() and (layout.feat_col[at] == cells % g).all()
    assert "no image_newline" in vlm.family.plan_mode_rule(vlm.geometry)
    seq = vlm.encode(image, plan)
    with torch.inference_mode():
        own = vlm.model.model.get_image_features(view_pixels(vlm, image, plan), vision_feature_layer=-2,
                                                 vision_feature_select_strategy="default").pooler_output
    assert (seq.embeds - torch.cat(list(own))).abs().max().item() <= 1e-6  # the model's own features, in order


def test_vision_attention_is_cls_to_patches_of_the_eager_tower(vlm):
    image = noise_image(640, 480, seed=3)
    plan = vlm.native_plan(image)
    maps = A.vision_attention(vlm, image, plan)
    tower = vlm.family.vision_tower(vlm.model)
    before = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = tower(view_pixels(vlm, image, plan, exact=True), output_attentions=True)
    finally:
        tower.set_attn_implementation(before)
    ref = out.attentions[0][:, :, 0, 1:].mean(dim=1).numpy()  # feature layer -2 of 2 layers: layer 0's output
    assert maps.shape == (1, 24, 24)
    assert np.abs(maps.reshape(1, -1) - ref).max() <= 1e-5


def test_a_reply_record_draws_llm_and_vision_heatmaps_on_the_crop(vlm):
    """A chat record's maps: one view, boxes of 14 px patches inside the centre crop of the image."""
    image = noise_image(800, 400, seed=7)
    reply = chat(vlm, image, "native", [], "What is in this picture?", max_new_tokens=3, min_new_tokens=3)
    for _ in reply:
        pass
    record = A.reply_record(vlm, image, "native", reply.sequence_ids, reply.prompt_tokens,
                            visual_positions=reply.visual_positions)
    for source in (A.LLM, A.VISION):
        maps = A.attention_maps(record, source=source)
        assert len(maps.view_maps.maps) == 1 and maps.view_maps.maps[0].shape == (24, 24)
        heat = A.to_image(maps.view_maps, record.plan, (200, 100))
        kept = heat.sum(axis=0) > 0
        assert kept[50:150].all() and not kept[:50].any() and not kept[150:].any()  # the crop keeps x 200–600 of 800: columns 50–150
    boxes = A.position_boxes(vlm.family.layout(vlm.geometry, record.plan), record.plan)
    assert boxes[0] == pytest.approx((200, 0, 200 + 14 * 400 / 336, 14 * 400 / 336))


def test_pixtral_towers_under_model_type_llava_are_refused(tmp_path):
    """Pixtral-12B loads as LlavaForConditionalGeneration with a Pixtral tower: refused from its config, before
    any weight is read."""
    from transformers import LlavaConfig, MistralConfig, PixtralVisionConfig

    LlavaConfig(vision_config=PixtralVisionConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                                  num_attention_heads=2),
                text_config=MistralConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                          num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="vision tower is 'pixtral', not CLIP"):
        load_vlm(tmp_path, device="cpu")


def test_native_prompt_and_plan_mode_prompt_are_the_same(vlm):
    image = noise_image(500, 700, seed=9)
    native = prepare_inputs(vlm, image, "native", [], "Describe it.")
    mine = prepare_inputs(vlm, image, vlm.native_plan(image), [], "Describe it.")
    assert torch.equal(native.input_ids, mine.input_ids)
    assert list(native.visual_positions) == list(mine.visual_positions)

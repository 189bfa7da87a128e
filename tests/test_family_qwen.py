"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL adapters on tiny random-weight checkpoints, against transformers' own code.

The processors are transformers' classes (built for images only: their video processor needs torchvision); the
native plan is compared with the image processor's own helpers on a few hundred sizes and with real processor
calls; vision-encoder attention with the tower run eagerly, its attention weights read from its own eager kernel.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.slow  # builds and runs tiny random-weight models

import gridvlm  # noqa: E402
from gridvlm import attention as A  # noqa: E402
from gridvlm.models import ModelError, chat, load_vlm, make_tiny_vlm, prepare_inputs  # noqa: E402
from gridvlm.models.adapter import get_adapter  # noqa: E402
from gridvlm.models.families._qwen import QwenVLAdapter  # noqa: E402

QWEN = ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"]
PROCESSOR = {"qwen2-vl": "Qwen2VLProcessor", "qwen2.5-vl": "Qwen2_5_VLProcessor", "qwen3-vl": "Qwen3VLProcessor"}
# the hub checkpoints' preprocessor_config.json (Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct,
# Qwen/Qwen3-VL-8B-Instruct): (patch, min_pixels, max_pixels)
HUB = {"qwen2-vl": (14, 3136, 12845056), "qwen2.5-vl": (14, 3136, 12845056), "qwen3-vl": (16, 65536, 16777216)}


@pytest.fixture(scope="module")
def vlms(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen")
    return {fam: load_vlm(make_tiny_vlm(root / fam, fam, seed=3), device="cpu") for fam in QWEN}


def noise_image(w: int, h: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h))


def test_every_qwen_family_is_registered_native_only():
    for fam in QWEN:
        adapter = get_adapter(fam)
        assert isinstance(adapter, QwenVLAdapter) and adapter.name == fam and not adapter.plan_mode
        assert fam in gridvlm.list_strategies()
        assert adapter.checkpoints and all(c.hub_id.startswith("Qwen/") for c in adapter.checkpoints)


@pytest.mark.parametrize("family", QWEN)
def test_tiny_checkpoint_keeps_the_real_geometry(vlms, family):
    import transformers

    vlm = vlms[family]
    patch, lo, hi = HUB[family]
    assert vlm.random_weights and "random weights" in vlm.label
    geo = vlm.geometry
    assert (geo.patch_size, geo.merge_size, geo.temporal_patch_size, geo.min_pixels, geo.max_pixels) == \
        (patch, 2, 2, lo, hi)
    assert isinstance(vlm.model, getattr(transformers, get_adapter(family).model_class))
    assert isinstance(vlm.processor, getattr(transformers, PROCESSOR[family]))  # transformers' own class
    assert vlm.processor.image_processor.patch_size == vlm.model.config.vision_config.patch_size == patch
    if family == "qwen2.5-vl":
        assert geo.window_size == 112 and geo.full_attention_layers == (1,)
    if family == "qwen3-vl":
        assert geo.deepstack_layers == (0,)
        assert vlm.model.config.text_config.head_dim == 16  # q/k norms act on the head dim


@pytest.mark.parametrize("family", QWEN)
def test_processor_expands_the_image_pad_as_transformers_does(vlms, family):
    """The images-only processor writes grid_thw.prod() // merge² image pads in place of the template's one
    (transformers' replace_image_token); the vision start/end markers stay template text."""
    vlm = vlms[family]
    image = noise_image(500, 333, seed=1)
    prompt = vlm.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
        add_generation_prompt=True, tokenize=False)
    assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    out = vlm.processor(images=image, text=prompt, return_tensors="pt")
    n = int(out["image_grid_thw"][0].prod()) // vlm.processor.image_processor.merge_size ** 2
    expected = vlm.tokenizer(prompt.replace("<|image_pad|>", "<|image_pad|>" * n))["input_ids"]
    assert out["input_ids"][0].tolist() == expected
    assert out["mm_token_type_ids"][0].tolist() == [int(t == vlm.image_token_id) for t in expected]
    assert n == vlm.native_plan(image.size).token_count


@pytest.mark.parametrize("family", QWEN)
def test_processor_files_load_back_as_the_same_processor(vlms, family, tmp_path):
    vlm = vlms[family]
    again = get_adapter(family).load_processor(vlm.model_id)
    assert type(again) is type(vlm.processor)
    assert again.chat_template == vlm.processor.chat_template
    assert again.image_processor.size == vlm.processor.image_processor.size


sizes = st.one_of(
    st.tuples(st.integers(1, 6000), st.integers(1, 6000)),
    st.tuples(st.integers(1, 40), st.integers(1, 8000)),  # thin strips up to the 200:1 limit
    st.tuples(st.integers(1, 8000), st.integers(1, 40)),
)


@pytest.mark.parametrize("family", QWEN)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=sizes)
def test_native_plan_equals_the_image_processors_own_count(vlms, family, size):
    """transformers' image processor counts patches with its own smart_resize (`get_number_of_image_patches`,
    what the processor's expansion divides by merge²); it raises above 200:1 where gridvlm refuses too."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    vlm = vlms[family]
    w, h = size
    ip = vlm.processor.image_processor
    try:
        patches = ip.get_number_of_image_patches(h, w, {})
    except ValueError:
        with pytest.raises(gridvlm.GridVLMError):
            vlm.native_plan((w, h))
        return
    plan = vlm.native_plan((w, h))
    rh, rw = smart_resize(h, w, ip.patch_size * ip.merge_size, ip.size["shortest_edge"], ip.size["longest_edge"])
    assert plan.views[0].input_size == (rw, rh)
    assert plan.token_count == patches // ip.merge_size ** 2
    assert get_adapter(family).patch_grids(vlm.geometry, plan) == [(rh // ip.patch_size, rw // ip.patch_size)]


REAL_CALL_SIZES = [(1, 1), (3, 500), (500, 3), (28, 28), (640, 480), (1000, 300), (300, 1000), (1024, 768),
                   (1500, 1499), (57, 2000), (2000, 57), (333, 777), (120, 90), (90, 120), (8, 1500), (1920, 1080)]


@pytest.mark.parametrize("family", QWEN)
def test_native_plan_equals_real_processor_calls(vlms, family):
    vlm = vlms[family]
    prompt = "<|vision_start|><|image_pad|><|vision_end|>hi"
    from PIL import Image

    for w, h in REAL_CALL_SIZES:
        out = vlm.processor(images=Image.new("RGB", (w, h), (90, 120, 200)), text=prompt, return_tensors="pt")
        plan = vlm.native_plan((w, h))
        _, gh, gw = out["image_grid_thw"][0].tolist()
        m = vlm.geometry.merge_size
        assert (out["input_ids"][0] == vlm.image_token_id).sum().item() == plan.token_count, (w, h)
        assert plan.views[0].token_grid == (gh // m, gw // m), (w, h)


@pytest.mark.parametrize("family", QWEN)
def test_layout_is_one_cell_per_token_and_boxes_tile_the_image(vlms, family):
    vlm = vlms[family]
    plan = vlm.native_plan((1000, 300))
    layout = vlm.family.layout(vlm.geometry, plan)
    rows, cols = plan.views[0].token_grid
    assert len(layout) == plan.token_count == rows * cols
    assert (layout.kind == A.FEATURE).all() and (layout.view == 0).all()
    assert layout.feat_row.tolist() == np.repeat(np.arange(rows), cols).tolist()
    assert layout.cell_px == ((float(vlm.geometry.cell),) * 2,)
    boxes = A.position_boxes(layout, plan)  # (positions, 4) original pixels
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
    assert area == pytest.approx(1000 * 300)  # the resized view covers the image once, cell by cell
    assert boxes[:, 0].min() == pytest.approx(0) and boxes[:, 2].max() == pytest.approx(1000)
    assert boxes[:, 3].max() == pytest.approx(300)
    with pytest.raises(ModelError, match="own slicing"):
        vlm.family.layout(vlm.geometry, gridvlm.plan((1000, 300), "internvl"))


# ------------------------------------------------------------------------------------------------ vision


def processor_patch_order(vlm, grid_thw) -> np.ndarray:
    """For each row of the processor's pixel_values, the patch it holds (row-major on the patch grid), read from
    the processor: each patch of an image already at the resized size painted with its own index."""
    from PIL import Image

    _, gh, gw = (int(v) for v in grid_thw[0])
    p = vlm.processor.image_processor.patch_size
    index = np.arange(gh * gw).reshape(gh, gw).repeat(p, 0).repeat(p, 1)
    coded = np.stack([index % 256, index // 256 % 256, index // 65536], axis=-1).astype(np.uint8)
    flat = vlm.processor.image_processor(images=Image.fromarray(coded), do_resize=False, do_rescale=False,
                                         do_normalize=False, return_tensors="np")["pixel_values"]
    first = np.rint(flat.reshape(len(flat), 3, -1)[:, :, 0]).astype(np.int64)  # (patches, 3): a pixel of each
    return first[:, 0] + 256 * first[:, 1] + 65536 * first[:, 2]


def eager_tower_weights(vlm, image, monkeypatch):
    """{layer: [(1, H, n, n) eager attention weights of each attention block, in call order]} and the order of the
    tower's sequence: seq_patch[i] = patch (row-major) at sequence position i."""
    tower = vlm.family.vision_tower(vlm.model)
    blocks = tower.blocks
    layer_of = {id(b.attn): i for i, b in enumerate(blocks)}
    module = sys.modules[type(blocks[0].attn).__module__]
    original = module.eager_attention_forward
    weights: dict[int, list] = {}

    def recording(attn, *args, **kwargs):
        out, w = original(attn, *args, **kwargs)
        weights.setdefault(layer_of[id(attn)], []).append(w.detach().clone())
        return out, w

    monkeypatch.setattr(module, "eager_attention_forward", recording)
    seen = {}
    def first_block_input(module, args, kwargs):
        seen["first"] = kwargs.get("hidden_states", args[0] if args else None)

    hooks = [tower.patch_embed.register_forward_hook(lambda m, a, out: seen.__setitem__("embedded", out)),
             blocks[0].register_forward_pre_hook(first_block_input, with_kwargs=True)]
    inputs = vlm.processor.image_processor(images=image, return_tensors="pt")
    before = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    finally:
        tower.set_attn_implementation(before)
        for h in hooks:
            h.remove()
    order = processor_patch_order(vlm, inputs["image_grid_thw"])
    if hasattr(tower, "window_size"):  # the tower reorders its sequence: find each position's row in the embedding
        emb, first = seen["embedded"].numpy(), seen["first"].numpy()
        dist = ((first[:, None, :] - emb[None, :, :]) ** 2).sum(-1)  # (N, N)
        source = dist.argmin(axis=1)
        assert np.allclose(first, emb[source]) and len(set(source.tolist())) == len(source)
        order = order[source]
    return weights, order


@pytest.mark.parametrize("family", QWEN)
@pytest.mark.parametrize("heads", ["mean", 1])
def test_vision_attention_equals_eager_tower_per_block(vlms, family, heads, monkeypatch):
    vlm = vlms[family]
    image = noise_image(300, 200, seed=2)
    plan = vlm.native_plan(image)
    weights, order = eager_tower_weights(vlm, image, monkeypatch)
    rows, cols = vlm.family.patch_grids(vlm.geometry, plan)[0]
    for layer in range(len(vlm.family.vision_layers(vlm.model))):
        got = A.vision_attention(vlm, image, plan, layers=[layer], heads=heads)
        assert got.shape == (1, rows, cols)
        received = np.concatenate([w[0].numpy().mean(axis=1) for w in weights[layer]], axis=1)  # (H, N)
        ref = received.mean(axis=0) if heads == "mean" else received[heads]
        expect = np.zeros(rows * cols)
        expect[order] = ref
        assert np.abs(got.reshape(-1) - expect).max() <= 1e-5, layer
        blocks = len(weights[layer])
        np.testing.assert_allclose(got.sum(), blocks, atol=1e-4)  # every block's mean received sums to 1
        if family == "qwen2.5-vl":
            side = 112 // 14  # a window is 112 px = 8 patches a side, the last ones cut off
            windows = -(-rows // side) * -(-cols // side)
            assert windows > 1 and blocks == (1 if layer in vlm.geometry.full_attention_layers else windows)
        else:
            assert blocks == 1


def test_windowed_layers_are_named_in_the_notes(vlms):
    geo = vlms["qwen2.5-vl"].geometry
    notes = vlms["qwen2.5-vl"].family.vision_attention_notes(geo, [0])
    assert "112×112-px windows" in notes[0] and "[1]" in notes[0] and "layers [0] are windowed" in notes[1]
    assert len(vlms["qwen2.5-vl"].family.vision_attention_notes(geo, range(1, 2))) == 1  # layer 1: full attention
    assert "deepstack" in vlms["qwen3-vl"].family.vision_attention_notes(vlms["qwen3-vl"].geometry, None)[-1]


# ------------------------------------------------------------------------------------------------ chat + maps


@pytest.mark.parametrize("family", QWEN)
def test_a_chat_record_gives_llm_and_vision_maps(vlms, family):
    vlm = vlms[family]
    image = noise_image(400, 300, seed=5)
    reply = chat(vlm, image, "native", [], "Where is the cat?", max_new_tokens=3, min_new_tokens=3)
    for _ in reply:
        pass
    record = A.reply_record(vlm, image, "native", reply.sequence_ids, reply.prompt_tokens,
                            visual_positions=reply.visual_positions)
    assert record.vision_heads == vlm.model.config.vision_config.num_heads
    llm = A.attention_maps(record, rows=0)
    assert len(llm.view_maps.maps) == 1 and llm.view_maps.maps[0].shape == record.plan.views[0].token_grid
    assert llm.view_maps.newline_mass == 0 and 0 < llm.view_maps.total <= 1
    heat = A.to_image(llm.view_maps, record.plan, (200, 150))
    assert heat.sum() == pytest.approx(llm.view_maps.total)
    vision = A.attention_maps(record, source=A.VISION)
    grid = vlm.family.patch_grids(vlm.geometry, record.plan)[0]
    assert vision.view_maps.maps[0].shape == grid
    assert vision.view_maps.cell_px == ((float(vlm.geometry.patch_size),) * 2,)


@pytest.mark.parametrize("family", QWEN)
def test_second_turn_carries_the_first_and_the_image_once(vlms, family):
    vlm = vlms[family]
    image = noise_image(300, 300, seed=7)
    first = chat(vlm, image, "native", [], "Describe it.", max_new_tokens=3, min_new_tokens=3)
    for _ in first:
        pass
    prepared = prepare_inputs(vlm, image, "native", [("Describe it.", first.text)], "And now?")
    ids = prepared.input_ids[0].tolist()
    assert ids.count(vlm.image_token_id) == vlm.native_plan(image.size).token_count
    assert vlm.tokenizer.decode(ids).count("Describe it.") == 1
    with pytest.raises(ModelError, match="context"):
        prepare_inputs(vlm, image, "native", [], "x", max_new_tokens=vlm.context_length)


def test_geometry_disagreeing_with_the_tower_is_refused(vlms):
    vlm = vlms["qwen2-vl"]
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    wrong = Qwen2VLImageProcessorPil(patch_size=16, min_pixels=3136, max_pixels=12845056)
    with pytest.raises(ModelError, match="patch_size 16"):
        vlm.family.read_geometry(vlm.model.config, wrong)

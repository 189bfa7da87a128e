"""Gemma 3 on tiny random-weight checkpoints, against transformers' own processor and model.

Two checkpoints: the hub's setting (Pan & Scan off) and the same one with do_pan_and_scan true in its image
processor config (crops after the whole image, each its own 256-token block).
"""

from __future__ import annotations

import json
import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow  # builds and runs tiny random-weight models

from gridvlm import attention as A  # noqa: E402
from gridvlm.models import ModelError, chat, load_vlm, make_tiny_vlm, prepare_inputs, prompt_size  # noqa: E402

import model_probe as probe  # noqa: E402
from test_layout_through_forward import PIXEL_GRIDS, cell_input_box  # noqa: E402

TOL = 1e-5
QUESTION = "What is in this picture?"


def noise_image(w: int, h: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma3")
    plain = make_tiny_vlm(root / "plain", "gemma3", seed=2)
    crops = root / "pan_and_scan"
    shutil.copytree(plain, crops)
    config = json.loads((crops / "processor_config.json").read_text())
    config["image_processor"]["do_pan_and_scan"] = True
    (crops / "processor_config.json").write_text(json.dumps(config))
    return {"plain": plain, "pan_and_scan": crops}


@pytest.fixture(scope="module")
def vlm(dirs):
    return load_vlm(dirs["plain"], device="cpu")


@pytest.fixture(scope="module")
def ps_vlm(dirs):
    return load_vlm(dirs["pan_and_scan"], device="cpu")


# ------------------------------------------------------------------------------------------------ checkpoint


def test_tiny_checkpoint_is_marked_and_loads_with_transformers(dirs, vlm):
    directory = dirs["plain"]
    assert json.loads((directory / "config.json").read_text())["gridvlm_random_weights"] is True
    assert vlm.random_weights and "random weights" in vlm.label
    processor = transformers.AutoProcessor.from_pretrained(directory, backend="pil")
    assert type(processor).__name__ == "Gemma3Processor"
    assert type(processor.image_processor).__name__ == "Gemma3ImageProcessorPil"
    cfg = vlm.model.config
    assert (cfg.vision_config.image_size, cfg.vision_config.patch_size, cfg.mm_tokens_per_image) == (896, 14, 256)
    assert processor.image_seq_length == 256
    # both attention layer types, and a window shorter than a one-image prompt: the capture checks cover both
    assert set(cfg.text_config.layer_types) == {"sliding_attention", "full_attention"}
    assert prompt_size(vlm, (640, 480), "native", [], QUESTION).prompt_tokens > cfg.text_config.sliding_window
    assert cfg.text_config.num_key_value_heads < cfg.text_config.num_attention_heads
    assert vlm.geometry.pan_and_scan is False


def test_geometry_reads_pan_and_scan_from_the_image_processor(ps_vlm):
    geo = ps_vlm.geometry
    assert geo.pan_and_scan and (geo.min_crop, geo.max_crops, geo.min_ratio) == (256, 4, 1.2)  # processor defaults
    assert (geo.tokens_side, geo.pool) == (16, 4)
    assert "Pan & Scan up to 4 crops" in geo.describe()


# ------------------------------------------------------------------------------------------------ native plan


def _crop_boxes(image_processor, w: int, h: int, geo) -> list[tuple[int, int, int, int]]:
    """transformers' own pan_and_scan on coordinate-coded (broadcast, so free) arrays: each crop's (x0, y0, x1, y1)."""
    ys = np.broadcast_to(np.arange(h)[None, :, None], (1, h, w))
    xs = np.broadcast_to(np.arange(w)[None, None, :], (1, h, w))
    args = (geo.min_crop, geo.max_crops, geo.min_ratio)
    out = []
    for cy, cx in zip(image_processor.pan_and_scan(ys, *args), image_processor.pan_and_scan(xs, *args)):
        out.append((int(cx.min()), int(cy.min()), int(cx.max()) + 1, int(cy.max()) + 1))
    return out


def _check_plan_against_processor_helpers(vlm, w: int, h: int) -> None:
    geo, processor = vlm.geometry, vlm.processor
    plan = vlm.native_plan((w, h))
    crops = _crop_boxes(processor.image_processor, w, h, geo) if geo.pan_and_scan else []
    expansion = processor.replace_image_token({"num_crops": [len(crops)]}, 0)
    assert plan.token_count == expansion.count(processor.tokenizer.image_token)
    assert plan.num_views == expansion.count(processor.boi_token) == 1 + len(crops)
    assert [tuple(t.box) for t in plan.tiles] == (crops or [(0, 0, w, h)])
    layout = vlm.family.layout(geo, plan)
    assert layout.per_view() == [geo.tokens_per_view] * plan.num_views


SIDES = st.one_of(st.integers(1, 64), st.integers(65, 4000))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=SIDES, h=SIDES)
def test_native_plan_equals_the_processors_crops_and_tokens(vlm, ps_vlm, w, h):
    for model in (vlm, ps_vlm):
        _check_plan_against_processor_helpers(model, w, h)


@pytest.mark.parametrize("size", [(1, 1), (3, 150), (150, 3), (50, 2500), (2500, 50), (640, 480), (480, 640),
                                  (1000, 300), (300, 900), (1200, 1000), (1199, 1000), (512, 255), (2048, 300)])
def test_processor_calls_write_what_the_plan_says(vlm, ps_vlm, size):
    """The real processor call on an image of the size: soft tokens in input_ids, views in pixel_values, and
    the visual positions found in its ids are the layout's, in order."""
    from PIL import Image

    image = Image.new("RGB", size)
    for model in (vlm, ps_vlm):
        prepared = prepare_inputs(model, image, "native", [], QUESTION)
        plan = model.native_plan(image)
        ids = prepared.input_ids[0].tolist()
        layout = model.family.layout(model.geometry, plan)
        assert ids.count(model.image_token_id) == plan.token_count == int(layout.feature.sum())
        assert prepared.kwargs["pixel_values"].shape[0] == plan.num_views
        assert len(prepared.visual_positions) == len(layout)
        at = [ids[p] for p in prepared.visual_positions]
        assert all((t == model.image_token_id) == bool(f) for t, f in zip(at, layout.feature))
        counted = prompt_size(model, size, "native", [("Hi", "Hello")], QUESTION)
        built = prepare_inputs(model, image, "native", [("Hi", "Hello")], QUESTION)
        assert (counted.prompt_tokens, counted.visual_tokens) == (built.prompt_tokens, built.visual_tokens)


def test_the_expansions_newlines_merge_with_the_template_text(vlm):
    """Why the visual positions are the <start_of_image>…<end_of_image> blocks: the "\\n\\n" the processor writes
    around them tokenises together with the template's own "\\n" (one "\\n\\n\\n" token, as in Gemma's vocabulary),
    so the tokens before the image differ from the template's, and the generic rule cannot hold."""
    from gridvlm.models.conversation import prompt_text

    image = noise_image(640, 480)
    prompt = prompt_text(vlm, [], QUESTION)
    template = vlm.tokenizer(prompt)["input_ids"]
    boi = vlm.family.placeholder_token_id(vlm)
    prepared = prepare_inputs(vlm, image, "native", [], QUESTION)
    ids = prepared.input_ids[0].tolist()
    start = template.index(boi)
    assert ids[:start] != template[:start]  # "user\n" + "\n\n" is one token
    assert len(ids) != len(template) - 1 + len(prepared.visual_positions)
    first, last = prepared.visual_positions[0], prepared.visual_positions[-1]
    assert ids[first] == boi and ids[last] == vlm.model.config.eoi_token_id
    assert vlm.tokenizer.decode(ids[first - 1:first]).endswith("\n") and vlm.tokenizer.decode([ids[last + 1]]) == "\n\n"


def test_a_processor_that_disagrees_is_refused(vlm):
    from gridvlm.models.conversation import native_visual_span, prompt_text

    image = noise_image(640, 480)
    prepared = prepare_inputs(vlm, image, "native", [], QUESTION)
    ids = prepared.input_ids[0].tolist()
    short = ids[:prepared.visual_positions[0] + 100] + ids[prepared.visual_positions[0] + 101:]  # one soft token less
    with pytest.raises(ModelError, match="the processor wrote 1 image blocks"):
        native_visual_span(vlm, prompt_text(vlm, [], QUESTION), short, vlm.native_plan(image))


# ------------------------------------------------------------------------------------------------ layout


def test_pan_and_scan_positions_see_exactly_their_cells_through_the_forward(ps_vlm):
    """The probe of tests/test_layout_through_forward.py on a Pan & Scan image: whole image, then 2 crops."""
    image = noise_image(300, 700, seed=3)
    prepared = prepare_inputs(ps_vlm, image, "native", [], QUESTION)
    plan = ps_vlm.native_plan(image)
    layout = ps_vlm.family.layout(ps_vlm.geometry, plan)
    assert plan.num_views == 3 and plan.views[0].is_thumbnail
    positions = list(prepared.visual_positions)
    with probe.patches_isolated(ps_vlm):
        pixels, embeds = probe.language_inputs(ps_vlm, prepared.kwargs)
        owner = probe.owners(pixels, embeds, positions)
    maps = PIXEL_GRIDS["gemma3"](owner, prepared.kwargs)
    assert len(maps) == plan.num_views and not (owner == probe.SHARED).any()
    for i in range(len(layout)):
        if layout.kind[i] != A.FEATURE:
            assert all((m != i).all() for m in maps), i
            continue
        v = layout.view[i]
        assert [k for k, m in enumerate(maps) if (m == i).any()] == [v], i
        assert probe.box_of(maps[v] == i) == pytest.approx(cell_input_box(layout, i)), i


def test_position_boxes_follow_the_crops(ps_vlm):
    plan = ps_vlm.native_plan((300, 700))
    layout = ps_vlm.family.layout(ps_vlm.geometry, plan)
    boxes = A.position_boxes(layout, plan)
    for v, view in enumerate(plan.views):
        x0, y0, x1, y1 = view.box
        feats = np.nonzero(layout.feature & (layout.view == v))[0]
        mine = boxes[feats]  # 256 cells of 56 input pixels each, spread over the view's box
        assert mine[:, 0].min() == pytest.approx(x0) and mine[:, 2].max() == pytest.approx(x1)
        assert mine[:, 1].min() == pytest.approx(y0) and mine[:, 3].max() == pytest.approx(y1)
        np.testing.assert_allclose(mine[0], [x0, y0, x0 + (x1 - x0) / 16, y0 + (y1 - y0) / 16])
    assert np.isnan(boxes[~layout.feature]).all()


# ------------------------------------------------------------------------------------------------ attention


def _eager(vlm, inputs):
    lm = vlm.family.language_model(vlm.model)
    before = lm.config._attn_implementation
    lm.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = vlm.model(**inputs, output_attentions=True, use_cache=False)
    finally:
        lm.set_attn_implementation(before)
    return torch.stack(out.attentions)[:, 0].float().numpy()  # (layers, heads, S, S)


def test_pan_and_scan_capture_equals_eager_on_both_layer_types(ps_vlm):
    """Several bidirectional image blocks, a sliding window shorter than the sequence, a full layer."""
    image = noise_image(1000, 300, seed=5)
    prepared = prepare_inputs(ps_vlm, image, "native", [], QUESTION)
    visual = np.asarray(prepared.visual_positions)
    seq = prepared.input_ids.shape[1]
    assert seq > 2 * ps_vlm.model.config.text_config.sliding_window
    rows = np.concatenate((visual[::97], np.arange(visual[-1] + 1, seq)))  # image rows see their block ahead
    ref = _eager(ps_vlm, prepared.kwargs)
    for heads in ("mean", 3):
        got = A.llm_attention(ps_vlm, prepared.kwargs, visual, rows, heads=heads)
        part = ref[:, :, rows][:, :, :, visual]
        expect = part.mean(axis=1) if heads == "mean" else part[:, heads]
        assert np.abs(got - expect).max() <= TOL
    soft = visual[1]  # the first soft token attends to later soft tokens of its block (bidirectional)
    assert ref[1, :, soft, visual[2]].max() > 0


@pytest.mark.parametrize("which", ["plain", "pan_and_scan"])
def test_vision_attention_equals_the_towers_eager_attention(vlm, ps_vlm, which):
    model = vlm if which == "plain" else ps_vlm
    image = noise_image(900, 400, seed=7)
    plan = model.native_plan(image)
    got = A.vision_attention(model, image, "native", heads="mean")
    tower = model.family.vision_tower(model.model)
    before = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    expect = []
    try:
        with torch.inference_mode():
            for view in model.family.image_outputs(model, image)["pixel_values"]:  # one (heads, N, N) at a time
                weights = tower(view[None], output_attentions=True).attentions[-1][0].float()  # the projector's layer
                expect.append(weights.mean(dim=1).mean(dim=0).reshape(64, 64).numpy())  # attention a patch receives
    finally:
        tower.set_attn_implementation(before)
    assert got.shape == (plan.num_views, 64, 64)
    assert np.abs(got - np.stack(expect)).max() <= TOL


def test_pan_and_scan_reply_maps_show_each_crop_in_the_models_order(ps_vlm):
    image = noise_image(1000, 300, seed=8)
    reply = chat(ps_vlm, image, "native", [], QUESTION, max_new_tokens=3, min_new_tokens=3)
    parts = list(reply)
    assert parts and all(b.startswith(a) for a, b in zip(parts, parts[1:]))
    record = A.reply_record(ps_vlm, image, "native", reply.sequence_ids, reply.prompt_tokens,
                            visual_positions=reply.visual_positions)
    maps = A.attention_maps(record)
    plan = record.plan
    assert maps.view_maps.labels == ("global view", "tile 0,0", "tile 0,1", "tile 0,2")
    assert [m.shape for m in maps.view_maps.maps] == [(16, 16)] * plan.num_views
    inputs, visual, layout = A.rebuild_inputs(ps_vlm, record)
    assert set(inputs) >= {"token_type_ids", "pixel_values"}
    assert torch.equal(inputs["token_type_ids"][0], (inputs["input_ids"][0] == ps_vlm.image_token_id).long())
    rows = np.concatenate(record.query_rows())
    answer = _eager(ps_vlm, inputs)[:, :, rows[len(record.query_rows()[0]):]][:, :, :, visual]
    np.testing.assert_allclose(maps.view_maps.total, answer.mean(axis=(0, 1, 2)).sum(), atol=TOL)
    heat = A.to_image(maps.view_maps, plan, (100, 30), which="tiles")
    assert heat.shape == (30, 100) and heat.sum() == pytest.approx(maps.view_maps.view_mass[1:].sum())

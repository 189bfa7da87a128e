"""Attention capture on tiny random-weight checkpoints, compared with transformers' own eager attentions.

The reference is the language model (or vision tower) run with eager attention and output_attentions=True;
the capture runs with the checkpoint's default (SDPA) kernel and keeps only the asked rows × columns.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # a guard: nothing here may touch the network

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow  # builds and runs tiny random-weight models

import gridvlm  # noqa: E402
from gridvlm import attention as A  # noqa: E402
from gridvlm.models import chat, list_adapters, load_vlm, make_tiny_vlm, prepare_inputs, view_pixels  # noqa: E402
from gridvlm.models.adapter import get_adapter  # noqa: E402
from gridvlm.models.families._llava import LlavaAdapter  # noqa: E402

FAMILIES = list_adapters()
PLAN_MODE = [f for f in FAMILIES if get_adapter(f).plan_mode]  # any gridvlm plan can be fed to the model
BATCHED_TOWERS = [f for f in FAMILIES if isinstance(get_adapter(f), LlavaAdapter)]  # views as a (V, 3, t, t) batch
TOL = 1e-5


@pytest.fixture(scope="session")
def vlms(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention_vlms")
    return {fam: load_vlm(make_tiny_vlm(root / fam, fam, seed=1), device="cpu") for fam in FAMILIES}


def noise_image(w: int, h: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.NEAREST)


def final_sequence(vlm, image, plan, answer_tokens=5, seed=0):
    """Plan-mode prompt embeddings with `answer_tokens` token embeddings appended (a finished reply)."""
    prepared = prepare_inputs(vlm, image, plan, [], "What is in this picture?")
    ids = prepared.input_ids[0]
    visual = (ids == vlm.image_token_id).nonzero().flatten().numpy()
    answer = torch.randint(10, 500, (answer_tokens,), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        answer_embeds = vlm.model.get_input_embeddings()(answer)[None]  # (1, answer, D)
    embeds = torch.cat((prepared.kwargs["inputs_embeds"], answer_embeds), dim=1)  # (1, S, D)
    return embeds, visual, prepared


def eager_attentions(vlm, embeds=None, inputs=None):
    """transformers' own weights: (layers, heads, S, S) with eager attention."""
    lm = vlm.family.language_model(vlm.model)
    before = lm.config._attn_implementation
    lm.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            if inputs is not None:
                out = vlm.model(**inputs, output_attentions=True, use_cache=False)
            else:
                out = lm(inputs_embeds=embeds, output_attentions=True, use_cache=False)
    finally:
        lm.set_attn_implementation(before)
    assert len(out.attentions) == len(lm.layers) and out.attentions[0].numel()  # eager: SDPA would return an empty tuple
    return torch.stack([a[0] for a in out.attentions]).numpy()


def reduce(ref, layers, rows, cols, heads):
    sel = ref[layers][:, :, rows][:, :, :, cols]  # (layers, heads, rows, cols)
    if heads == "mean":
        return sel.mean(axis=1)
    if heads == "max":
        return sel.max(axis=1)
    return sel[:, heads]


PLANS = {
    "native": lambda vlm, image: vlm.native_plan(image),
    "internvl": lambda vlm, image: gridvlm.plan(image.size, "internvl", max_tiles=4),
    "llava-uhd": lambda vlm, image: gridvlm.plan(image.size, "llava-uhd", variant="release"),
}


@pytest.mark.parametrize("family", PLAN_MODE)
@pytest.mark.parametrize("plan_name", list(PLANS))
def test_captured_rows_equal_eager_output_attentions(vlms, family, plan_name):
    vlm = vlms[family]
    image = noise_image(640, 400, seed=len(plan_name))
    plan = PLANS[plan_name](vlm, image)
    embeds, visual, prepared = final_sequence(vlm, image, plan)
    seq = embeds.shape[1]
    assert prepared.out_of_distribution == (plan_name != "native")
    answer = A.writer_rows(prepared.prompt_tokens, 5)
    question = np.arange(visual[-1] + 1, prepared.prompt_tokens)
    rows = np.concatenate((question, answer))
    assert rows.max() < seq
    ref = eager_attentions(vlm, embeds)
    for heads in ("mean", 1, "max"):
        got = A.llm_attention(vlm, embeds, visual, rows, heads=heads)
        assert got.shape == (2, len(rows), len(visual))
        assert np.abs(got - reduce(ref, [0, 1], rows, visual, heads)).max() <= TOL


@pytest.mark.parametrize("family", PLAN_MODE)
def test_layer_subset_and_last_layer_alone(vlms, family):
    vlm = vlms[family]
    image = noise_image(500, 700, seed=2)
    embeds, visual, prepared = final_sequence(vlm, image, vlm.native_plan(image))
    rows = A.writer_rows(prepared.prompt_tokens, 5)
    ref = eager_attentions(vlm, embeds)
    for layers, expect in (((1, 1), [1]), ([0], [0]), (-1, [1]), (None, [0, 1])):
        rec_layers = A.resolve_layers(layers, 2)
        assert rec_layers == expect
        got = A.llm_attention(vlm, embeds, visual, rows, layers=layers, heads=0)
        assert np.abs(got - reduce(ref, expect, rows, visual, 0)).max() <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_native_mode_inputs_run_the_whole_model(vlms, family):
    """Model inputs as transformers' processor makes them (pixel_values, and whatever else the family's forward
    reads: grid sizes, token types, rotary positions): the capture equals eager output_attentions."""
    vlm = vlms[family]
    image = noise_image(800, 600, seed=4)
    prepared = prepare_inputs(vlm, image, "native", [], "Where is the cat?")
    ids = prepared.input_ids[0]
    visual = np.asarray(prepared.visual_positions)
    assert set((ids == vlm.image_token_id).nonzero().flatten().tolist()) <= set(visual.tolist())
    rows = np.arange(visual[-1] + 1, len(ids))
    got = A.llm_attention(vlm, prepared.kwargs, visual, rows, heads="mean")
    ref = eager_attentions(vlm, inputs=prepared.kwargs)
    assert np.abs(got - reduce(ref, [0, 1], rows, visual, "mean")).max() <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_a_finished_reply_gives_maps_of_its_own_inputs(vlms, family):
    """chat → reply_record → attention_maps: the captured rows are those of the reply's own sequence, run as the
    model runs it (eager reference on the same ids and image), and the mass lands on the plan's views."""
    vlm = vlms[family]
    image = noise_image(640, 480, seed=6)
    reply = chat(vlm, image, "native", [], "What is in this picture?", max_new_tokens=4, min_new_tokens=4)
    for _ in reply:
        pass
    record = A.reply_record(vlm, image, "native", reply.sequence_ids, reply.prompt_tokens,
                            visual_positions=reply.visual_positions)
    inputs, visual, layout = A.rebuild_inputs(vlm, record)
    assert len(layout) == len(visual) == len(record.visual_positions)
    rows = np.concatenate(record.query_rows())
    if isinstance(inputs, dict):
        ref = eager_attentions(vlm, inputs=inputs)
    else:
        ref = eager_attentions(vlm, embeds=inputs)
    expect = reduce(ref, list(range(ref.shape[0])), rows, visual, "mean")  # (layers, rows, visual)
    maps = A.attention_maps(record, rows=A.WHOLE_ANSWER)
    vector = expect[:, len(record.query_rows()[0]):].mean(axis=(0, 1))
    np.testing.assert_allclose(maps.view_maps.total, vector.sum(), atol=1e-5)
    assert len(maps.view_maps.maps) == record.plan.num_views


def test_rows_sum_to_at_most_one_and_visual_share_is_plausible(vlms):
    vlm = vlms["llava-onevision"]
    image = noise_image(400, 400)
    embeds, visual, prepared = final_sequence(vlm, image, vlm.native_plan(image))
    every = np.arange(embeds.shape[1])
    rows = A.writer_rows(prepared.prompt_tokens, 5)
    whole = A.llm_attention(vlm, embeds, every, rows)
    np.testing.assert_allclose(whole.sum(axis=-1), 1.0, atol=1e-5)  # softmax rows over every key
    causal = A.llm_attention(vlm, embeds, every, [3])
    assert np.all(causal[:, 0, 4:] == 0)  # a query never sees later keys


# ------------------------------------------------------------------------------------------------ hooks


def _hook_counts(vlm):
    mods = [layer.self_attn for layer in A.text_layers(vlm)] + list(A.text_layers(vlm))
    mods += [layer.self_attn for layer in A.vision_layers(vlm)] + list(A.vision_layers(vlm))
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in mods)


def test_hooks_are_removed_after_the_context_and_on_error(vlms):
    vlm = vlms["llava-next"]
    before = _hook_counts(vlm)
    embeds = torch.randn(1, 30, vlm.model.config.text_config.hidden_size)
    with A.capture_llm_attention(vlm, rows=[29], cols=range(10), layers=[1]) as rec:
        assert _hook_counts(vlm) == before + 1 and rec.active
        with torch.inference_mode():
            vlm.model.model.language_model(inputs_embeds=embeds, use_cache=False)
    assert _hook_counts(vlm) == before and not rec.active
    assert rec.result.shape == (1, 1, 10)

    with pytest.raises(A.AttentionError, match="query rows must lie"):  # raised inside the forward
        with A.capture_llm_attention(vlm, rows=[99], cols=range(10)):
            with torch.inference_mode():
                vlm.model.model.language_model(inputs_embeds=embeds, use_cache=False)
    assert _hook_counts(vlm) == before

    with pytest.raises(RuntimeError, match="boom"):  # the caller's own error
        with A.capture_llm_attention(vlm, rows=[1], cols=[0]):
            raise RuntimeError("boom")
    assert _hook_counts(vlm) == before

    with pytest.raises(A.AttentionError, match="must lie"):  # through llm_attention, stop hook included
        A.llm_attention(vlm, embeds, [0, 1], [1000])
    assert _hook_counts(vlm) == before
    A.llm_attention(vlm, embeds, [0, 1], [5], layers=[0])  # early stop after layer 0
    assert _hook_counts(vlm) == before
    # the model still works normally afterwards
    with torch.inference_mode():
        out = vlm.model.model.language_model(inputs_embeds=embeds, use_cache=False)
    assert out.last_hidden_state.shape == (1, 30, embeds.shape[-1])


def test_eject_is_idempotent_and_other_threads_are_not_recorded(vlms):
    import threading

    vlm = vlms["llava-next"]
    embeds = torch.randn(1, 12, vlm.model.config.text_config.hidden_size)
    with A.capture_llm_attention(vlm, rows=[11], cols=[0, 1], layers=[0]) as rec:
        def other():
            with torch.inference_mode():
                vlm.model.model.language_model(inputs_embeds=embeds, use_cache=False)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        with pytest.raises(A.AttentionError, match="did not run"):
            rec.result
        rec.eject()
        rec.eject()
    assert not rec.active


def test_bad_choices_say_what_exists(vlms):
    vlm = vlms["llava-next"]
    with pytest.raises(A.AttentionError, match="layer 7 does not exist: the model has 2 layers"):
        A.capture_llm_attention(vlm, [0], [0], layers=[7])
    with pytest.raises(A.AttentionError, match="head 9 does not exist"):
        A.capture_llm_attention(vlm, [0], [0], heads=9)
    with pytest.raises(A.AttentionError, match="'mean', 'max' or a head index"):
        A.capture_llm_attention(vlm, [0], [0], heads="median")


# ------------------------------------------------------------------------------------------------ vision


@pytest.mark.parametrize("family", BATCHED_TOWERS)
@pytest.mark.parametrize("heads", ["mean", 1])
def test_vision_attention_equals_eager_tower(vlms, family, heads):
    vlm = vlms[family]
    image = noise_image(700, 500, seed=5)
    plan = vlm.native_plan(image)
    maps = A.vision_attention(vlm, image, plan, heads=heads)
    grids = vlm.family.patch_grids(vlm.geometry, plan)
    assert maps.shape == (plan.num_views, *grids[0])

    tower = vlm.family.vision_tower(vlm.model)
    before = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = tower(view_pixels(vlm, image, plan, exact=True), output_attentions=True)
    finally:
        tower.set_attn_implementation(before)
    layer = vlm.family.feature_attention_layer(vlm.geometry, len(out.attentions))
    w = out.attentions[layer].numpy()  # (views, heads, N, N)
    has_cls = vlm.family.vision_has_cls(vlm.geometry)
    w = w[:, :, 0, 1:] if has_cls else w.mean(axis=2)  # CLS → patches | mean received
    ref = w.mean(axis=1) if heads == "mean" else w[:, heads]
    assert np.abs(maps.reshape(len(maps), -1) - ref).max() <= TOL
    if family == "llava-next":
        assert layer == 0  # feature layer -2 of a 2-layer tower is the output of layer 0
    if has_cls:
        assert np.all(maps.sum(axis=(1, 2)) < 1)  # CLS → CLS is left out
    else:
        np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-5)


def test_feature_attention_layer():
    assert A.feature_attention_layer(-2, 24) == 22
    assert A.feature_attention_layer(-1, 27) == 26
    assert A.feature_attention_layer([-2, -5], 24) == 22
    with pytest.raises(A.AttentionError, match="embedding output"):
        A.feature_attention_layer(0, 24)

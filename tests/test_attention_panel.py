"""The attention panel on a real (tiny) chat reply: record → rebuilt inputs → weights → figures, no browser."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
gr = pytest.importorskip("gradio")

pytestmark = pytest.mark.slow  # builds and runs tiny random-weight models

from gridvlm.app import attention_panel as P  # noqa: E402
import gridvlm  # noqa: E402
from gridvlm import attention as A  # noqa: E402
from gridvlm.models import load_vlm, make_tiny_vlm, prepare_inputs  # noqa: E402

ANSWER = 4


def noise_image(w: int, h: int):
    from PIL import Image

    rng = np.random.default_rng(w + h)
    return Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h))


def reply(vlm, image, plan):
    """A finished chat turn: prepared inputs, generated ids, and the record the Chat tab would keep."""
    prepared = prepare_inputs(vlm, image, plan, [], "What is in the picture?")
    with torch.inference_mode():
        out = vlm.model.generate(**prepared.kwargs, max_new_tokens=ANSWER, min_new_tokens=ANSWER, do_sample=False,
                                 pad_token_id=vlm.tokenizer.pad_token_id)
    new = out[0, -ANSWER:]
    sequence = torch.cat((prepared.input_ids[0], new))
    record = A.reply_record(vlm, image, plan, sequence, prepared.prompt_tokens)
    return prepared, sequence, record


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return load_vlm(make_tiny_vlm(tmp_path_factory.mktemp("panel") / "next", "llava-next", seed=3), device="cpu")


@pytest.fixture(scope="module")
def native_reply(vlm):
    image = noise_image(900, 500)
    return (image, *reply(vlm, image, "native"))


def test_record_is_plain_and_rebuilds_the_models_own_inputs(vlm, native_reply):
    import copy
    import json

    image, prepared, sequence, record = native_reply
    assert isinstance(record, A.ReplyRecord)
    json.dumps({k: v for k, v in record.to_dict().items() if k != "image"})  # everything but the image is plain JSON
    copy.deepcopy(record)  # gr.State copies it
    assert len(record.answer_tokens) == ANSWER
    assert len(record.visual_positions) == prepared.visual_tokens == vlm.native_plan(image).token_count
    embeds, visual, layout = A.rebuild_inputs(vlm, record)
    assert embeds.shape[1] == len(sequence) and len(layout) == len(visual)

    # the weights from the rebuilt embeddings equal transformers' own eager pass over the native inputs
    question, answer = A.query_rows(record)
    rows = np.concatenate((question, answer))
    got = A.llm_attention(vlm, embeds, visual, rows, heads="mean")
    lm = vlm.model.model.language_model
    lm.set_attn_implementation("eager")
    try:
        full = {k: v for k, v in prepared.kwargs.items() if k != "attention_mask"}
        full["input_ids"] = sequence[None]
        with torch.inference_mode():
            out = vlm.model(**full, output_attentions=True, use_cache=False)
    finally:
        lm.set_attn_implementation("sdpa")
    ref = torch.stack([a[0] for a in out.attentions]).numpy()[:, :, rows][:, :, :, visual].mean(axis=1)
    assert np.abs(got - ref).max() <= 1e-5


def test_controls_follow_the_source(vlm, native_reply):
    record = native_reply[-1]
    token, first, last, head = P.controls_for(record, P.SOURCES[0])
    assert token["choices"][:2] == [P.WHOLE, P.QUESTION] and len(token["choices"]) == 2 + ANSWER
    assert (first["value"], last["value"], last["maximum"], head["maximum"]) == (0, 1, 1, 3)
    token, first, last, head = P.controls_for(record, P.SOURCES[1])
    assert first["value"] == last["value"] == 0  # feature layer -2 of a 2-layer CLIP tower: layer 0
    assert head["maximum"] == 1
    assert P.controls_for(None, P.SOURCES[0])[0]["choices"] == [P.WHOLE]


@pytest.mark.parametrize("token", [P.WHOLE, P.QUESTION, "2: 'x'"])
def test_llm_figures_hold_the_mass(vlm, native_reply, token):
    image, prepared, sequence, record = native_reply
    overlay, glob, mass, summary = P.show_attention(record, token, 0, 1, "mean", 0, P.SOURCES[0], 0.6)
    heat = [t for t in overlay.data if t.name == "attention"][0]
    assert heat.opacity == 0.6
    bars = mass.data[0]
    assert list(bars.x)[0] == "global view" and list(bars.x)[-1] == "newlines"
    painted = np.nansum(np.asarray(heat.z, dtype=float))
    painted_global = np.nansum(np.asarray([t for t in glob.data if t.name == "attention"][0].z, dtype=float))
    tiles = sum(y for x, y in zip(bars.x, bars.y) if x.startswith("tile"))
    assert painted == pytest.approx(tiles, rel=1e-6)  # llava-next unpadding keeps no all-padding cell
    assert painted_global == pytest.approx(bars.y[0], rel=1e-6)
    assert 0 < sum(bars.y) <= 1 + 1e-6 and "newlines" in summary


def test_one_head_and_max_differ_from_mean_and_are_cached(vlm, native_reply):
    record = native_reply[-1]
    mean = P.show_attention(record, P.WHOLE, 0, 1, "mean", 0, P.SOURCES[0], 0.5)[2].data[0].y
    one = P.show_attention(record, P.WHOLE, 0, 1, "one head", 2, P.SOURCES[0], 0.5)[2].data[0].y
    top = P.show_attention(record, P.WHOLE, 1, 1, "max", 0, P.SOURCES[0], 0.5)[2].data[0].y
    assert not np.allclose(mean, one) and sum(top) >= sum(
        P.show_attention(record, P.WHOLE, 1, 1, "mean", 0, P.SOURCES[0], 0.5)[2].data[0].y)
    assert ("llm", record.id, 2) in P._CACHE


def test_vision_source_on_a_non_native_plan(vlm):
    image = noise_image(1000, 300)
    plan = gridvlm.plan(image.size, "internvl")
    _, _, record = reply(vlm, image, plan)
    overlay, glob, mass, summary = P.show_attention(record, P.WHOLE, 0, 0, "mean", 0, P.SOURCES[1], 0.5)
    bars = dict(zip(mass.data[0].x, mass.data[0].y))
    assert bars["newlines"] == 0 and len(bars) == plan.num_views + 1
    assert all(0 < v < 1 for k, v in bars.items() if k != "newlines")  # CLS → patches, per view
    llm = P.show_attention(record, "0: 'a'", 0, 1, "max", 0, P.SOURCES[0], 0.5)[2]
    assert list(llm.data[0].x)[-2] == "global view"  # internvl: thumbnail last


def test_no_reply_yet_is_explained():
    with pytest.raises(gridvlm.GridVLMError, match="no reply yet"):
        P.show_attention(None, P.WHOLE, 0, 1, "mean", 0, P.SOURCES[0], 0.5)


def test_panel_builds_inside_blocks():
    with gr.Blocks() as demo:
        state = gr.State(None)
        panel = P.build_attention_panel(state)
    assert {"overlay", "global", "mass", "token", "first_layer", "last_layer", "opacity", "source", "accordion",
            "panel_open"} <= set(panel)
    assert panel["refresh"]["fn"] is not None and demo is not None
    # after a reply: the controls, then the figures, drawn only while the panel is open
    assert panel["redraw"]["inputs"][0] is state and panel["redraw"]["inputs"][-1] is panel["panel_open"]
    assert panel["redraw"]["outputs"] == [panel["overlay"], panel["global"], panel["mass"], panel["summary"]]


def test_redraw_waits_for_an_open_panel_and_a_reply(vlm, native_reply):
    record = native_reply[-1]
    assert P.redraw(record, P.WHOLE, 0, 1, "mean", 0, P.SOURCES[0], 0.5, False) == gr.skip()
    assert P.redraw(None, P.WHOLE, 0, 1, "mean", 0, P.SOURCES[0], 0.5, True) == (None, None, None, "")
    overlay = P.redraw(record, "0: 'a'", 1, 1, "mean", 0, P.SOURCES[0], 0.5, True)[0]
    assert overlay.layout.title.text.startswith("attention on the tiles · LLM layers 1–1, 0: 'a'")


def test_figures_from_plain_arrays():
    from gridvlm import viz

    plan = gridvlm.plan((640, 480), "llava-next")
    heat = np.zeros((48, 64))
    fig = viz.attention_figure(plan, None, heat, opacity=0.3)  # all zero: transparent, no error
    assert [t.name for t in fig.data if t.name == "attention"] == ["attention"]
    heat[10, 20] = 2.0
    fig = viz.attention_figure(plan, noise_image(640, 480), heat, title="t", show_tiles=False)
    trace = [t for t in fig.data if t.name == "attention"][0]
    assert trace.zmax == 2.0 and trace.dx == 10 and fig.layout.title.text == "t"
    assert not any(s.name and s.name.startswith("tile") for s in fig.layout.shapes)
    bars = viz.attention_mass_figure({"global view": 0.1, "tile 0,0": 0.3, "newlines": 0.6})
    assert list(bars.data[0].text) == ["10.0%", "30.0%", "60.0%"]


def test_importing_attention_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, gridvlm.attention; assert 'torch' not in sys.modules and 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_attention_maps_from_a_record_and_choices(vlm, native_reply):
    """The library function the panel draws from: shares sum to 1, rows and layers pick what they say."""
    image, prepared, sequence, record = native_reply
    seen = {}

    def keep(key, compute):
        return seen.setdefault(key, compute())

    whole = A.attention_maps(record, A.WHOLE_ANSWER, (0, 1), "mean", A.LLM, cached=keep)
    assert sum(whole.shares.values()) == pytest.approx(1.0) and whole.layers == (0, 1)
    assert list(seen) == [("llm", record.id, "mean")]
    per_token = [A.attention_maps(record, k, (0, 1), cached=keep).view_maps.total for k in range(ANSWER)]
    assert whole.view_maps.total == pytest.approx(np.mean(per_token))  # the answer's rows, averaged
    assert A.attention_maps(record, record.row_choices()[3], (0, 1), cached=keep).view_maps.total == \
        pytest.approx(per_token[1])  # a picker entry names its token's row
    assert len(seen) == 1  # other rows and layers: no new pass
    vision = A.attention_maps(record, source=A.VISION)
    assert vision.layers == (0, 0) and vision.shares["newlines"] == 0
    with pytest.raises(A.AttentionError, match="the answer has 4 tokens"):
        A.attention_maps(record, 9, cached=keep)
    with pytest.raises(A.AttentionError, match="source must be"):
        A.attention_maps(record, source="ears")

"""Chat through gridvlm.app.chat_tab's handlers and gridvlm.models.chat, on the tiny offline LLaVA-NeXT (CPU)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
gr = pytest.importorskip("gradio")

pytestmark = pytest.mark.slow  # builds and runs tiny random-weight models

from gridvlm.app import chat_tab as app_chat  # noqa: E402
import gridvlm  # noqa: E402
from gridvlm.models import ModelError, chat, prompt_size  # noqa: E402
from gridvlm.models import conversation  # noqa: E402
from gridvlm.app.errors import for_people  # noqa: E402

TINY = app_chat.tiny_choice("llava-next")  # the tiny LLaVA-NeXT choice, built on first use
N = 6  # tokens per reply: min_new_tokens = max_new_tokens, so random weights cannot stop early


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((640, 480))


@pytest.fixture(scope="module")
def vlm():
    app_chat.load_model(TINY, "none", progress=lambda *a, **k: None)
    return app_chat.get_vlm(TINY, "none")


@pytest.fixture
def prompts(monkeypatch):
    """Every chat-template text the conversation builds."""
    seen = []
    original = conversation.prompt_text

    def spy(*args, **kwargs):
        text = original(*args, **kwargs)
        seen.append(text)
        return text

    monkeypatch.setattr(conversation, "prompt_text", spy)
    return seen


def test_default_model_is_tiny_offline(monkeypatch):
    monkeypatch.delenv("GRIDVLM_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(app_chat, "_HUB", {})
    assert app_chat.default_model() == TINY
    assert "random weights — answers are meaningless, geometry is real" in TINY
    monkeypatch.setenv("GRIDVLM_MODEL", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf")
    assert app_chat.default_model() == "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"


def test_default_model_with_the_hub_is_a_real_small_model_or_a_7b_on_a_gpu(monkeypatch):
    monkeypatch.delenv("GRIDVLM_MODEL", raising=False)
    monkeypatch.setattr(app_chat, "_HUB", {"reachable": True})
    offered = app_chat.hub_models()
    for cuda, defaults in ((False, app_chat.CPU_DEFAULTS), (True, app_chat.GPU_DEFAULTS)):
        monkeypatch.setattr(app_chat, "has_cuda", lambda cuda=cuda: cuda)
        assert app_chat.default_model() == next(m for m in defaults if m in offered)


def test_model_list_has_every_familys_checkpoints_grouped_with_sizes():
    from gridvlm.models import list_adapters
    from gridvlm.models.adapter import get_adapter

    entries = app_chat.catalogue()
    families = [c.family for c in entries]
    assert set(families) == set(list_adapters())
    # grouped: each family's entries are consecutive, real checkpoints before its tiny one
    assert all(families.index(f) + families.count(f) - 1 == len(families) - 1 - families[::-1].index(f)
               for f in set(families))
    for name in list_adapters():
        mine = [c for c in entries if c.family == name]
        assert [c.value for c in mine if not c.tiny] == [cp.hub_id for cp in get_adapter(name).checkpoints]
        assert mine[-1].tiny and app_chat.TINY_LABEL in mine[-1].label
        assert all(f"({cp.size}" in c.label for c, cp in zip(mine, get_adapter(name).checkpoints))
    values = [v for _, v in app_chat.model_choices()]
    assert len(values) == len(set(values)) and app_chat.default_model() in values


def test_load_model_reports_random_weights(vlm):
    status = app_chat.load_model(TINY, "none", progress=lambda *a, **k: None)
    assert "random weights — answers are meaningless, geometry is real" in status
    assert "336-px views" in status and "24×24" in status
    assert vlm.random_weights


def test_two_streamed_turns_carry_the_first_turn(vlm, image, prompts):
    plan_dict = gridvlm.plan(image, "llava-next").to_dict()
    turn1 = list(app_chat.respond("What is in the picture?", [], image, plan_dict, TINY, "none", app_chat.NATIVE,
                                  max_new_tokens=N, min_new_tokens=N))
    history, box, record = turn1[-1]
    assert box == "" and record.answer_tokens
    assert all(t[2] == gr.skip() for t in turn1[:-1])  # the record arrives with the finished reply only
    assert [m["role"] for m in history] == ["user", "assistant"]
    first_reply = history[1]["content"]
    assert turn1[0][0][-1]["content"] == ""  # the question shows at once, the reply streams in after it
    partials = [h[0][-1]["content"] for h in turn1[1:]]
    assert first_reply and all(partials)
    assert all(later.startswith(earlier) for earlier, later in zip(partials, partials[1:]))  # streamed prefixes
    assert first_reply == next(chat(vlm, image, "native", [], "What is in the picture?", max_new_tokens=N,
                                    min_new_tokens=N, stream=False))

    turn2 = list(app_chat.respond("And the colours?", history, image, plan_dict, TINY, "none", app_chat.SLICE_PLAN,
                                  max_new_tokens=N, min_new_tokens=N))
    history2, _, _ = turn2[-1]
    assert [m["role"] for m in history2] == ["user", "assistant", "user", "assistant"]
    assert history2[:2] == history and history2[3]["content"]
    second_prompt = prompts[-1]
    assert "What is in the picture?" in second_prompt and first_reply in second_prompt
    assert second_prompt.index(first_reply) < second_prompt.index("And the colours?")
    assert second_prompt.count("<image>") == 1


def test_native_and_plan_mode_replies_are_the_same(vlm, image):
    kwargs = dict(max_new_tokens=N, min_new_tokens=N, stream=False)
    native = next(chat(vlm, image, "native", [("Hi", "Hello")], "Describe it.", **kwargs))
    planned = next(chat(vlm, image, vlm.native_plan(image), [("Hi", "Hello")], "Describe it.", **kwargs))
    assert native == planned


def test_sampling_runs(vlm, image):
    reply = next(chat(vlm, image, "native", [], "Hi", max_new_tokens=N, min_new_tokens=N, temperature=0.8,
                      top_p=0.9, stream=False))
    assert isinstance(reply, str) and reply


def test_usage_shows_tokens_context_and_out_of_distribution(vlm, image):
    text = app_chat.usage_markdown(image, None, TINY, "none", app_chat.NATIVE, 64, [])
    assert f"**{vlm.native_plan(image).token_count} visual tokens**" in text
    assert "of 8192** context tokens" in text and "Out of the model's training distribution" not in text
    internvl = gridvlm.plan(image, "internvl")
    text = app_chat.usage_markdown(image, internvl.to_dict(), TINY, "none", app_chat.SLICE_PLAN, 64, [])
    assert "Out of the model's training distribution" in text and "plan 'internvl'" in text


@pytest.mark.parametrize("strategy", ["native", "internvl", "llava-uhd"])
def test_prompt_size_counts_what_is_built(vlm, image, strategy):
    plan = "native" if strategy == "native" else gridvlm.plan(image, strategy)
    history = [("Hi", "Hello there")]
    counted = prompt_size(vlm, image.size, plan, history, "What now?")
    built = conversation.prepare_inputs(vlm, image, plan, history, "What now?")
    assert (counted.prompt_tokens, counted.visual_tokens) == (built.prompt_tokens, built.visual_tokens)
    assert counted.out_of_distribution == (strategy != "native")


def test_messages_history_format_is_accepted(vlm, image):
    pairs = conversation.to_messages([("a", "b")], "c")
    messages = conversation.to_messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                                        "c")
    assert pairs == messages
    assert messages[0]["content"][0] == {"type": "image"}


# ------------------------------------------------------------------------------------------------ failures


def test_errors_reach_the_user_as_gr_error(vlm, image):
    with pytest.raises(gr.Error, match="no image"):
        list(app_chat.respond("Hi", [], None, None, TINY, "none", app_chat.NATIVE))
    with pytest.raises(gr.Error, match="no Slice-tab plan yet"):
        list(app_chat.respond("Hi", [], image, None, TINY, "none", app_chat.SLICE_PLAN))
    with pytest.raises(gr.Error, match="8192-token context"):
        list(app_chat.respond("Hi", [], image, None, TINY, "none", app_chat.NATIVE, max_new_tokens=8000))
    with pytest.raises(gr.Error, match="not one of the models this server offers.*GRIDVLM_ALLOW_ANY_MODEL=1"):
        app_chat.load_model("nobody/nothing-here", "none", progress=lambda *a, **k: None)
    from gridvlm import limits

    before = limits.active()
    limits.configure(allow_any_model=True)
    try:
        with pytest.raises(gr.Error, match="no model 'nobody/nothing-here'"):
            app_chat.load_model("nobody/nothing-here", "none", progress=lambda *a, **k: None)
    finally:
        limits.configure(before)
    if not app_chat.has_cuda():
        with pytest.raises(gr.Error, match="4bit quantization runs through bitsandbytes on a CUDA GPU"):
            app_chat.load_model(TINY, "4bit", progress=lambda *a, **k: None)


def test_over_long_prompt_refused_before_generation(vlm, image, monkeypatch):
    called = []
    monkeypatch.setattr(vlm.model, "generate", lambda *a, **k: called.append(1))
    with pytest.raises(ModelError, match="more than the 8192-token context"):
        chat(vlm, image, "native", [], "Hi", max_new_tokens=8000)
    assert not called


def test_chat_tab_builds_inside_blocks():
    with gr.Blocks() as demo:
        image_state, plan_state = gr.State(None), gr.State(None)
        app_chat.build_chat_tab(image_state, plan_state)
    assert any(getattr(c, "elem_id", None) == "chat-bot" for c in demo.blocks.values())


# ------------------------------------------------------------------------------------------------ attention record


def test_reply_carries_its_ids_and_visual_positions(vlm, image):
    for plan in ("native", gridvlm.plan(image, "internvl")):
        reply = chat(vlm, image, plan, [], "Hi", max_new_tokens=N, min_new_tokens=N)
        assert reply.sequence_ids is None  # known once the reply is finished
        texts = list(reply)
        ids, prepared = reply.sequence_ids, reply.prepared
        assert texts[-1] == reply.text
        assert ids[:prepared.prompt_tokens] == prepared.input_ids[0].tolist() and len(ids) == prepared.prompt_tokens + N
        assert vlm.tokenizer.decode(ids[prepared.prompt_tokens:], skip_special_tokens=True) == reply.text
        searched = [i for i, t in enumerate(ids[:prepared.prompt_tokens]) if t == vlm.image_token_id]
        assert list(reply.visual_positions) == searched and len(searched) == prepared.visual_tokens
        whole = chat(vlm, image, plan, [], "Hi", max_new_tokens=N, min_new_tokens=N, stream=False)
        assert next(whole) == reply.text and whole.sequence_ids == ids


def test_respond_stores_a_record_the_attention_panel_draws(vlm, image):
    from gridvlm.app import attention_panel as P

    plan = gridvlm.plan(image, "llava-uhd")
    *_, (history, _, record) = app_chat.respond("Where is the sky?", [], image, plan.to_dict(), TINY, "none",
                                                app_chat.SLICE_PLAN, max_new_tokens=N, min_new_tokens=N)
    assert record.plan == plan and len(record.answer_tokens) == N
    assert record.prompt_tokens + N == len(record.sequence_ids)
    token, first, last, _ = P.controls_for(record, P.SOURCES[0])
    assert token["choices"][2].startswith("0: ") and (first["value"], last["value"]) == (0, 1)
    overlay, glob, mass, summary = P.redraw(record, token["choices"][3], 0, 1, "mean", 0, P.SOURCES[0], 0.5, True)
    assert "LLM layers 0–1, 1: " in overlay.layout.title.text and glob.data and "newlines" in summary
    assert 0 < sum(mass.data[0].y) <= 1 + 1e-6  # the image's share of softmax rows over the whole sequence
    # the vision encoder as the source: its controls, then its figures
    _, first, last, head = P.controls_for(record, P.SOURCES[1])
    overlay, _, mass, summary = P.redraw(record, P.WHOLE, first["value"], last["value"], "mean", 0, P.SOURCES[1],
                                         0.5, True)
    assert summary.startswith("**vision encoder, layers 0–0**") and "vision encoder" in overlay.layout.title.text
    assert dict(zip(mass.data[0].x, mass.data[0].y))["newlines"] == 0
    # closed panel: no extra pass; no reply: empty figures, no error
    assert P.redraw(record, P.WHOLE, 0, 1, "mean", 0, P.SOURCES[0], 0.5, False) == gr.skip()
    assert P.redraw(None, P.WHOLE, 0, 1, "mean", 0, P.SOURCES[0], 0.5, True) == (None, None, None, "")


def test_random_weights_write_a_few_tokens(vlm, image, monkeypatch):
    seen = []
    original = conversation.generate_kwargs
    monkeypatch.setattr(conversation, "generate_kwargs", lambda *a: seen.append(a[-1]) or original(*a))
    *_, (_, _, record) = app_chat.respond("Hi", [], image, None, TINY, "none", app_chat.NATIVE, max_new_tokens=20)
    assert seen == [app_chat.RANDOM_MIN_NEW_TOKENS] and len(record.answer_tokens) >= app_chat.RANDOM_MIN_NEW_TOKENS
    *_, (_, _, record) = app_chat.respond("Hi", [], image, None, TINY, "none", app_chat.NATIVE, max_new_tokens=3)
    assert seen[-1] == 3 and len(record.answer_tokens) == 3  # never more than asked for


def test_chat_and_attention_errors_are_readable(image):
    from gridvlm.app import attention_panel as P

    with pytest.raises(gr.Error, match="choose a model"):
        list(app_chat.respond("Hi", [], image, None, "", "none", app_chat.NATIVE))
    with pytest.raises(gr.Error, match="type a message first"):
        list(app_chat.respond("  ", [], image, None, TINY, "none", app_chat.NATIVE))
    with pytest.raises(gr.Error, match="no reply yet"):
        for_people(P.show_attention)(None, P.WHOLE, 0, 1, "mean", 0, P.SOURCES[0], 0.5)
    assert app_chat.clear_chat() == ([], "", None)


def test_app_has_the_chat_tab_and_its_attention_panel():
    import app

    ids = {getattr(c, "elem_id", None) for c in app.demo.blocks.values()}
    assert {"chat-bot", "chat-send", "attention-overlay", "attention-global", "attention-mass", "attention-token",
            "attention-first-layer", "attention-last-layer", "attention-opacity", "attention-source"} <= ids
    assert any(getattr(c, "label", None) == "Chat" for c in app.demo.blocks.values())


def test_view_pixels_are_what_encode_feeds_the_tower(vlm, image):
    from gridvlm.models import view_pixels

    plan = vlm.native_plan(image)
    got = view_pixels(vlm, image, "native")
    assert got.shape == (plan.num_views, 3, 336, 336)
    assert (got == view_pixels(vlm, image, plan, exact=True)).all()
    internvl = gridvlm.Plan.from_dict(gridvlm.plan(image, "internvl").to_dict())
    assert view_pixels(vlm, image, internvl).shape == (internvl.num_views, 3, 336, 336)


def test_on_zerogpu_generation_and_the_attention_pass_run_inside_spaces_gpu(tmp_path):
    """With a `spaces` module present (as on a ZeroGPU Space), both model calls are wrapped by spaces.GPU."""
    import subprocess
    import sys

    (tmp_path / "spaces.py").write_text(
        "WRAPPED = []\n"
        "def GPU(fn=None, **kwargs):\n"
        "    def wrap(f):\n"
        "        WRAPPED.append(f.__name__)\n"
        "        def inner(*a, **k):\n"
        "            return f(*a, **k)\n"
        "        inner.on_gpu = True\n"
        "        return inner\n"
        "    return wrap(fn) if fn is not None else wrap\n")
    code = ("import spaces; from gridvlm.app import chat_tab, attention_panel; "
            "assert chat_tab._stream.on_gpu and attention_panel.capture_on_gpu.on_gpu; "
            "assert sorted(spaces.WRAPPED) == ['_stream', 'capture_on_gpu'], spaces.WRAPPED")
    root = os.path.dirname(os.path.dirname(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env, timeout=300)


def test_the_attention_panel_runs_its_pass_through_the_gpu_wrapper(vlm, image, monkeypatch):
    from gridvlm.app import attention_panel

    *_, (_, _, record) = app_chat.respond("Hi", [], image, None, TINY, "none", app_chat.NATIVE, max_new_tokens=4)
    calls = []
    original = attention_panel.capture_on_gpu

    def spy(rec, key):
        calls.append(key[0])
        return original(rec, key)

    monkeypatch.setattr(attention_panel, "capture_on_gpu", spy)
    attention_panel._CACHE.clear()
    for source in attention_panel.SOURCES:
        attention_panel.show_attention(record, attention_panel.WHOLE, 0, 1, "mean", 0, source, 0.5)
    assert calls == ["llm", "vision"]


def test_a_model_that_sees_only_its_own_slicing_offers_native_only(vlm, image, monkeypatch):
    update = app_chat.strategy_for_model(TINY, "none")
    assert update["choices"] == [app_chat.NATIVE, app_chat.SLICE_PLAN]  # LLaVA-NeXT takes any plan
    monkeypatch.setattr(type(vlm.family), "plan_mode", False)
    update = app_chat.strategy_for_model(TINY, "none")
    assert update["choices"] == [app_chat.NATIVE] and update["value"] == app_chat.NATIVE
    assert "own slicing" in update["info"]
    plan = vlm.native_plan(image.size)
    text = app_chat.usage_markdown(image, plan.to_dict(), TINY, "none", app_chat.SLICE_PLAN, 8, [])
    assert "see only their own slicing" in text and f"{plan.num_views - 1} tiles" in text

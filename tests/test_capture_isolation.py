"""An attention capture on the shared model never touches another request: two replies stream and one capture runs
on one model at the same time, and all three results equal the same work done alone.

The overlap is forced, not hoped for: a gate on the first decoder layer holds the capture inside its own forward
pass (its hooks installed) until both generations have run further forward passes past those hooks.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow  # builds and runs a tiny random-weight model

from gridvlm import attention as A  # noqa: E402
from gridvlm.models import chat, list_adapters, load_vlm, make_tiny_vlm, prepare_inputs  # noqa: E402

WAIT_S = 180  # generous: only reached when the overlap never happens (a broken test, not a slow machine)
TOKENS = 8


def noise_image(w: int, h: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h))


# a LLaVA family, and Qwen2-VL: its model keeps multimodal rotary offsets (rope_deltas) on the shared module
ISOLATION_FAMILIES = [f for f in ("llava-next", "qwen2-vl") if f in list_adapters()] or list_adapters()[:1]


@pytest.fixture(scope="module", params=ISOLATION_FAMILIES)
def vlm(tmp_path_factory, request):
    family = request.param
    return load_vlm(make_tiny_vlm(tmp_path_factory.mktemp("isolation") / family, family, seed=3), device="cpu")


def reply(vlm, image, message):
    parts = chat(vlm, image, "native", [], message, max_new_tokens=TOKENS, min_new_tokens=TOKENS)
    text = ""
    for text in parts:
        pass
    return text, parts.sequence_ids


def capture(vlm, image):
    prepared = prepare_inputs(vlm, image, "native", [], "Where is the cat?")
    rows = np.arange(prepared.visual_positions[-1] + 1, prepared.prompt_tokens)
    return A.llm_attention(vlm, prepared.kwargs, prepared.visual_positions, rows)


def test_two_streaming_replies_and_one_capture_at_once(vlm):
    images = [noise_image(640, 480, 1), noise_image(500, 700, 2), noise_image(800, 300, 3)]
    messages = ["Describe the picture.", "What is shown in this image?"]
    alone = [reply(vlm, images[k], messages[k]) for k in range(2)]
    alone_capture = capture(vlm, images[2])

    capture_inside = threading.Event()  # the capture's hooks are installed and its pass is under way
    both_went_past = threading.Event()
    seen: dict[int, int] = {}  # thread → forward passes through the first layer
    passes_after: dict[int, int] = {}  # thread → passes while the capture is open
    lock = threading.Lock()
    capture_thread: list[int] = []

    def gate(module, args, kwargs):
        me = threading.get_ident()
        if capture_thread and me == capture_thread[0]:
            capture_inside.set()
            assert both_went_past.wait(WAIT_S), "the generations never ran while the capture was open"
            return
        with lock:
            seen[me] = seen.get(me, 0) + 1
            started = seen[me] > 1
        if started and not capture_inside.is_set():  # a reply is generating: hold it until the capture is open
            assert capture_inside.wait(WAIT_S), "the capture never started"
        if capture_inside.is_set():
            with lock:
                passes_after[me] = passes_after.get(me, 0) + 1
                if len(passes_after) >= 2 and min(passes_after.values()) >= 2:
                    both_went_past.set()

    first_layer = A.text_layers(vlm)[0]
    handle = first_layer.register_forward_pre_hook(gate, with_kwargs=True)
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def run(name, work):
        try:
            results[name] = work()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def capture_work():
        capture_thread.append(threading.get_ident())
        return capture(vlm, images[2])

    try:
        threads = [threading.Thread(target=run, args=(f"reply{k}", lambda k=k: reply(vlm, images[k], messages[k])))
                   for k in range(2)]
        for t in threads:
            t.start()
        threads.append(threading.Thread(target=run, args=("capture", capture_work)))
        threads[-1].start()
        for t in threads:
            t.join(WAIT_S)
    finally:
        handle.remove()
    assert not errors, errors
    assert both_went_past.is_set()
    for k in range(2):
        assert results[f"reply{k}"] == alone[k]
    np.testing.assert_allclose(results["capture"], alone_capture, atol=1e-6)
    assert not first_layer._forward_hooks and not A.text_layers(vlm)[-1]._forward_hooks

"""The public-server budget (gridvlm.limits) and the app's safety: each limit refuses before work with a sentence
naming it, every failure reaches the page readably, sessions keep only what is cheap, the temp dir stays clean."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")
import gridvlm  # noqa: E402
from gridvlm import limits, pixels, viz  # noqa: E402
from gridvlm.app import chat_tab, errors, pack_tab, serving, slice_tab  # noqa: E402
from gridvlm.app import display as ui  # noqa: E402
from gridvlm.limits import LimitError, Limits  # noqa: E402
from gridvlm.packing import pack  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(autouse=True)
def gradio_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    before = limits.active()
    yield tmp_path / "gradio"
    limits.configure(before)


@pytest.fixture
def photo(gradio_temp_dir) -> str:
    folder = gradio_temp_dir / "abc123"  # where gradio keeps an upload
    folder.mkdir(parents=True)
    path = folder / "photo.jpg"
    Image.linear_gradient("L").resize((1280, 800)).convert("RGB").save(path, quality=90)
    return str(path)


KNOBS = ("internvl", True, 2048, "{}", False)


# ------------------------------------------------------------------------------------------------ the budget


def test_env_overrides_are_read_only_when_asked():
    env = {"GRIDVLM_MAX_SEQ_LEN": "4096", "GRIDVLM_ALLOW_ANY_MODEL": "1", "GRIDVLM_MAX_VIEW_PIXELS": "1e6"}
    got = Limits.from_env(env)
    assert (got.max_seq_len, got.allow_any_model, got.max_view_pixels) == (4096, True, 1_000_000)
    assert Limits() == Limits.from_env({})  # defaults: nothing read at import time
    with pytest.raises(LimitError, match="GRIDVLM_MAX_IMAGES='many' is not a number"):
        Limits.from_env({"GRIDVLM_MAX_IMAGES": "many"})
    assert {env for _, env, _ in Limits().describe()} == set(limits.ENV.values())


@pytest.mark.parametrize("name, params", [
    ("internvl", dict(max_tiles=64, tile_size=4096)),
    ("qwen2-vl", dict(min_pixels=10**10, max_pixels=10**10)),
])
def test_enormous_in_range_parameters_are_refused_before_decoding(name, params):
    p = gridvlm.plan((5120, 2880), name, **params)
    for render in (pixels.views, pixels.pixel_values):
        with pytest.raises(LimitError, match="limit max_view_pixels"):
            render("no/such/file.jpg", p)  # refused before the (missing) file is opened


def test_views_refusal_reaches_the_page_and_the_plan_is_still_made(photo):
    ws = ui.open_workspace(photo)
    out = slice_tab.update_plan(ws, "internvl", True, 2048, '{"max_tiles": 64, "tile_size": 4096}')
    p = out[-1]
    assert len(p.tiles) > 1
    with pytest.raises(gr.Error, match="max_view_pixels"):
        slice_tab.show_views(ws, p)


def test_plans_with_too_many_views_are_not_drawn(photo):
    limits.configure(max_views=3)
    with pytest.raises(gr.Error, match="limit max_views"):
        slice_tab.update_plan(ui.open_workspace(photo), "internvl", True, 2048, '{"max_tiles": 12}')


@pytest.mark.parametrize("seq_len", [10**6, 10**12])
def test_huge_max_seq_len_is_refused(seq_len):
    with pytest.raises(gr.Error, match=r"max_seq_len=.* limit max_seq_len"):
        pack_tab.pack_images(None, seq_len, 16, 1024, "given", "llava-next")


def test_too_many_images_are_refused_before_reading_them():
    paths = [f"missing-{k}.png" for k in range(limits.active().max_images + 1)]
    with pytest.raises(gr.Error, match="limit max_images"):
        pack_tab.pack_images(paths, 4096, 16, 1024, "given", "llava-next")


def test_too_many_sequences_are_refused():
    limits.configure(max_sequences=1)
    with pytest.raises(gr.Error, match="limit max_sequences"):
        pack_tab.pack_images(None, 4096, 16, 0, "given", "llava-next")  # the examples: 5 sequences


def test_mask_figure_is_drawn_from_spans_and_equals_the_pooled_mask():
    packing = pack([(160, 96), (64, 64), (320, 32), (16, 16)], 2000, patch_size=16)
    mask = packing.attention_mask(0)  # (L, L) — small here, only for the comparison
    L = mask.shape[0]
    f = int(np.ceil(L / viz.MASK_MAX_CELLS))
    n = int(np.ceil(L / f))
    padded = np.zeros((n * f, n * f), dtype=bool)
    padded[:L, :L] = mask
    expected = padded.reshape(n, f, n, f).any(axis=(1, 3))
    z = np.asarray(viz.mask_figure(packing, 0).data[0].z)
    assert np.array_equal(z.astype(bool), expected)


def test_mask_figure_of_a_long_sequence_never_builds_the_full_mask(monkeypatch):
    packing = pack([(4096, 4096)], 10**7, patch_size=16)
    monkeypatch.setattr(type(packing), "attention_mask", lambda *a: pytest.fail("built the L×L mask"))
    z = np.asarray(viz.mask_figure(packing, 0).data[0].z)
    assert max(z.shape) <= viz.MASK_MAX_CELLS


def test_long_chat_message_is_refused_before_tokenising(monkeypatch):
    monkeypatch.setattr(chat_tab, "get_vlm", lambda *a: pytest.fail("reached the model"))
    with pytest.raises(gr.Error, match="limit max_message_chars"):
        list(chat_tab.respond("x" * 5_000_000, [], None, None, chat_tab.default_model(), "none", chat_tab.NATIVE))
    history = [{"role": "user", "content": "y" * 40_000}, {"role": "assistant", "content": "z" * 40_000}]
    with pytest.raises(gr.Error, match="limit max_history_chars"):
        list(chat_tab.respond("hi", history, None, None, chat_tab.default_model(), "none", chat_tab.NATIVE))
    with pytest.raises(gr.Error, match="limit max_history_turns"):
        list(chat_tab.respond("hi", [{"role": "user", "content": "a"}] * 40, None, None, chat_tab.default_model(),
                              "none", chat_tab.NATIVE))


# ------------------------------------------------------------------------------------------------ readable errors


@pytest.mark.parametrize("params, words", [
    ('{"max_tiles": NaN}', "NaN is not a number"),
    ('{"max_tiles": Infinity}', "Infinity is not a number"),
    ('{"max_tiles": -Infinity}', "Infinity is not a number"),
    ('{"max_tiles": 1e999}', "too large to be a number"),
    ('{"max_tiles": ' + "9" * 5000 + "}", "too large to be a number"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ("{" + " " * 20_000 + "}", "characters long"),
])
def test_bad_parameters_are_sentences(photo, params, words):
    with pytest.raises(gr.Error, match=words):
        slice_tab.update_plan(ui.open_workspace(photo), "internvl", True, 2048, params)


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), 1e300, "lots"])
def test_out_of_range_numbers_a_client_sends_are_sentences(photo, budget):
    with pytest.raises(gr.Error, match="max visual tokens"):
        slice_tab.update_plan(ui.open_workspace(photo), "internvl", False, budget, "{}")
    with pytest.raises(gr.Error, match="max_seq_len"):
        pack_tab.pack_images(None, budget, 16, 1024, "given", "llava-next")


def test_memory_error_becomes_a_sentence(photo, monkeypatch):
    ws = ui.open_workspace(photo)
    p = gridvlm.plan(ws.size, "internvl")

    def boom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(pixels, "views", boom)
    with pytest.raises(gr.Error, match="ran out of memory"):
        slice_tab.show_views(ws, p)


def test_unreadable_checkpoint_is_a_sentence(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    limits.configure(allow_any_model=True)
    with pytest.raises(gr.Error, match="broken"):
        chat_tab.load_model(str(folder), "none", progress=lambda *a, **k: None)


def test_the_sentence_stays_in_the_inline_status(monkeypatch):
    from gradio.context import LocalContext

    class Request:
        session_hash = "s1"

    token = LocalContext.request.set(Request())
    try:
        with pytest.raises(gr.Error):
            slice_tab.update_plan(None, *KNOBS)
    finally:
        LocalContext.request.reset(token)
    status = errors.show_status(Request())
    assert status.startswith("⚠️ no image here: the server restarted") and "upload it again" in status
    assert errors.show_status(Request()).startswith("⚠️ That did not work")  # read once


def test_after_a_restart_the_page_asks_for_the_upload_again(photo):
    ws = ui.open_workspace(photo)
    p = gridvlm.plan(ws.size, "internvl")
    os.remove(photo)  # the server restarted and emptied its temp dir
    with pytest.raises(gr.Error, match="'photo.jpg' is no longer on the server.*upload the image again"):
        slice_tab.show_views(ws, p)
    with pytest.raises(gr.Error, match="server restarted"):
        slice_tab.update_plan(None, *KNOBS)


# ------------------------------------------------------------------------------------------------ sessions, disk


def test_session_state_is_cheap_and_the_full_image_cache_is_bounded(photo):
    ws = ui.open_workspace(photo)
    assert ws.size == (1280, 800) and len(ws.preview_jpeg) < 300_000
    assert not any(isinstance(v, Image.Image) for v in vars(ws).values())
    cache = ui.ImageCache(max_bytes=1280 * 800 * 3 + 10)
    first = cache.image(photo)
    assert cache.image(photo) is first and cache.bytes == 1280 * 800 * 3
    other = Path(photo).with_name("other.png")
    Image.new("RGB", (1280, 800)).save(other)
    cache.image(str(other))
    assert cache.bytes <= cache.max_bytes


def test_upload_component_leaves_no_empty_files(gradio_temp_dir, photo):
    from gradio.data_classes import FileData

    component = serving.UploadFile(file_types=["image"], type="filepath")
    before = sum(len(files) for *_, files in os.walk(gradio_temp_dir))
    for _ in range(5):
        assert component.preprocess(FileData(path=photo, orig_name="photo.jpg")) == photo
    assert sum(len(files) for *_, files in os.walk(gradio_temp_dir)) == before


def test_uploads_go_when_the_last_session_holding_them_ends(photo):
    serving.track_upload(photo, "a")
    serving.track_upload(photo, "b")
    serving.track_upload(str(ui.DEFAULT_IMAGE), "a")  # an example is never deleted
    assert serving.session_ended("a") == [] and os.path.exists(photo)
    assert serving.session_ended("b") == [photo] and not os.path.exists(photo)
    assert ui.DEFAULT_IMAGE.exists()


def test_gradios_copy_of_an_example_outlives_the_session_that_showed_it(gradio_temp_dir, photo):
    """gradio serves the file box's default and the examples from copies in its temp dir; every session shares
    them, so the first session to end must not delete them (the next visitor's page would open on an error)."""
    serving.ships(ui.EXAMPLES)
    copy = gradio_temp_dir / "f00d" / ui.DEFAULT_IMAGE.name
    copy.parent.mkdir()
    shutil.copyfile(ui.DEFAULT_IMAGE, copy)
    renamed = Path(photo).with_name(ui.DEFAULT_IMAGE.name)  # a user's own file that merely has an example's name
    Path(photo).rename(renamed)
    serving.track_upload(str(copy), "a")
    serving.track_upload(str(renamed), "a")
    assert serving.session_ended("a") == [str(renamed)]
    assert copy.exists() and not renamed.exists()


def test_disk_bound_refuses_a_new_upload_when_full(photo):
    (serving.own_dir()).mkdir(parents=True, exist_ok=True)
    (serving.own_dir() / "export.html").write_bytes(b"x" * 5000)
    limits.configure(max_temp_bytes=1000)
    with pytest.raises(gr.Error, match="limit max_temp_bytes"):
        slice_tab.upload(photo, *KNOBS)
    assert not os.path.exists(photo) and not serving.own_dir().exists()


def test_own_dir_is_emptied_at_start(gradio_temp_dir, monkeypatch):
    serving.own_dir().mkdir(parents=True)
    (serving.own_dir() / "old.json").write_text("{}")
    serving.prepare_temp_dir(0)
    assert not serving.own_dir().exists() and gradio_temp_dir.exists()


# ------------------------------------------------------------------------------------------------ serving


def test_cpu_and_model_events_share_one_limit_each():
    from gridvlm.app import build_demo

    demo = build_demo(Limits())
    seen = set()
    for fn in demo.fns.values():
        if fn.name in {"upload", "update_plan", "set_budget", "show_views", "compare",
                       "pack_images", "show_mask", "export_figure",
                       # the Slice tab's: the page's first event, an upload, the gallery, the views zip
                       "open_page", "take_upload", "show_views_once", "export_views", "switch_strategy"}:
            assert (fn.concurrency_id, fn.concurrency_limit) == ("cpu", serving.CPU_CONCURRENCY), fn.name
            seen.add(fn.name)
        if fn.name in {"respond", "load_model", "show_attention"}:
            assert (fn.concurrency_id, fn.concurrency_limit) == ("model", serving.MODEL_CONCURRENCY), fn.name
            seen.add(fn.name)
    assert {"open_page", "take_upload", "show_views_once", "switch_strategy", "compare", "pack_images", "respond",
            "load_model"} <= seen


# ------------------------------------------------------------------------------------------------ models


def test_model_box_offers_the_list_only_unless_opted_in():
    with pytest.raises(gridvlm.GridVLMError, match="GRIDVLM_ALLOW_ANY_MODEL=1"):
        chat_tab.model_source("/etc")
    assert chat_tab.model_source("llava-hf/llava-v1.6-vicuna-7b-hf") == "llava-hf/llava-v1.6-vicuna-7b-hf"
    limits.configure(allow_any_model=True)
    assert chat_tab.model_source("/etc") == "/etc"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from gridvlm.models import make_tiny_vlm

    return Path(make_tiny_vlm(tmp_path_factory.mktemp("models") / "tiny", "llava-next"))


def test_spellings_of_one_directory_load_once_through_the_app(tiny_dir, monkeypatch):
    from gridvlm.models import clear_cache, loaded_models

    clear_cache()
    limits.configure(allow_any_model=True)
    monkeypatch.chdir(tiny_dir.parent)
    vlms = [chat_tab.get_vlm(name, "none") for name in ("tiny", "tiny/", "./tiny")]
    assert vlms[0] is vlms[1] is vlms[2] and len(loaded_models()) == 1
    clear_cache()


def test_model_cache_is_bounded_and_spares_a_model_in_use(tiny_dir, tmp_path):
    from gridvlm.models import clear_cache, in_use, load_vlm, loaded_models

    clear_cache()
    limits.configure(max_models=1)
    second, third = tmp_path / "second", tmp_path / "third"
    shutil.copytree(tiny_dir, second)
    shutil.copytree(tiny_dir, third)
    a = load_vlm(tiny_dir)
    with in_use(a):
        b = load_vlm(second)
        assert {v.model_id for v in loaded_models()} == {a.model_id, b.model_id}  # a is replying: kept
    assert [v.model_id for v in loaded_models()] == [b.model_id]  # over the bound once a is done
    load_vlm(third)
    assert [v.model_id for v in loaded_models()] == [str(third.resolve())]
    clear_cache()


@pytest.mark.slow  # starts the app in a process
def test_sigterm_stops_the_server_and_removes_its_temp_dir(tmp_path):
    """Spaces and Docker stop a server with SIGTERM: its own temp dir (uploads, exports, tiny models) goes too."""
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = os.path.dirname(os.path.dirname(__file__))
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(TMPDIR=str(tmp_path), GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    own = tmp_path / f"gridvlm-app-{port}"
    try:
        for _ in range(3000):  # until it answers (each try waits on the server process, not a fixed sleep)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                try:
                    proc.wait(timeout=0.2)
                    pytest.fail(f"app.py exited with {proc.returncode}")
                except subprocess.TimeoutExpired:
                    pass
        assert own.is_dir()
        (own / "left-by-a-visitor.txt").write_text("x")
        proc.send_signal(signal.SIGTERM)
        # Ctrl-C's way out: Python runs its exit handlers, then ends by SIGINT
        assert proc.wait(timeout=120) in (0, -signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not own.exists()

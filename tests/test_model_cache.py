"""The shared model cache: one load per key, other keys and status reads never wait behind a load.

The loads here are stand-ins (no model is built): each one blocks on an event the test releases, so every
ordering is forced by events, not by sleeps.
"""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("torch")

from gridvlm.models import loading  # noqa: E402

WAIT = 30  # s: an upper bound for an event that must come at once; reaching it fails the test


@pytest.fixture
def blocking_load(monkeypatch):
    """Replace the real load by one that announces itself and waits to be released; returns the controls."""
    monkeypatch.setattr(loading, "_LOADED", {})
    monkeypatch.setattr(loading, "_PENDING", {})
    started: dict[str, threading.Event] = {}
    release: dict[str, threading.Event] = {}
    calls: list[str] = []

    def fake_load(key, given, dtype, torch):
        calls.append(key.source)
        started.setdefault(key.source, threading.Event()).set()
        release.setdefault(key.source, threading.Event()).wait(WAIT)
        if key.source.endswith("broken"):
            raise loading.ModelError(f"{given!r} is broken")
        return loading.VLM(model_id=key.source, family=None, model=None, processor=None, tokenizer=None,
                           geometry=None, device=key.device, dtype=dtype)

    monkeypatch.setattr(loading, "_load", fake_load)

    def event(table, source):
        return table.setdefault(source, threading.Event())

    return (lambda s: event(started, s)), (lambda s: event(release, s)), calls


def _in_thread(fn, *args):
    out: dict[str, object] = {}
    done = threading.Event()

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, out


def test_status_reads_and_other_keys_do_not_wait_behind_a_load(blocking_load):
    started, release, calls = blocking_load
    slow_done, slow = _in_thread(loading.load_vlm, "owner/slow", "cpu", "float32")
    assert started("owner/slow").wait(WAIT)  # the slow load is inside _load now, and stays there

    status_done, status = _in_thread(lambda: (loading.is_loaded("owner/slow"), loading.loaded_models()))
    assert status_done.wait(WAIT), "a status read waited behind another model's load"
    assert status["value"] == (False, [])

    release("owner/fast").set()
    fast_done, fast = _in_thread(loading.load_vlm, "owner/fast", "cpu", "float32")
    assert fast_done.wait(WAIT), "loading another model waited behind the slow load"
    assert fast["value"].model_id == "owner/fast" and loading.is_loaded("owner/fast")
    assert not slow_done.is_set()

    again_done, again = _in_thread(loading.load_vlm, "owner/slow", "cpu", "float32")  # same key: waits
    release("owner/slow").set()
    assert slow_done.wait(WAIT) and again_done.wait(WAIT)
    assert again["value"] is slow["value"] and calls.count("owner/slow") == 1
    assert loading.is_loaded("owner/slow") and len(loading.loaded_models()) == 2


def test_a_failed_load_reaches_every_waiter_and_is_not_cached(blocking_load):
    started, release, calls = blocking_load
    first_done, first = _in_thread(loading.load_vlm, "owner/broken", "cpu", "float32")
    assert started("owner/broken").wait(WAIT)
    second_done, second = _in_thread(loading.load_vlm, "owner/broken", "cpu", "float32")
    release("owner/broken").set()
    assert first_done.wait(WAIT) and second_done.wait(WAIT)
    assert "is broken" in str(first["error"])
    assert isinstance(second.get("error"), loading.ModelError)  # waited for the failure, or failed itself
    assert not loading.is_loaded("owner/broken") and not loading._PENDING


def test_spellings_of_a_directory_are_one_key(blocking_load, tmp_path, monkeypatch):
    _, release, calls = blocking_load
    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    resolved = str((tmp_path / "ckpt").resolve())
    release(resolved).set()
    vlms = {loading.load_vlm(s, "cpu", "float32") for s in ("ckpt", "ckpt/", "./ckpt", str(tmp_path / "ckpt"))}
    assert len(vlms) == 1 and calls == [resolved]
    assert loading.normalise_source("llava-hf/llava-v1.6-mistral-7b-hf") == "llava-hf/llava-v1.6-mistral-7b-hf"

"""The app in a real browser: Debian chromium driven by playwright, against `python app.py` on a free port.

Chromium is launched with a persistent context on a fresh profile (the system browser; never
`playwright install`). Screenshots of every step go to test-artifacts/ (git-ignored).

Never flaky on a busy machine: every wait is on a condition (a text shown, a figure drawn, a count reached) with an
explicit timeout that only bounds a failure, never a fixed sleep; the chat test generates few tokens. Without
chromium these tests skip with a message, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

import gridvlm
from gridvlm.app import display as ui

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which(os.environ.get("CHROMIUM") or "chromium")  # a path or a name on PATH
ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "gridvlm" / "app" / "assets"
ARTIFACTS = ROOT / "test-artifacts"
PORTRAIT = ASSETS / "portrait_photo.jpg"  # 1200×1600
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
# Bounds on waits for conditions, not waits: a passing step takes 1-5 s quiet and up to ~40 s on a 2-core machine
# with a load average of 10. They only decide how long a real failure takes to be reported.
START_TIMEOUT_S = 300  # app.py answering HTTP 200
STEP_TIMEOUT_MS = 120_000  # one step: an event's outputs shown in the page
MODEL_TIMEOUT_MS = 300_000  # building and loading the tiny model
CHAT_TOKENS = 24  # the chat test's reply: ~1 s quiet; on the test's square the tiny model streams it in ~13 chunks


def _browser_or_skip():
    """The chromium executable and playwright's sync API; a skip with the reason, or in CI a failure."""
    missing = None
    if CHROMIUM is None:
        missing = "chromium is not installed (Debian/Ubuntu: sudo apt-get install -y chromium)"
    try:
        from playwright import sync_api
    except ImportError:
        sync_api, missing = None, missing or "playwright is not installed (pip install -r requirements-dev.txt)"
    if missing:
        if os.environ.get("CI"):  # CI installs chromium itself: a missing browser there is a failure, not a skip
            pytest.fail(f"CI=true but {missing}; .ci/run should have installed it")
        pytest.skip(f"browser tests skipped: {missing}")
    return sync_api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sync_api():
    return _browser_or_skip()


def _serve(port: int, temp: str, log) -> subprocess.Popen:
    """`python app.py` on `port` with gradio's temp dir `temp`, answering HTTP 200 (or a test failure)."""
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_TEMP_DIR": temp, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"app.py did not answer HTTP 200 within {START_TIMEOUT_S} s; see {log.name}")
        try:  # between polls, wait on the other condition that ends the loop: the server exiting
            proc.wait(timeout=0.3)
        except subprocess.TimeoutExpired:
            pass


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server by its PID: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def app_url(sync_api):
    """`python app.py` on a free port, with its own gradio temp dir; stopped by PID at the end."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="gridvlm-app-")
    log = open(ARTIFACTS / "app.log", "wb")
    proc = None
    try:
        proc = _serve(port, temp, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        if proc is not None:
            _stop(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def page(sync_api, app_url):
    profile = tempfile.mkdtemp(prefix="gridvlm-chromium-")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.goto(app_url)
        yield page
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def expect(target):
    """playwright's expect (imported once the fixtures have checked it is installed). Its assertions do not follow
    page.set_default_timeout: every call passes timeout= (tests/test_browser_waits.py checks)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _expect_text(page, selector: str, text: str) -> None:
    expect(page.locator(selector)).to_contain_text(text, timeout=STEP_TIMEOUT_MS)


def _upload(page, path: Path) -> None:
    """Replace the Slice tab's image: clear the current file if one is shown, then set the file input."""
    box = page.locator("#image-upload")
    clear = box.get_by_role("button", name="Clear")
    file_input = box.locator("input[type=file]")
    # the box takes files once the page's first event has enabled it
    expect(clear.or_(file_input).first).to_be_attached(timeout=STEP_TIMEOUT_MS)
    if clear.count():
        clear.first.click()
    box.locator("input[type=file]").set_input_files(str(path))


def _plotly_traces(page, selector: str) -> int:
    """The number of traces of the plotly figure under `selector`, once it has drawn at least one."""
    page.wait_for_function(
        "sel => { const el = document.querySelector(sel + ' .js-plotly-plot'); return !!el && !!el.data && "
        "el.data.length > 0; }", arg=selector, timeout=STEP_TIMEOUT_MS)
    return page.eval_on_selector(f"{selector} .js-plotly-plot", "el => (el.data || []).length")


def test_slice_compare_pack_and_a_bad_upload(page, tmp_path):
    # 1. The page opens on the default example, planned with llava-next.
    default = gridvlm.plan(gridvlm.image_size(ASSETS / "landscape_photo.jpg"), "llava-next")
    _expect_text(page, "#slice-summary", f"{default.token_count} tokens")
    _shot(page, "01-loaded")

    # 2. Upload an image: the overlay and the headline follow the plan for its size.
    _upload(page, PORTRAIT)
    expected = gridvlm.plan((1200, 1600), "llava-next")
    _expect_text(page, "#slice-summary", "1200×1600")
    _expect_text(page, "#slice-summary", f"{expected.token_count} tokens")
    _expect_text(page, "#slice-summary", f"{len(expected.tiles)} tiles")
    assert _plotly_traces(page, "#overlay") > 0
    expect(page.locator("#views img")).to_have_count(expected.num_views, timeout=STEP_TIMEOUT_MS)
    _shot(page, "02-uploaded")

    # 3. Pick another strategy from the dropdown.
    internvl = gridvlm.plan((1200, 1600), "internvl")
    page.locator("#strategy input").click()
    page.get_by_role("option", name="internvl", exact=True).click()
    _expect_text(page, "#slice-summary", "internvl")
    _expect_text(page, "#slice-summary", f"{internvl.token_count} tokens")
    _expect_text(page, "#slice-summary", f"{len(internvl.tiles)} tiles")
    _expect_text(page, "#strategy-about", "InternVL")
    expect(page.locator("#views img")).to_have_count(internvl.num_views, timeout=STEP_TIMEOUT_MS)
    _shot(page, "03-internvl")

    # 4. Compare: every strategy in the table, small multiples and scatter drawn.
    page.get_by_role("tab", name="Compare").click()
    _expect_text(page, "#compare-table", "llava-next")
    _expect_text(page, "#compare-table", "qwen2-vl")
    assert _plotly_traces(page, "#compare-figure") > 0
    assert _plotly_traces(page, "#compare-scatter") > 0
    _shot(page, "04-compare")

    # 5. Pack: the examples packed into sequences, compared with a padded tiling batch.
    page.get_by_role("tab", name="Pack").click()
    _expect_text(page, "#pack-table", "NaViT packing")
    _expect_text(page, "#pack-table", "padded")
    assert _plotly_traces(page, "#pack-figure") > 0
    assert _plotly_traces(page, "#mask-figure") > 0
    _shot(page, "05-pack")

    # 6. A text file named .png: a readable error, and the app keeps working.
    page.get_by_role("tab", name="Slice").click()
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image\n")
    _upload(page, fake)
    expect(page.get_by_text("is not an image").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
    _shot(page, "06-bad-upload")

    square = tmp_path / "square.png"
    from PIL import Image

    Image.new("RGB", (800, 800), (40, 120, 200)).save(square)
    _upload(page, square)
    after = gridvlm.plan((800, 800), "internvl")
    _expect_text(page, "#slice-summary", "800×800")
    _expect_text(page, "#slice-summary", f"{after.token_count} tokens")
    _shot(page, "07-recovered")


def _plot_title(page, selector: str) -> str:
    return page.eval_on_selector(f"{selector} .js-plotly-plot", "el => (el.layout && el.layout.title && "
                                 "(el.layout.title.text || el.layout.title)) || ''")


def _expect_plot_title(page, selector: str, text: str) -> str:
    """Wait until the plotly figure under `selector` has a title containing `text`; returns the title."""
    page.wait_for_function(
        """([sel, text]) => { const el = document.querySelector(sel + ' .js-plotly-plot');
                              const t = el && el.layout && el.layout.title;
                              return !!t && String(t.text || t).includes(text); }""",
        arg=[selector, text], timeout=STEP_TIMEOUT_MS)
    return _plot_title(page, selector)


def test_chat_streams_a_reply_and_shows_where_it_looked(page, tmp_path):
    """The tiny offline model (the default without CUDA): load, ask, watch the reply stream in, then the attention
    panel: heatmaps, a token from the picker, a narrower layer range."""
    from PIL import Image

    # The same picture whatever ran before: the tiny model's (greedy, fixed-weight) reply about it has spaces early,
    # so a short reply still streams in several pieces (its streamer shows text up to the last space).
    square = tmp_path / "chat-square.png"
    Image.new("RGB", (800, 800), (40, 120, 200)).save(square)
    page.get_by_role("tab", name="Slice").click()
    _upload(page, square)
    _expect_text(page, "#slice-summary", "800×800")

    label = "random weights — answers are meaningless, geometry is real"
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#chat-model input")).to_have_value(re.compile(re.escape(label)), timeout=STEP_TIMEOUT_MS)
    page.locator("#chat-load").click()
    expect(page.locator("#chat-model-status")).to_contain_text(label, timeout=MODEL_TIMEOUT_MS)  # builds it
    _expect_text(page, "#chat-usage", "visual tokens")
    tokens = page.locator("#chat-max-new-tokens input[type=number]")
    tokens.fill(str(CHAT_TOKENS))
    tokens.blur()  # the slider's release: the usage line re-counts, which shows the new length was taken
    _expect_text(page, "#chat-usage", f"+ {CHAT_TOKENS} new")
    page.get_by_text("Where did the model look? (attention)").click()  # open the panel before asking
    _shot(page, "08-chat-loaded")

    # Every text the answer bubble shows, recorded as it changes: a streamed reply shows several prefixes.
    page.evaluate("""() => {
        window.__replies = [];
        window.__sendLocked = false;  // Send disabled at some moment of the reply
        new MutationObserver(() => {
            if (document.querySelector('#chat-send').disabled) window.__sendLocked = true;
        }).observe(document.querySelector('#chat-send'), {attributes: true});
        new MutationObserver(() => {
            const bots = document.querySelectorAll('#chat-bot [data-testid="bot"]');
            const text = bots.length ? bots[bots.length - 1].innerText : '';
            if (text && window.__replies[window.__replies.length - 1] !== text) window.__replies.push(text);
        }).observe(document.querySelector('#chat-bot'), {subtree: true, childList: true, characterData: true});
    }""")
    page.locator("#chat-message textarea").fill("What is in this image?")
    page.locator("#chat-send").click()
    expect(page.locator('#chat-bot [data-testid="user"]')).to_contain_text("What is in this image?",
                                                                           timeout=STEP_TIMEOUT_MS)
    title = _expect_plot_title(page, "#attention-overlay", "LLM layers 0–1, whole answer")  # after the reply
    replies = page.evaluate("() => window.__replies")
    assert len(replies) >= 3, replies
    assert page.evaluate("() => window.__sendLocked"), "Send stayed enabled while the reply streamed"
    expect(page.locator("#chat-send")).to_be_enabled(timeout=STEP_TIMEOUT_MS)  # and unlocks after it  # shown while it was written (random text: markdown, so not always prefixes)
    assert _plotly_traces(page, "#attention-global") > 0 and _plotly_traces(page, "#attention-mass") > 0
    _expect_text(page, "#attention-summary", "newlines")
    _shot(page, "09-chat-attention")

    # One answer token from the picker: its row only.
    page.locator("#attention-token input").click()
    option = page.get_by_role("option").nth(3)  # whole answer, question, then "0: …", "1: …"
    picked = option.inner_text()
    assert picked.startswith("1: ")
    option.click()
    title = _expect_plot_title(page, "#attention-overlay", "LLM layers 0–1, 1: ")
    _shot(page, "10-chat-token")

    # The last layer only: first = last = 1.
    first = page.locator("#attention-first-layer input[type=number]")
    first.fill("1")
    first.press("Enter")
    title = _expect_plot_title(page, "#attention-overlay", "LLM layers 1–1, 1: ")
    assert "1: " in title
    _shot(page, "11-chat-layers")


def test_a_family_narrows_the_strategies_and_qwen25_shows_its_windows(page):
    page.get_by_role("tab", name="Slice").click()
    page.locator("#family input").click()
    page.get_by_role("option", name="native resolution", exact=True).click()
    page.locator("#strategy input").click()
    for name in gridvlm.list_strategies("native resolution"):
        expect(page.get_by_role("option", name=name, exact=True)).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    expect(page.get_by_role("option", name="internvl", exact=True)).to_have_count(0, timeout=STEP_TIMEOUT_MS)
    page.get_by_role("option", name="qwen2.5-vl", exact=True).click()
    _expect_text(page, "#slice-summary", "qwen2.5-vl")
    page.locator("#show-windows input").check()
    page.wait_for_function(
        "() => { const el = document.querySelector('#overlay .js-plotly-plot'); return !!el && !!el.layout && "
        "(el.layout.shapes || []).some(s => s.name === 'attention window'); }", timeout=STEP_TIMEOUT_MS)
    # narrowing the list must not refuse the strategy that was shown before (an error toast)
    expect(page.get_by_text("is not in the list of choices")).to_have_count(0, timeout=STEP_TIMEOUT_MS)
    _shot(page, "10-family-windows")


@pytest.mark.parametrize("family, name, score", [("anyres", "llava-next", "effective resolution"),
                                                 ("variable slices", "minicpm-v", "log-ratio error")])
def test_why_this_grid_shows_the_candidates_and_the_winner(page, family, name, score):
    page.get_by_role("tab", name="Slice").click()
    page.locator("#family input").click()
    page.get_by_role("option", name=family, exact=True).click()
    page.locator("#strategy input").click()
    page.get_by_role("option", name=name, exact=True).click()
    _expect_text(page, "#slice-summary", name)
    if not page.locator("#why").is_visible():  # the accordion stays open once opened
        page.locator("#why-accordion").get_by_text("Why this grid?").click()
    expect(page.locator("#why")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    _expect_text(page, "#why", "Rule.")
    _expect_text(page, "#why", score)
    _expect_text(page, "#why", "Decision.")
    expect(page.locator("#why table")).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    _shot(page, f"11-why-{name}")


def _fewest_tokens(size, strategy) -> int:
    """The smallest budget `fit_budget` can meet for `strategy` on an image of `size` (binary search)."""
    lo, hi = 1, 100_000
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            gridvlm.fit_budget(size, strategy, mid)
            hi = mid
        except gridvlm.PlanError:
            lo = mid + 1
    return lo


def _portrait_planned_by(page, strategy: str) -> None:
    """The Slice tab showing the portrait example (1200×1600) planned by `strategy`, picked from all families."""
    page.get_by_role("tab", name="Slice").click()
    _upload(page, PORTRAIT)
    _expect_text(page, "#slice-summary", "1200×1600")
    page.locator("#family input").click()
    page.get_by_role("option", name="all families", exact=True).click()
    page.locator("#strategy input").click()
    page.get_by_role("option", name=strategy, exact=True).click()
    _expect_text(page, "#slice-summary", strategy)


def test_a_refused_switch_keeps_the_new_strategy_and_a_budget_change_recovers(page):
    size = (1200, 1600)
    need = _fewest_tokens(size, "llava-next")
    assert _fewest_tokens(size, "internvl") < need  # internvl fits a budget llava-next cannot meet
    _portrait_planned_by(page, "internvl")
    budget = page.locator("#budget input[type=number]")
    budget.fill(str(need - 1))
    budget.blur()  # the slider's release: fit the budget
    fitted = gridvlm.fit_budget(size, "internvl", need - 1)
    _expect_text(page, "#slice-summary", f"{fitted.token_count} tokens")

    page.locator("#strategy input").click()
    page.get_by_role("option", name="llava-next", exact=True).click()
    _expect_text(page, "#strategy-about", "LLaVA-NeXT")  # the new strategy's description and parameters …
    if not page.locator("#params").count():  # they sit in the closed "Advanced" accordion
        page.get_by_text("Advanced: the strategy's parameters").click()
    _expect_text(page, "#params", "grid_pinpoints")
    _expect_text(page, "#slice-status", str(need))  # … and the refusal, saying what the budget must reach
    _expect_text(page, "#slice-summary", "internvl")  # the last good plan stays on screen
    _shot(page, "12-refused-switch")

    budget.fill(str(need))
    budget.blur()
    _expect_text(page, "#slice-summary", "llava-next")
    _expect_text(page, "#slice-summary", f"{gridvlm.fit_budget(size, 'llava-next', need).token_count} tokens")
    expect(page.locator("#slice-status")).not_to_contain_text(str(need), timeout=STEP_TIMEOUT_MS)


# Sets window.__eventEnded once the progress tracker of the output `sel` has been shown and hidden again.
EVENT_ENDED_WATCH = """(sel) => {
    window.__eventEnded = false;
    let shown = false;
    const check = () => {
        const t = document.querySelector(sel + ' [data-testid=status-tracker]');
        const busy = !!t && !t.classList.contains('hide');
        if (busy) shown = true;
        else if (shown) { window.__eventEnded = true; observer.disconnect(); }
    };
    const observer = new MutationObserver(check);
    observer.observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});
}"""


def test_edited_parameters_survive_a_blur_of_the_strategy_box_and_nothing_is_kept_in_the_browser(page, app_url):
    # a page of its own, on the default view: with the budget on (left so by other tests) the budget fit would
    # move max_tiles itself
    page = _fresh_page(page)
    page.goto(app_url)
    try:
        _edited_parameters_survive_a_blur(page)
    finally:
        page.close()


def _edited_parameters_survive_a_blur(page) -> None:
    _portrait_planned_by(page, "internvl")
    if not page.locator("#params .cm-content").count():  # the parameters sit in the closed "Advanced" accordion
        page.get_by_text("Advanced: the strategy's parameters").click()
    edited = gridvlm.strategy_info("internvl").defaults | {"max_tiles": 2}
    page.locator("#params .cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(json.dumps(edited))
    page.get_by_role("button", name="Apply parameters").click()
    fitted = gridvlm.plan((1200, 1600), "internvl", **edited)
    assert len(fitted.tiles) != len(gridvlm.plan((1200, 1600), "internvl").tiles)
    tiles = re.compile(rf"\b{ui.count(len(fitted.tiles), 'tile')}\b")
    expect(page.locator("#slice-summary")).to_contain_text(tiles, timeout=STEP_TIMEOUT_MS)

    # gradio's dropdown sends `input` when it loses focus, chosen or not: that must not reset the parameters.
    # The event that the blur starts shows (and then hides) the overlay's progress; wait for it to end.
    page.evaluate(EVENT_ENDED_WATCH, "#overlay")
    page.locator("#strategy input").click()
    page.locator("#slice-summary").click()  # the box loses focus
    page.wait_for_function("() => window.__eventEnded === true", timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#params")).to_contain_text('"max_tiles": 2', timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#slice-summary")).to_contain_text(tiles, timeout=STEP_TIMEOUT_MS)
    # gradio's run history (every event's inputs and outputs, upload paths included) is off
    kept = page.evaluate("() => Object.keys(window.localStorage).filter(k => k.startsWith('gradio:run-history'))")
    assert kept == []


# ---------------------------------------------------------------------------------------------------------------
# The Slice tab keeps whole: links, the page's first event, refusals, keys, exports, restarts

# Records, from the first node of the page on, whether the strategy box was ever enabled while no plan was shown.
CONTROLS_WATCH = """() => {
    window.__enabledEarly = false; window.__sawDisabled = false;
    new MutationObserver(() => {
        const box = document.querySelector('#strategy input');
        const summary = document.querySelector('#slice-summary');
        if (!box) return;
        if (box.disabled) window.__sawDisabled = true;
        else if (!summary || !summary.innerText.trim()) window.__enabledEarly = true;
    }).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def _link_value(page) -> str:
    return page.locator("#share-link textarea, #share-link input").first.input_value()


def test_a_shared_link_opens_the_same_view(page, app_url):
    size = gridvlm.image_size(ASSETS / "portrait_photo.jpg")
    expected = gridvlm.fit_budget(size, "internvl", 1000)
    other = page.context.new_page()  # its own session
    other.add_init_script(f"({CONTROLS_WATCH})()")
    try:
        other.goto(app_url + "?example=portrait_photo&strategy=internvl&budget=1000")
        _expect_text(other, "#slice-summary", "1200×1600")
        _expect_text(other, "#slice-summary", f"{expected.token_count} tokens")
        _expect_text(other, "#slice-summary", "internvl")
        expect(other.locator("#strategy input")).to_have_value("internvl", timeout=STEP_TIMEOUT_MS)
        expect(other.locator("#budget input[type=number]")).to_have_value("1000", timeout=STEP_TIMEOUT_MS)
        expect(other.locator("#use-defaults input")).not_to_be_checked(timeout=STEP_TIMEOUT_MS)
        assert other.evaluate("() => window.__sawDisabled"), "the strategy box was never seen disabled"
        assert not other.evaluate("() => window.__enabledEarly"), "a control was enabled before the first plan"
        # The page's own link for what it shows opens the same view again.
        other.wait_for_function("() => { const el = document.querySelector('#share-link textarea, #share-link input');"
                                " return !!el && el.value.includes('budget=1000'); }", timeout=STEP_TIMEOUT_MS)
        link = _link_value(other)
        assert link.startswith(app_url) and "strategy=internvl" in link and "example=portrait_photo" in link
        # The views are files named by their place in the plan (what the gallery's download saves them as).
        expect(other.locator("#views img")).to_have_count(expected.num_views, timeout=STEP_TIMEOUT_MS)
        sources = other.eval_on_selector_all("#views img", "els => els.map(e => e.getAttribute('src'))")
        assert all(re.search(r"/view\d\d_(global|r\d+c\d+)\.jpg", src) for src in sources), sources
        _shot(other, "20-shared-link")
    finally:
        other.close()


def test_enter_in_the_budget_box_and_arrow_keys_on_the_slider_replan(page):
    page.get_by_role("tab", name="Slice").click()
    _upload(page, PORTRAIT)
    _expect_text(page, "#slice-summary", "1200×1600")
    page.locator("#strategy input").click()
    page.get_by_role("option", name="qwen2-vl", exact=True).click()
    _expect_text(page, "#slice-summary", "qwen2-vl")
    box = page.locator("#budget input[type=number]")
    box.fill("700")
    box.press("Enter")
    _expect_text(page, "#slice-summary", f"{gridvlm.fit_budget((1200, 1600), 'qwen2-vl', 700).token_count} tokens")
    slider = page.locator("#budget input[type=range]")
    slider.focus()
    for _ in range(3):
        slider.press("ArrowRight")
    expect(box).to_have_value("703", timeout=STEP_TIMEOUT_MS)
    _expect_text(page, "#slice-summary", f"{gridvlm.fit_budget((1200, 1600), 'qwen2-vl', 703).token_count} tokens")


def _badges(page) -> int:
    """Gradio's red "Error" badges over outputs (its status tracker's error state)."""
    return page.locator("#slice-summary, #overlay, #breakdown, #metrics, #notes, #views").get_by_text(
        "Error", exact=True).count()


def test_a_refusal_keeps_the_last_figures_and_its_message_without_error_badges(page, tmp_path):
    page.get_by_role("tab", name="Slice").click()
    _upload(page, PORTRAIT)
    _expect_text(page, "#slice-summary", "1200×1600")
    page.locator("#use-defaults input").check()  # whatever budget an earlier test left
    page.locator("#strategy input").click()
    page.get_by_role("option", name="llava-next", exact=True).click()
    _expect_text(page, "#slice-summary", "llava-next")
    shown = _expect_plot_title(page, "#overlay", "llava-next")
    need = _fewest_tokens((1200, 1600), "llava-next")

    box = page.locator("#budget input[type=number]")
    box.fill(str(need - 1))
    box.press("Enter")
    _expect_text(page, "#slice-status", f"Raise the budget to {need}")
    assert _plot_title(page, "#overlay") == shown  # the last good figure stays …
    _expect_text(page, "#slice-summary", "llava-next")
    assert _badges(page) == 0  # … with no "Error" badge over it
    # Another round trip (the views zip) and the message is still there.
    page.locator("#export-views").click()
    expect(page.locator("#figure-files")).to_contain_text("_views", timeout=STEP_TIMEOUT_MS)
    _expect_text(page, "#slice-status", f"Raise the budget to {need}")
    assert _badges(page) == 0
    _shot(page, "21-refusal-kept")

    # A bad upload: the file box is emptied, the reason is under it and says which image is shown.
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image\n")
    _upload(page, fake)
    _expect_text(page, "#upload-status", "notes.png")
    _expect_text(page, "#upload-status", "Still showing the previous image, portrait_photo.jpg")
    expect(page.locator("#image-upload")).not_to_contain_text("notes.png", timeout=STEP_TIMEOUT_MS)
    assert _plot_title(page, "#overlay") == shown and _badges(page) == 0
    _shot(page, "22-bad-upload-kept")
    box.fill(str(need))
    box.press("Enter")
    expect(page.locator("#slice-status")).not_to_contain_text("Raise the budget", timeout=STEP_TIMEOUT_MS)


def test_the_exported_html_draws_its_figure_offline(page, tmp_path):
    page.get_by_role("tab", name="Slice").click()
    _expect_text(page, "#slice-summary", "tokens")
    page.locator("#export").click()
    link = page.locator("#figure-files tr", has_text="_overlay").filter(has_text="html").locator("a").first
    expect(link).to_be_visible(timeout=STEP_TIMEOUT_MS)
    with page.expect_download(timeout=STEP_TIMEOUT_MS) as download:
        link.click()
    path = tmp_path / "overlay.html"
    download.value.save_as(path)
    offline = page.context.new_page()
    requested = []

    def only_files(route):
        requested.append(route.request.url)
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    try:
        offline.route("**/*", only_files)
        offline.goto(path.as_uri())
        expect(offline.locator("#gridvlm-overlay svg.main-svg").first).to_be_attached(timeout=STEP_TIMEOUT_MS)
        expect(offline.locator("#gridvlm-overlay .shapelayer path").first).to_be_attached(timeout=STEP_TIMEOUT_MS)
        assert all(url.startswith(("file:", "data:")) for url in requested), requested
        _shot(offline, "23-offline-html")
    finally:
        offline.close()


@pytest.mark.slow  # starts and restarts a server of its own
def test_after_a_server_restart_the_page_asks_for_the_upload_again(page, tmp_path):
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="gridvlm-restart-")
    log = open(ARTIFACTS / "app-restart.log", "wb")
    from PIL import Image

    mine = tmp_path / "my-photo.png"  # not an example: a link or the browser's memory cannot bring it back
    Image.new("RGB", (900, 600), (90, 160, 60)).save(mine)
    other = page.context.new_page()  # another port, so another origin: a browser memory of its own
    proc = _serve(port, temp, log)
    try:
        other.goto(f"http://127.0.0.1:{port}/")
        _expect_text(other, "#slice-summary", "tokens")
        _upload(other, mine)
        _expect_text(other, "#slice-summary", "900×600")
        other.locator("#strategy input").click()
        other.get_by_role("option", name="internvl", exact=True).click()
        _expect_text(other, "#slice-summary", "internvl")
        other.wait_for_function("() => { const el = document.querySelector('#share-link textarea, #share-link input');"
                                " return !!el && el.value.includes('internvl'); }", timeout=STEP_TIMEOUT_MS)
        _stop(proc)
        proc = _serve(port, temp, log)
        budget = other.locator("#budget input[type=number]")  # acting before a reload: told, inline, why
        budget.fill("1500")
        budget.press("Enter")
        _expect_text(other, "#slice-status", "the server restarted")
        _expect_text(other, "#slice-summary", "internvl")  # what was shown stays
        other.reload()
        _expect_text(other, "#page-banner", "server restarted")
        _expect_text(other, "#page-banner", "my-photo.png")
        _expect_text(other, "#page-banner", "Upload your image again")
        expect(other.locator("#strategy input")).to_have_value("internvl", timeout=STEP_TIMEOUT_MS)
        _expect_text(other, "#slice-summary", "internvl")  # the remembered strategy, planned on the example
        _shot(other, "24-restart-banner")
    finally:
        other.close()
        _stop(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _fresh_page(page):
    """A new page of the same browser that opens on the default view: the page remembers the last view in the
    browser's storage (shared by every page of one origin), so a page after other tests would open on theirs."""
    fresh = page.context.new_page()
    fresh.add_init_script("try { window.localStorage.clear(); } catch (e) {}")
    fresh.set_default_timeout(STEP_TIMEOUT_MS)
    return fresh


def _boxes_overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and \
        a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


def test_pack_labels_every_segment_and_says_what_the_numbers_mean(page):
    from gridvlm.app.display import EXAMPLES, IMAGE_SETS
    from gridvlm.packing import compare_layouts

    page.get_by_role("tab", name="Pack").click()
    examples = compare_layouts([gridvlm.image_size(p) for p in EXAMPLES], "llava-next", 8192)
    _expect_text(page, "#pack-table", "NaViT packing")
    _expect_text(page, "#pack-explain", f"Packing wastes {1 - examples.packed.utilization:.1%}")
    _expect_text(page, "#pack-explain", "Like with like")
    # Every packed segment carries its image's index, and the legend names every file.
    labels = "#pack-figure text.bartext"
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n", arg=[labels, len(EXAMPLES)],
                           timeout=STEP_TIMEOUT_MS)
    shown = sorted(int(t) for t in page.locator(labels).all_text_contents())
    assert shown == list(range(len(EXAMPLES)))
    for path in EXAMPLES:
        _expect_text(page, "#pack-figure .legend", path.name)
    _expect_text(page, "#mask-figure .legend", "may attend")

    # A set where the order matters: the sentence says first-fit-decreasing needs fewer sequences.
    label = next(k for k, s in IMAGE_SETS.items() if s.sizes and s.tiling == "llava-next")
    page.locator("#pack-set input").click()
    page.get_by_role("option", name=label, exact=True).click()
    _expect_text(page, "#pack-explain", "Order matters here")
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n",
                           arg=[labels, len(IMAGE_SETS[label].sizes)], timeout=STEP_TIMEOUT_MS)
    _shot(page, "13-pack-order-matters")
    # The packer step by step: after 3 placements only 3 segments are drawn.
    step = page.locator("#pack-step input[type=number]")
    step.fill("3")
    step.press("Enter")
    _expect_text(page, "#pack-step-caption", f"Step 3 of {len(IMAGE_SETS[label].sizes)}")
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n", arg=[labels, 3],
                           timeout=STEP_TIMEOUT_MS)

    # At phone width no two titles of the comparison figure overlap.
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        titles = page.locator("#pack-versus .annotation-text, #pack-versus .gtitle")
        expect(titles).to_have_count(4, timeout=STEP_TIMEOUT_MS)
        page.wait_for_function(
            "() => { const el = document.querySelector('#pack-versus .main-svg');"
            " return !!el && el.getBoundingClientRect().width <= 390; }", timeout=STEP_TIMEOUT_MS)
        boxes = [titles.nth(k).bounding_box() for k in range(4)]
        assert not any(_boxes_overlap(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:]), boxes
        for figure in ("#pack-figure", "#mask-figure", "#pack-versus"):  # every title fits the screen
            title = page.locator(f"{figure} .gtitle").bounding_box()
            assert title["x"] >= 0 and title["x"] + title["width"] <= 390, (figure, title)
        _shot(page, "14-pack-phone")
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})


PHONE = {"width": 390, "height": 844}  # a phone's viewport, CSS px
PLOT_AREA = """sel => { const r = document.querySelector(sel + ' .js-plotly-plot .nsewdrag');
                        return r ? r.getBoundingClientRect().width : 0; }"""
NO_PAGE_OVERFLOW = "() => document.documentElement.scrollWidth <= window.innerWidth"
# the subplot titles of the figure under a selector that overlap another title (rects of their <text>, in px)
OVERLAPPING_TITLES = """sel => { const rs = [...document.querySelectorAll(sel + ' .annotation-text, ' + sel + ' .annotation text')]
                                    .map(e => e.getBoundingClientRect()).filter(r => r.width > 0);
    const hit = (a, b) => a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1;
    return rs.filter((a, i) => rs.some((b, j) => i !== j && hit(a, b))).length; }"""


@pytest.fixture
def phone(page, app_url):
    """A second page of the same browser at a phone's viewport."""
    small = _fresh_page(page)
    small.set_viewport_size(PHONE)
    small.set_default_timeout(STEP_TIMEOUT_MS)
    small.goto(app_url)
    yield small
    small.close()


def test_on_a_phone_the_overlay_keeps_its_width_and_nothing_overflows(phone):
    default = gridvlm.plan(gridvlm.image_size(ASSETS / "landscape_photo.jpg"), "llava-next")
    _expect_text(phone, "#slice-summary", f"{default.token_count} tokens")
    phone.wait_for_function(f"sel => ({PLOT_AREA})(sel) > 0", arg="#overlay", timeout=STEP_TIMEOUT_MS)
    assert phone.evaluate(PLOT_AREA, "#overlay") >= 300  # the colour bar sits below, not beside the image
    expect(phone.locator("#views img")).to_have_count(default.num_views, timeout=STEP_TIMEOUT_MS)
    _expect_text(phone, "#views", f"{default.num_views} views as the encoder sees them")  # the gallery's label
    assert phone.evaluate(NO_PAGE_OVERFLOW)
    _shot(phone, "13-phone-slice")

    phone.get_by_role("tab", name="Compare").click()
    assert _plotly_traces(phone, "#compare-figure") > 0
    assert phone.evaluate(OVERLAPPING_TITLES, "#compare-figure") == 0
    assert phone.evaluate(NO_PAGE_OVERFLOW)
    _shot(phone, "14-phone-compare")

    phone.get_by_role("tab", name="Pack").click()
    assert _plotly_traces(phone, "#pack-versus") > 0
    assert phone.evaluate(OVERLAPPING_TITLES, "#pack-versus") == 0
    assert phone.evaluate(NO_PAGE_OVERFLOW)
    _shot(phone, "15-phone-pack")


def test_gallery_captions_are_whole_at_1280_px(page, app_url):
    wide = _fresh_page(page)
    wide.set_viewport_size({"width": 1280, "height": 900})
    try:
        wide.goto(app_url)
        default = gridvlm.plan(gridvlm.image_size(ASSETS / "landscape_photo.jpg"), "llava-next")
        expect(wide.locator("#views .caption-label")).to_have_count(default.num_views, timeout=STEP_TIMEOUT_MS)
        cut = wide.evaluate("() => [...document.querySelectorAll('#views .caption-label')]"
                            ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)")
        assert cut == []
        shown = wide.locator("#views .caption-label").all_inner_texts()
        assert shown == ui.view_captions(default)
    finally:
        wide.close()


# ---------------------------------------------------------------------------------------------------------------
# Chat and heatmaps for families beyond LLaVA: a tiled family with a global view and a native-resolution one

TINY_LABEL = "random weights — answers are meaningless, geometry is real"
FAMILIES = [("smolvlm", True), ("internvl", True), ("qwen2-vl", False)]  # (family, has a global view at 800×800)


@pytest.mark.parametrize("family, has_global", FAMILIES)
def test_a_family_chats_and_shows_where_it_looked(page, tmp_path, family, has_global):
    from gridvlm.models import list_adapters

    if family not in list_adapters():
        pytest.skip(f"gridvlm.models has no {family} family")
    from PIL import Image

    from gridvlm.models.adapter import get_adapter

    adapter = get_adapter(family)
    square = tmp_path / f"{family}-square.png"
    Image.new("RGB", (800, 800), (200, 120, 40)).save(square)
    page.get_by_role("tab", name="Slice").click()
    _upload(page, square)
    _expect_text(page, "#slice-summary", "800×800")

    page.get_by_role("tab", name="Chat").click()
    label = f"{adapter.title or family} · tiny ({TINY_LABEL})"
    page.locator("#chat-model input").click()
    page.get_by_role("option", name=label, exact=True).click()
    expect(page.locator("#chat-model input")).to_have_value(label, timeout=STEP_TIMEOUT_MS)
    page.locator("#chat-load").click()
    expect(page.locator("#chat-model-status")).to_contain_text(family, timeout=MODEL_TIMEOUT_MS)
    expect(page.locator("#chat-model-status")).to_contain_text(TINY_LABEL, timeout=STEP_TIMEOUT_MS)
    if not adapter.plan_mode:  # the model sees its own slicing only, and the page says which
        _expect_text(page, "#chat-usage", "sees its own slicing")
        expect(page.locator("#chat-strategy").get_by_text("current Slice-tab plan")).to_have_count(
            0, timeout=STEP_TIMEOUT_MS)
    tokens = page.locator("#chat-max-new-tokens input[type=number]")
    tokens.fill("6")
    tokens.blur()
    _expect_text(page, "#chat-usage", "+ 6 new")

    panel = page.get_by_text("Where did the model look? (attention)")
    if not page.locator("#attention-source").is_visible():
        panel.click()
    page.locator("#attention-source").get_by_text("LLM → image").click()  # a test before may have left "vision"
    question = f"What does {family} see in this image?"
    page.locator("#chat-message textarea").fill(question)
    expect(page.locator("#chat-send")).to_be_enabled(timeout=STEP_TIMEOUT_MS)
    page.locator("#chat-send").click()
    try:
        expect(page.locator('#chat-bot [data-testid="user"]').last).to_contain_text(question,
                                                                                   timeout=STEP_TIMEOUT_MS)
        _expect_plot_title(page, "#attention-overlay", "LLM layers")
    except Exception:
        _shot(page, f"20-{family}-failed")
        raise
    assert _plotly_traces(page, "#attention-overlay") > 0 and _plotly_traces(page, "#attention-mass") > 0
    if has_global:
        assert _plotly_traces(page, "#attention-global") > 0
        _expect_text(page, "#attention-summary", "global view")
    _shot(page, f"20-{family}-llm-attention")

    page.locator("#attention-source").get_by_text("vision encoder").click()
    _expect_plot_title(page, "#attention-overlay", "vision encoder")
    _shot(page, f"21-{family}-vision-attention")

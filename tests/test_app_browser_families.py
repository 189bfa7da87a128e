"""Chat and attention heatmaps in a real browser for model families beyond LLaVA: a tiled family with a global view
(SmolVLM, InternVL) and a native-resolution one (Qwen2-VL), each with its tiny random-weight checkpoint.

Same rules as tests/test_app_browser.py (whose fixtures start the app and chromium): every wait is on a condition
with an explicit timeout.
"""

from __future__ import annotations

import pytest

from gridvlm.models import list_adapters

from test_app_browser import (  # noqa: F401 - fixtures
    MODEL_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    _expect_plot_title,
    _expect_text,
    _plotly_traces,
    _shot,
    _upload,
    app_url,
    expect,
    page,
    sync_api,
)

pytestmark = pytest.mark.browser

TINY_LABEL = "random weights — answers are meaningless, geometry is real"
FAMILIES = [("smolvlm", True), ("internvl", True), ("qwen2-vl", False)]  # (family, has a global view at 800×800)


@pytest.mark.parametrize("family, has_global", FAMILIES)
def test_a_family_chats_and_shows_where_it_looked(page, tmp_path, family, has_global):
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
    page.locator("#chat-clear").click()
    page.locator("#chat-message textarea").fill("What is in this image?")
    page.locator("#chat-send").click()
    expect(page.locator('#chat-bot [data-testid="bot"]')).to_have_count(1, timeout=MODEL_TIMEOUT_MS)
    _expect_plot_title(page, "#attention-overlay", "LLM layers")
    assert _plotly_traces(page, "#attention-overlay") > 0 and _plotly_traces(page, "#attention-mass") > 0
    if has_global:
        assert _plotly_traces(page, "#attention-global") > 0
        _expect_text(page, "#attention-summary", "global view")
    _shot(page, f"20-{family}-llm-attention")

    page.locator("#attention-source").get_by_text("vision encoder").click()
    _expect_plot_title(page, "#attention-overlay", "vision encoder")
    _shot(page, f"21-{family}-vision-attention")

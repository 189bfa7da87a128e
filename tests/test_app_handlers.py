"""The app's handlers, called directly (no browser, no server): what each tab would show, checked against gridvlm."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")
import gridvlm  # noqa: E402
from gridvlm.app import compare_tab, errors, slice_tab  # noqa: E402
from gridvlm.app import display as ui  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = gridvlm.list_strategies()


def _photo_like(size: tuple[int, int]) -> Image.Image:
    """Smooth gradients plus a few hard edges, so seams have something to cut."""
    w, h = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    for k in range(6):
        x = (k + 1) * w // 8
        image.paste((200, 40 * k, 90), (x, h // 4, x + w // 20, 3 * h // 4))
    return image


@pytest.fixture(autouse=True)
def gradio_temp_dir(tmp_path, monkeypatch):
    """Downloads the handlers write go to this test's own folder, as they go to gradio's temp dir in the app."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("app") / "photo.png"
    _photo_like((640, 480)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def ws(image_path) -> ui.Workspace:
    return ui.open_workspace(image_path)


def _tile_shapes(fig) -> list:
    return [s for s in fig.layout.shapes if (s.name or "").startswith("tile ")]


def _table(rows: list[list[str]]) -> dict[str, str]:
    return {k: v for k, v in rows}


def _error_message(excinfo) -> str:
    return excinfo.value.message


# ---------------------------------------------------------------------------------------------------------------
# Slice tab


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_through_the_slice_handlers(ws, name):
    about, params_json, params_doc = slice_tab.describe_strategy(name)
    fig, headline, breakdown, rows, notes, json_path, p = slice_tab.update_plan(ws, name, True, 2048, params_json)
    expected = gridvlm.plan(ws.size, name)
    assert p == expected
    assert len(_tile_shapes(fig)) == len(expected.tiles)
    assert f"**{ui.count(expected.token_count, 'token')}**" in headline
    assert f"**{ui.count(len(expected.tiles), 'tile')}**" in headline
    assert _table(rows)["tokens: total"] == str(expected.token_count)
    assert sum(int(v) for k, v in rows if k.startswith("tokens: ") and k != "tokens: total") == expected.token_count
    assert json.loads(Path(json_path).read_text()) == expected.to_dict()
    assert Path(json_path).is_relative_to(os.environ["GRADIO_TEMP_DIR"])
    assert json.loads(params_json) == gridvlm.strategy_info(name).defaults
    assert gridvlm.strategy_info(name).summary in about
    for key in gridvlm.strategy_info(name).params:
        assert f"`{key}`" in params_doc
    parts = dict(re.findall(r'title="([^"]+): ([\d,]+) tokens"', breakdown))  # the bar's segments, by name
    assert {k: int(v.replace(",", "")) for k, v in parts.items()} == {
        **expected.tokens, **({"text (wrapper)": expected.text_tokens} if expected.text_tokens else {})}
    assert f"{expected.token_count + expected.text_tokens:,} tokens" in breakdown

    gallery = slice_tab.show_views(ws, p)
    assert len(gallery) == expected.num_views
    assert [image.size for image, _ in gallery] == [tuple(v.input_size) for v in expected.views]
    assert [caption for _, caption in gallery] == ui.view_captions(expected)


@pytest.mark.parametrize("name", ["llava-1.5", "llava-next", "internvl"])
def test_the_gallery_label_counts_its_views(ws, name):
    p = gridvlm.plan(ws.size, name)
    update, _ = slice_tab.show_views_once(ws, p, None)
    assert len(update["value"]) == p.num_views
    assert update["label"].startswith(f"{p.num_views} view{'s' if p.num_views != 1 else ''} as the encoder")


def test_upload_decodes_once_and_draws_on_a_preview(tmp_path):
    path = tmp_path / "big.jpg"
    _photo_like((2400, 1600)).save(path, quality=90)
    ws, fig, headline, *_, p = slice_tab.upload(str(path), "llava-next", True, 2048, ui.params_text("llava-next"))
    assert ws.size == (2400, 1600)
    assert max(ws.preview.size) <= ui.PREVIEW_SIDE
    assert p == gridvlm.plan((2400, 1600), "llava-next")
    assert "2400×1600" in headline
    [image] = fig.layout.images
    drawn = Image.open(io.BytesIO(base64.b64decode(image.source.split(",", 1)[1])))
    assert max(drawn.size) <= ui.PREVIEW_SIDE  # the overlay never carries the full-resolution image


def test_clearing_the_upload_keeps_what_is_shown():
    assert slice_tab.upload(None, "llava-next", True, 2048, "{}") == gr.skip()


def test_budget_slider_fits_the_plan_and_leaves_the_defaults(ws):
    use_defaults, fig, headline, *_, p = slice_tab.set_budget(ws, "internvl", 1000, ui.params_text("internvl"))
    assert use_defaults is False
    assert p == gridvlm.fit_budget(ws.size, "internvl", 1000)
    assert p.token_count <= 1000 < gridvlm.plan(ws.size, "internvl").token_count
    assert len(_tile_shapes(fig)) == len(p.tiles)


def test_a_budget_no_setting_meets_says_what_would_work(ws):
    with pytest.raises(gridvlm.PlanError) as expected:
        gridvlm.fit_budget(ws.size, "llava-next", 10)
    with pytest.raises(gr.Error) as shown:
        slice_tab.set_budget(ws, "llava-next", 10, ui.params_text("llava-next"))
    message = _error_message(shown)
    assert message.startswith(str(expected.value))
    need = int(re.search(r"Raise the budget to (\d+)", message).group(1))
    assert gridvlm.fit_budget(ws.size, "llava-next", need).token_count <= need  # enough …
    with pytest.raises(gridvlm.PlanError):
        gridvlm.fit_budget(ws.size, "llava-next", need - 1)  # … and the least that is
    suggested = re.search(r"such as (.*)\.$", message).group(1).split(", ")
    assert suggested and all(gridvlm.fit_budget(ws.size, name, 10).token_count <= 10 for name in suggested)


def test_a_refused_plan_changes_no_output_and_says_why_inline(ws):
    planned = errors.keep_whole(slice_tab.set_budget, 8)
    *outputs, status = planned(ws, "llava-next", 10, ui.params_text("llava-next"))
    assert outputs == [gr.skip()] * 8  # the last good figures, plan and checkbox stay
    assert status.startswith("⚠️ ") and "Raise the budget to" in status
    *outputs, status = planned(ws, "llava-next", 4000, ui.params_text("llava-next"))
    assert outputs[-1] == gridvlm.fit_budget(ws.size, "llava-next", 4000) and status == ""


def test_changed_parameters_are_applied(ws):
    *_, p = slice_tab.update_plan(ws, "internvl", True, 2048, '{"max_tiles": 4, "thumbnail": false}')
    assert p == gridvlm.plan(ws.size, "internvl", max_tiles=4, thumbnail=False)


def test_parameters_with_a_budget_leave_the_knob_to_fit_budget(ws):
    # The defaults box still holds max_tiles; only changed values are passed, so fit_budget may move it.
    *_, p = slice_tab.update_plan(ws, "internvl", False, 800, ui.params_text("internvl").replace("true", "false"))
    assert p == gridvlm.fit_budget(ws.size, "internvl", 800, thumbnail=False)


@pytest.mark.parametrize("params", ['{"max_tiles": 0}', '{"max_tilez": 4}', '{"thumbnail": "yes"}'])
def test_a_bad_parameter_shows_the_plan_error(ws, params):
    with pytest.raises(gridvlm.PlanError) as expected:
        gridvlm.plan(ws.size, "internvl", **json.loads(params))
    with pytest.raises(gr.Error) as shown:
        slice_tab.update_plan(ws, "internvl", True, 2048, params)
    assert _error_message(shown) == str(expected.value)


@pytest.mark.parametrize("params", ['{"max_tiles": 4', "[4]"])
def test_parameters_that_are_not_a_json_object_are_a_readable_error(ws, params):
    with pytest.raises(gr.Error, match="JSON"):
        slice_tab.update_plan(ws, "internvl", True, 2048, params)


def test_a_non_image_upload_is_a_readable_error(tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image\n")
    with pytest.raises(gr.Error) as shown:
        slice_tab.upload(str(fake), "llava-next", True, 2048, "{}")
    message = _error_message(shown)
    assert "notes.png" in message and "not an image" in message
    assert str(tmp_path) not in message  # the server's temp path means nothing to the person uploading


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 8000)).save(bomb)  # 72 MP of zeros: a few kB on disk
    assert bomb.stat().st_size < 100_000
    with pytest.raises(gr.Error, match="decompression bomb"):
        slice_tab.upload(str(bomb), "llava-next", True, 2048, "{}")


def test_handlers_without_an_image_say_so():
    with pytest.raises(gr.Error, match="no image"):
        slice_tab.update_plan(None, "llava-next", True, 2048, "{}")
    with pytest.raises(gr.Error, match="no image"):
        compare_tab.compare(None, STRATEGIES, False, 2048)
    assert slice_tab.show_views(None, None) == []


def test_export_writes_html_and_png_or_says_why(ws):
    p = gridvlm.plan(ws.size, "llava-next")
    files = slice_tab.export_figure(ws, p)
    assert files[0].endswith(".html") and "plotly" in Path(files[0]).read_text()
    if len(files) == 2:  # kaleido found a browser
        assert Image.open(files[1]).format == "PNG"


# ---------------------------------------------------------------------------------------------------------------
# Compare tab


def test_compare_every_strategy(ws):
    fig, table, scatter, refused = compare_tab.compare(ws, STRATEGIES, False, 2048)
    assert [row[0] for row in table] == STRATEGIES
    assert refused == ""
    headers = list(ui.COMPARE_COLUMNS)
    for row in table:
        p = gridvlm.plan(ws.size, row[0])
        assert row[headers.index("tokens")] == p.token_count
        assert row[headers.index("views")] == p.num_views
    assert len(_tile_shapes(fig)) == sum(len(gridvlm.plan(ws.size, n).tiles) for n in STRATEGIES)
    assert sorted(scatter.data[0].text) == sorted(STRATEGIES)


def test_compare_with_a_budget_lists_who_cannot_meet_it(ws):
    chosen = ["llava-next", "internvl", "qwen2-vl", "llava-1.5"]
    fig, table, scatter, refused = compare_tab.compare(ws, chosen, True, 300)
    shown = {row[0]: row for row in table}
    tokens = list(ui.COMPARE_COLUMNS).index("tokens")
    for name in chosen:
        try:
            p = gridvlm.fit_budget(ws.size, name, 300)
        except gridvlm.PlanError as exc:
            assert name not in shown and str(exc) in refused
        else:
            assert shown[name][tokens] == p.token_count <= 300
    assert "llava-next" in refused  # its smallest canvas needs more than 300 tokens


def test_compare_needs_a_strategy(ws):
    with pytest.raises(gr.Error, match="at least one"):
        compare_tab.compare(ws, [], False, 2048)


# The Pack tab's handlers: tests/test_pack_tab.py


def test_compare_with_an_emptied_budget_box_uses_the_defaults(ws):
    _, table, _, refused = compare_tab.compare(ws, ["llava-next", "qwen2-vl"], True, None)
    assert [row[2] for row in table] == [gridvlm.plan(ws.size, n).token_count for n in ("llava-next", "qwen2-vl")]
    assert refused == ""


# ---------------------------------------------------------------------------------------------------------------
# Start-up


@pytest.mark.slow  # a fresh process that imports gradio
def test_importing_the_app_loads_no_model_code():
    code = "import sys, app; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow  # a fresh process that imports gradio
def test_the_package_builds_the_demo_without_model_code():
    code = ("import sys, gridvlm.app; gridvlm.app.build_demo(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_display_text_needs_no_gradio():
    code = "import sys, gridvlm.app.display; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def strategy_lists():
    """The choices the built demo offers: the Slice dropdown, the Compare list and the Pack tiling choice."""
    from gridvlm.app import build_demo

    demo = build_demo()
    by_id = {getattr(c, "elem_id", None): c for c in demo.blocks.values()}
    return {key: [value for _label, value in by_id[key].choices]
            for key in ("strategy", "compare-strategies", "pack-tiling")}


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_is_offered_in_every_tab(strategy_lists, name):
    for offered in strategy_lists.values():
        assert name in offered
    family = gridvlm.strategy_info(name).family
    narrowed = slice_tab.choose_family(family, gridvlm.plan((640, 480), name))
    assert name in narrowed["choices"] and narrowed["value"] == name
    assert set(narrowed["choices"]) == set(gridvlm.list_strategies(family))


@pytest.mark.parametrize("name", STRATEGIES)
def test_why_this_grid_names_the_plans_winner(name):
    plan = gridvlm.plan((1024, 768), name)
    text = slice_tab.why_this_grid(plan)
    chosen = gridvlm.explain((1024, 768), name).chosen
    assert "**Rule.**" in text and "**Decision.**" in text
    assert f"| → | **{chosen.label}** |" in text
    assert slice_tab.why_this_grid(None) == ""

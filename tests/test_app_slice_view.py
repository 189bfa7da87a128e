"""The Slice tab's words and wiring, called directly (no browser): plurals, the headline's flags, the legend, tile
colours and labels, refusals that keep the page whole, the shared link, the restart banner and the downloads."""

from __future__ import annotations

import colorsys
import io
import itertools
import re
import zipfile
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

gr = pytest.importorskip("gradio")
import gridvlm  # noqa: E402
from gridvlm import metrics, viz  # noqa: E402
from gridvlm.app import display as ui  # noqa: E402
from gridvlm.app import errors, slice_tab  # noqa: E402
from gridvlm.geometry import area  # noqa: E402
from PIL import Image  # noqa: E402

STRATEGIES = gridvlm.list_strategies()
SIZES = [(640, 480), (5120, 2880), (800, 4000)]


@pytest.fixture(autouse=True)
def gradio_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> ui.Workspace:
    path = tmp_path_factory.mktemp("slice") / "photo.png"
    image = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    image.paste((200, 40, 90), (300, 100, 340, 380))  # an edge for the seams to cut
    image.save(path)
    return ui.open_workspace(str(path))


class PAGE:  # where `open_page`'s outputs are: the controls, then about and the parameters' help, then the banner
    controls = 9
    banner = 11


class _Request:
    def __init__(self, **query):
        self.query_params = query


# ---------------------------------------------------------------------------------------------------------------
# Words


@given(st.integers(0, 10**6))
def test_counts_are_singular_for_one_only(n):
    assert ui.count(n, "tile") == (f"{n} tile" if n == 1 else f"{n} tiles")


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_headline_counts_tiles_views_and_tokens_in_plain_numbers(ws, name):
    _, headline, *_ = slice_tab.update_plan(ws, name, True, 2048, ui.params_text(name))
    p = gridvlm.plan(ws.size, name)
    for n, noun in ((len(p.tiles), "tile"), (p.num_views, "view"), (p.token_count, "token")):
        assert f"**{ui.count(n, noun)}**" in headline
    assert "1 tiles" not in headline and "1 views" not in headline


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_seam_score_only_where_the_plan_has_seams(ws, name):
    _, headline, _, rows, *_ = slice_tab.update_plan(ws, name, True, 2048, ui.params_text(name))
    has_seams = bool(metrics.seam_lines(gridvlm.plan(ws.size, name)))
    assert ("seam score" in headline) == has_seams
    assert any(k.startswith("seam score") for k, _ in rows) == has_seams


def test_a_plan_that_sees_part_of_the_image_says_so_in_the_headline(ws):
    _, _, headline, *_, p = slice_tab.set_budget(ws, "fixed-grid", 600, ui.params_text("fixed-grid"))
    coverage = metrics.plan_metrics(p)["coverage"]
    assert coverage < 0.5  # one 336-px tile of a 640×480 image
    assert f"the views see only {coverage:.0%} of the image" in headline


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_plan_that_sees_the_whole_image_has_no_coverage_flag(ws, name):
    p = gridvlm.plan(ws.size, name)
    headline = ui.headline(p, None, metrics.plan_metrics(p)["coverage"])
    assert ("see only" in headline) == (metrics.plan_metrics(p)["coverage"] < ui.FULL_COVERAGE)


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_legend_names_the_marks_this_overlay_has(name):
    p = gridvlm.plan((1024, 768), name)
    fig = viz.plan_figure(p, seams=metrics.seam_energy(Image.new("RGB", (1024, 768)), p))
    shapes = {s.name for s in fig.layout.shapes}
    legend = slice_tab.legend_for(p)
    assert legend.startswith("**Legend.**") and "coloured outlines: the tiles" in legend
    assert ("grey: padding" in legend) == ("padding" in shapes)
    assert ("dashed black frame: the global view" in legend) == ("global view" in shapes)
    assert ("seams" in legend) == ("seam" in shapes)
    token = gridvlm.strategy_info(name).row_break_token
    assert ("row-break token" in legend) == any(t.name == token for t in fig.data if token)


def test_refusals_do_not_repeat_the_strategy_name():
    refused = [ui.Refusal("llava-next", "llava-next cannot fit a 640×480 image into 10 visual tokens"),
               ui.Refusal("internvl", "needs more")]
    text = ui.refused_markdown(refused)
    assert "llava-next: llava-next" not in text and "- llava-next cannot fit" in text
    assert "- internvl: needs more" in text


def test_messages_drop_exception_classes_and_library_words():
    bad = gridvlm.ImageError("'a.jpg' is truncated or corrupt and cannot be decoded (OSError: image file is "
                             "truncated (0 bytes not processed))")
    assert errors.message_for(bad) == "'a.jpg' is truncated or corrupt and cannot be decoded"
    assert "KeyError" not in errors.message_for(KeyError("x"))


def test_a_truncated_upload_is_refused_in_plain_words(tmp_path):
    path = tmp_path / "cut.jpg"
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((600, 400)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    *_, box, upload_status, _ = slice_tab.take_upload(str(path), None, "llava-next", True, 2048, "{}")
    assert "cut.jpg" in upload_status and "Error" not in upload_status and "(" not in upload_status


# ---------------------------------------------------------------------------------------------------------------
# Colours and labels


def _hue(color: str) -> float:
    if color.startswith("#"):
        rgb = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    else:
        rgb = [float(v) / 255 for v in color[color.index("(") + 1:color.index(")")].split(",")[:3]]
    return 360 * colorsys.rgb_to_hsv(*rgb)[0]


def test_tile_colours_are_far_in_hue_from_every_seam_colour():
    from plotly.colors import sample_colorscale

    seam_hues = [_hue(c) for c in sample_colorscale(viz.SEAM_COLORSCALE, [k / 20 for k in range(21)])]
    for tile in viz.TILE_PALETTE:
        distance = min(min(abs(_hue(tile) - h), 360 - abs(_hue(tile) - h)) for h in seam_hues)
        assert distance >= 40, (tile, distance)


@pytest.mark.parametrize("name, size", list(itertools.product(STRATEGIES, SIZES)))
def test_tile_labels_fit_their_tiles_and_never_overlap(name, size):
    p = gridvlm.plan(size, name)
    fig = viz.plan_figure(p)
    labels = {a.name: a.text for a in fig.layout.annotations if (a.name or "").startswith("tile ")}
    boxes = []
    for tile in p.tiles:
        text = labels.get(f"tile {tile.row},{tile.col}", "")
        if not text:
            continue
        box = viz.label_box(tile, text, size)
        assert box[2] <= tile.box[2] and box[3] <= tile.box[3]
        boxes.append(box)
    for a, b in itertools.combinations(boxes, 2):
        overlap = (min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1]))
        assert min(overlap) <= 0 or area((0, 0, *overlap)) < 1e-6


def test_a_dense_grid_gets_short_labels_and_says_so():
    p = gridvlm.plan((5120, 2880), "fixed-grid", max_tiles=64)
    assert ui.dense_labels(p)
    assert "labels are left out where tiles are too small" in slice_tab.legend_for(p)


# ---------------------------------------------------------------------------------------------------------------
# Refusals keep the page whole


def test_a_refused_upload_keeps_the_shown_image_and_empties_the_file_box(ws, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image\n")
    *kept, box, upload_status, plan_status = slice_tab.take_upload(str(fake), ws, "llava-next", True, 2048, "{}")
    assert kept == [gr.skip()] * 8  # the workspace and every figure stay
    assert box is None  # the file box must not name a file whose plan is not shown
    assert "notes.png" in upload_status and f"Still showing the previous image, {Path(ws.path).name}" in upload_status
    assert plan_status == gr.skip()


def test_an_accepted_upload_clears_both_statuses(ws):
    *shown, box, upload_status, plan_status = slice_tab.take_upload(ws.path, None, "internvl", True, 2048, "{}")
    assert shown[-1] == gridvlm.plan(ws.size, "internvl") and box == gr.skip()
    assert upload_status == plan_status == ""


def test_a_refused_switch_shows_the_new_strategy_with_the_last_good_figures(ws):
    about, params_json, params_doc, *shown, status = slice_tab.switch_strategy(ws, "llava-next", False, 100)
    assert about == ui.strategy_about("llava-next") and params_json == ui.params_text("llava-next")
    assert "`grid_pinpoints`" in params_doc
    assert shown == [gr.skip()] * slice_tab.SLICE_OUTPUTS  # the last good figures stay
    assert status.startswith("⚠️") and "Raise the budget to" in status


def test_a_switch_plans_the_new_strategy_with_its_defaults(ws):
    about, params_json, _, *shown, status = slice_tab.switch_strategy(ws, "internvl", True, 2048,
                                                                      described=ui.strategy_about("llava-next"))
    assert shown[-1] == gridvlm.plan(ws.size, "internvl") and status == ""
    assert about == ui.strategy_about("internvl") and params_json == ui.params_text("internvl")


def test_a_switch_to_the_strategy_already_described_changes_nothing(ws):
    # gradio's dropdown sends `input` on every blur: the user's edited parameters must survive it
    assert slice_tab.switch_strategy(ws, "internvl", True, 2048,
                                     described=ui.strategy_about("internvl") + "\n") == gr.skip()


def test_a_switch_to_a_name_the_list_does_not_hold_says_so(ws):
    *kept, status = slice_tab.switch_strategy(ws, "no-such-strategy", True, 2048)
    assert kept == [gr.skip()] * (3 + slice_tab.SLICE_OUTPUTS) and "no-such-strategy" in status


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_breakdown_bar_has_one_segment_per_part_in_the_plans_order(ws, name):
    p = gridvlm.plan(ws.size, name)
    html = ui.breakdown_html(p)
    parts = [*p.tokens.items(), *((("text (wrapper)", p.text_tokens),) if p.text_tokens else ())]
    assert re.findall(r'title="([^"]+): ([\d,]+) tokens"', html) == [(k, f"{n:,}") for k, n in parts]
    assert re.findall(r"flex-grow:(\d+)", html) == [str(n) for _, n in parts]  # widths in proportion
    assert f"{name}: {p.token_count + p.text_tokens:,} tokens" in html


def test_the_gallery_is_not_resampled_for_the_plan_it_shows(ws):
    p = gridvlm.plan(ws.size, "llava-next")
    update, shown = slice_tab.show_views_once(ws, p, None)
    gallery = update["value"]
    assert update["label"].startswith(f"{p.num_views} view{'s' if p.num_views != 1 else ''} as the encoder")
    assert [Path(path).name for path, _ in gallery] == [f"view{v.index:02d}_"
                                                        f"{'global' if v.is_thumbnail else f'r{v.row}c{v.col}'}.jpg"
                                                        for v in p.views]
    assert [Image.open(path).size for path, _ in gallery] == [tuple(v.input_size) for v in p.views]
    assert slice_tab.show_views_once(ws, p, shown) == gr.skip()
    other = gridvlm.plan(ws.size, "internvl")
    assert len(slice_tab.show_views_once(ws, other, shown)[0]["value"]) == other.num_views


# ---------------------------------------------------------------------------------------------------------------
# The shared link and the page's first event


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(STRATEGIES), example=st.sampled_from([p.stem for p in ui.EXAMPLES]),
       budget=st.one_of(st.none(), st.integers(1, slice_tab.MAX_BUDGET)))
def test_a_link_carries_its_view(name, example, budget):
    view = ui.SliceView(strategy=name, example=example, max_tokens=budget)
    query = dict(parse_qsl(urlsplit(view.query()).query))
    assert ui.view_from_query(query) == view


def test_a_link_with_parameters_opens_that_plan():
    request = _Request(example="portrait_photo", strategy="internvl", budget="1000", params='{"thumbnail": false}')
    out = slice_tab.open_page(None, None, request)
    size = gridvlm.image_size(ui.example_path("portrait_photo"))
    assert out[-2] == gridvlm.fit_budget(size, "internvl", 1000, thumbnail=False)
    assert out[0]["value"] == str(ui.example_path("portrait_photo"))
    assert out[2]["value"] == "internvl" and out[3]["value"] is False and out[4]["value"] == 1000
    assert '"thumbnail": false' in out[5]["value"]


def test_the_page_enables_every_control_with_its_first_plan():
    out = slice_tab.open_page(None, None, _Request())
    controls = out[:PAGE.controls]
    assert all(c["interactive"] is True for c in controls[:-1]) and controls[-1]["visible"] is True
    assert out[-2] == gridvlm.plan(gridvlm.image_size(ui.DEFAULT_IMAGE), ui.DEFAULT_STRATEGY)
    assert out[PAGE.banner] == ""  # no banner


@pytest.mark.parametrize("query, fragment", [({"strategy": "nope"}, "'nope'"), ({"example": "cat"}, "'cat'"),
                                             ({"strategy": "internvl", "params": "{"}, "JSON"),
                                             ({"strategy": "llava-next", "budget": "5"}, "Raise the budget")])
def test_a_link_that_cannot_be_shown_says_why_and_shows_the_default(query, fragment):
    out = slice_tab.open_page(None, None, _Request(**query))
    assert fragment in out[PAGE.banner] and "Showing the default view instead" in out[PAGE.banner]
    assert out[-2] == gridvlm.plan(gridvlm.image_size(ui.DEFAULT_IMAGE), ui.DEFAULT_STRATEGY)
    assert all(c.get("interactive", c.get("visible")) is True for c in out[:PAGE.controls])


def test_the_link_of_an_upload_says_it_cannot_carry_the_image(ws):
    saved, query, note = slice_tab.remember_view(ws, "internvl", False, 900, ui.params_text("internvl"))
    assert saved["upload"] == "photo.png" and saved["server"] == slice_tab.SERVER_START
    assert "cannot carry an uploaded image" in note and "photo.png" in note
    assert dict(parse_qsl(query[1:])) == {"example": ui.DEFAULT_IMAGE.stem, "strategy": "internvl", "budget": "900"}


def test_the_link_of_an_example_names_it():
    example = ui.open_workspace(str(ui.example_path("portrait_photo")))
    _, query, note = slice_tab.remember_view(example, "qwen2-vl", True, 2048, ui.params_text("qwen2-vl"))
    assert dict(parse_qsl(query[1:])) == {"example": "portrait_photo", "strategy": "qwen2-vl"}
    assert "portrait_photo" in note


def _saved(server: str, **view) -> dict:
    return {"server": server, **{"strategy": "internvl", "example": None, "max_tokens": 900, "params": None,
                                 "upload": "cat.jpg", **view}}


def test_after_a_restart_the_page_asks_for_the_upload_again():
    view, banner = slice_tab.restored_view({}, _saved("an earlier server"))
    assert "server restarted" in banner and "cat.jpg" in banner and "Upload your image again" in banner
    assert (view.strategy, view.max_tokens, view.upload) == ("internvl", 900, "cat.jpg")
    out = slice_tab.open_page(None, _saved("an earlier server"), _Request())
    assert out[PAGE.banner] == banner and out[2]["value"] == "internvl"
    assert out[-2] == gridvlm.fit_budget(gridvlm.image_size(ui.DEFAULT_IMAGE), "internvl", 900)


def test_a_reload_on_the_same_server_says_the_upload_went_with_the_page():
    _, banner = slice_tab.restored_view({}, _saved(slice_tab.SERVER_START))
    assert "page was closed" in banner and "cat.jpg" in banner


def test_a_remembered_example_comes_back_without_a_banner():
    view, banner = slice_tab.restored_view({}, _saved("an earlier server", example="wide_panorama", upload=None))
    assert banner == "" and view.example == "wide_panorama" and view.strategy == "internvl"


@pytest.mark.parametrize("saved", [None, "junk", {"strategy": "nope"}, {"strategy": "internvl", "max_tokens": "x"}])
def test_a_browser_memory_that_is_not_a_view_opens_the_default(saved):
    view, banner = slice_tab.restored_view({}, saved)
    assert view == ui.SliceView() and banner == ""


def test_a_remembered_view_whose_plan_is_refused_opens_the_default_and_says_so():
    out = slice_tab.open_page(None, _saved("an earlier server", params={"max_tiles": -3}, upload=None), _Request())
    assert "max_tiles" in out[PAGE.banner] and "Showing the default view instead" in out[PAGE.banner]
    assert out[-2] == gridvlm.plan(gridvlm.image_size(ui.DEFAULT_IMAGE), ui.DEFAULT_STRATEGY)


def test_a_link_wins_over_the_browser_memory():
    view, banner = slice_tab.restored_view({"strategy": "qwen2-vl"}, _saved("an earlier server"))
    assert view.strategy == "qwen2-vl" and banner == ""


# ---------------------------------------------------------------------------------------------------------------
# Downloads


def test_the_html_export_carries_plotly_itself(ws):
    html = Path(slice_tab.export_figure(ws, gridvlm.plan(ws.size, "llava-next"))[0]).read_text()
    assert not re.search(r"<script[^>]*\ssrc=", html)  # no script fetched from anywhere
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js is ~4.6 MB


def test_the_views_zip_names_each_view_by_index_and_grid_position(ws):
    p = gridvlm.plan(ws.size, "llava-next")
    with zipfile.ZipFile(slice_tab.export_views(ws, p)) as zf:
        names = zf.namelist()
        sizes = [Image.open(io.BytesIO(zf.read(n))).size for n in names]
    expected = [f"view{v.index:02d}_{'global' if v.is_thumbnail else f'r{v.row}c{v.col}'}.png" for v in p.views]
    assert names == expected and names[0] == "view00_global.png" and names[1] == "view01_r0c0.png"
    assert sizes == [tuple(v.input_size) for v in p.views]


def test_the_controls_come_on_even_when_the_first_plan_fails(monkeypatch):
    def full(path=None):
        raise gridvlm.GridVLMError("the server's space for uploads is full")

    monkeypatch.setattr(slice_tab.serving, "check_disk", full)
    out = slice_tab.open_page(None, None, _Request())
    assert all(c.get("interactive", c.get("visible")) is True for c in out[:PAGE.controls])
    assert out[-1] == "⚠️ the server's space for uploads is full" and out[-2] == gr.skip()


def test_the_seam_colour_bar_runs_the_way_the_seam_lines_are_coloured(ws):
    from plotly.colors import sample_colorscale

    p = gridvlm.plan(ws.size, "internvl")
    seams = metrics.seam_energy(ws.preview, p)
    fig = viz.plan_figure(p, image=ws.preview, seams=seams)
    [bar] = [t for t in fig.data if t.name == "seam energy"]
    stops = bar.marker.colorscale  # explicit stops: plotly.js reads a named scale its own way round
    assert not isinstance(stops, str)
    lines = [s.line.color for s in fig.layout.shapes if s.name == "seam"]
    for (*_, energy), color in zip(seams.segments, lines):
        at = min(1.0, energy / bar.marker.cmax)
        assert color == sample_colorscale([list(s) for s in stops], [at])[0]
    assert sample_colorscale([list(s) for s in stops], [0])[0] == "rgb(255, 255, 204)"  # pale: cuts nothing


# ---------------------------------------------------------------------------------------------------------------
# Duplicate events


def _in_session(session: str, fn, *args):
    """`fn(*args)` as gradio runs it for a request of `session` (in a thread, with that request in the context)."""
    import contextvars
    from types import SimpleNamespace

    from gradio.context import LocalContext

    def call():
        LocalContext.request.set(SimpleNamespace(session_hash=session))
        return fn(*args)

    return contextvars.Context().run(call)


def test_an_identical_call_of_a_session_while_the_first_runs_changes_nothing():
    import threading

    from gridvlm.app import serving

    inside, release, results = threading.Event(), threading.Event(), {}

    @serving.one_at_a_time
    def slow(x):
        inside.set()
        assert release.wait(60)  # held until the duplicate has been answered
        return x * 2

    first = threading.Thread(target=lambda: results.setdefault("first", _in_session("a", slow, 21)))
    first.start()
    assert inside.wait(60)
    results["duplicate"] = _in_session("a", slow, 21)
    inside.clear()
    other = threading.Thread(target=lambda: results.setdefault("other session", _in_session("b", slow, 21)))
    other.start()
    assert inside.wait(60)  # another session's identical call runs
    release.set()
    first.join(60)
    other.join(60)
    assert results["first"] == 42 and results["other session"] == 42
    assert results["duplicate"] == gr.skip()
    assert _in_session("a", slow, 21) == 42  # once the first has ended, the same call runs again
    assert _in_session("a", slow, 22) == 44

"""The Slice tab: one image, one strategy, every tile on the image with its numbers.

Handlers are module-level functions of plain values (tests call them directly); the user's decoded image
(`display.Workspace`) and plan live in gr.State objects that `build_slice_tab` receives from the demo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import uuid
import zipfile
from typing import Any

import gradio as gr

import gridvlm
from gridvlm import metrics, pixels, viz

from gridvlm import limits

from . import display as ui
from . import serving
from .errors import for_people, keep_whole, sentence, session_id, warning

MAX_BUDGET = 16384  # slider maximum, visual tokens
SERVER_START = uuid.uuid4().hex  # this server process; a page that remembers another one outlived a restart
log = logging.getLogger("gridvlm.app")


def _export(name: str, data: bytes) -> str:
    """Write a download into gridvlm's own temp folder, named by content so the same plan is written once."""
    folder = serving.own_dir() / hashlib.sha1(data).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def slice_image(ws: ui.Workspace | None, strategy: str, use_defaults: bool, max_tokens: float,
                params_json: str, show_windows: bool = False) -> tuple:
    """What the Slice tab shows first for one plan: overlay, headline, breakdown, table, notes, JSON, the plan.

    The views follow in a second event (`show_views`), so the numbers and the overlay do not wait for resampling.
    """
    if ws is None:
        raise gridvlm.ImageError(ui.NO_IMAGE)
    params = ui.parse_params(strategy, params_json)
    budget = None if use_defaults else ui.whole(max_tokens, "max visual tokens")
    try:
        p = ui.make_plan(ws.size, strategy, params, budget)
    except gridvlm.PlanError as exc:
        advice = ui.budget_advice(ws.size, strategy, budget, params, MAX_BUDGET) if budget is not None else ""
        raise gridvlm.PlanError(f"{exc}. {advice}" if advice else str(exc)) from None
    limits.check_plan_size(p)  # one shape per view in the overlay
    seams = metrics.seam_energy(ws.preview, p)
    seam_score = seams.score if seams.segments else None  # no seams, no score
    plan_metrics = metrics.plan_metrics(p)
    return (
        viz.plan_figure(p, image=ws.preview, seams=seams, show_windows=show_windows),
        ui.headline(p, seam_score, plan_metrics["coverage"]),
        ui.breakdown_html(p),
        ui.metrics_rows(p, plan_metrics, seam_score),
        ui.notes_markdown(p),
        _export(f"{p.strategy}_plan.json", json.dumps(p.to_dict(), indent=2).encode()),
        p,
    )


@for_people
def why_this_grid(p: gridvlm.Plan | None) -> str:
    """The reference's decision for the shown plan: every candidate with the score it ranks by, and the winner."""
    if p is None:
        return ""
    return ui.explanation_markdown(gridvlm.explain(p.image_size, p.strategy, **p.params))


@for_people
def show_views(ws: ui.Workspace | None, p: gridvlm.Plan | None) -> list[tuple[Any, str]]:
    """The plan's views as the encoder sees them (fast path: a preview, within 2/255 of exact), captioned, in the
    model's sequence order."""
    if ws is None or p is None:
        return []
    return list(zip(pixels.views(ws.source, p, exact=False), ui.view_captions(p)))


@for_people
@for_people
def upload(path: str | None, strategy: str, use_defaults: bool, max_tokens: float, params_json: str,
           show_windows: bool = False) -> tuple:
    """A new image (upload or example): decoded once into the user's state, then planned."""
    if not path:  # the file was cleared: keep showing the last image until a new one arrives
        return gr.skip()
    serving.track_upload(path, session_id())
    serving.check_disk(path)
    ws = ui.open_workspace(path)
    return (ws, *slice_image(ws, strategy, use_defaults, max_tokens, params_json, show_windows))


@for_people
def update_plan(ws: ui.Workspace | None, strategy: str, use_defaults: bool, max_tokens: float,
                params_json: str, show_windows: bool = False) -> tuple:
    return slice_image(ws, strategy, use_defaults, max_tokens, params_json, show_windows)


def describe_strategy(strategy: str) -> tuple[str, str, str]:
    """A strategy's description, default parameters (JSON) and their help."""
    return ui.strategy_about(strategy), ui.params_text(strategy), ui.params_help(strategy)


SLICE_OUTPUTS = 7  # what `slice_image` returns: overlay, headline, breakdown, table, notes, JSON file, plan


@serving.one_at_a_time
def switch_strategy(ws: ui.Workspace | None, strategy: str, use_defaults: bool, max_tokens: float,
                    show_windows: bool = False, described: str | None = None) -> tuple:
    """A strategy switch, in one event (one round trip): the new strategy's description, default parameters and
    their help, then its plan with those parameters. When the plan is refused (a budget it cannot meet), the
    description and parameters still change, beside the last good figures and the reason, so the next change is
    made with the right parameters. Outputs: the three of `describe_strategy`, the Slice outputs, the status.

    `described` is the description the page shows: when it is already this strategy's, nothing changes (gradio's
    dropdown sends ``input`` on every blur too, and the user's edited parameters must stay). After the family
    narrowed the list this is the same rule: a switch only when the narrowed list changed the strategy."""
    try:
        about = describe_strategy(strategy)
    except Exception as exc:  # noqa: BLE001 - a name the list does not hold (sent past the dropdown)
        return (*[gr.skip()] * (3 + SLICE_OUTPUTS), warning(sentence(exc)))
    if described is not None and described.strip() == about[0].strip():
        return gr.skip()
    planned = keep_whole(update_plan, SLICE_OUTPUTS)(ws, strategy, use_defaults, max_tokens, about[1], show_windows)
    return (*about, *planned)


@for_people
def set_budget(ws: ui.Workspace | None, strategy: str, max_tokens: float, params_json: str,
               show_windows: bool = False) -> tuple:
    """Moving the budget slider switches from the strategy's defaults to fitting the budget."""
    return (False, *slice_image(ws, strategy, False, max_tokens, params_json, show_windows))


def choose_family(family: str, p: gridvlm.Plan | None) -> dict:
    """The strategy list narrowed to one family (or all); the shown plan's strategy stays when it is in the family.

    It reads the strategy from the plan, not from the dropdown it updates: gradio may deliver the family event
    twice, and the second would carry the old strategy, which the narrowed dropdown refuses."""
    names = ui.strategy_choices(family)
    current = p.strategy if p is not None else ui.DEFAULT_STRATEGY
    return gr.update(choices=names, value=current if current in names else names[0])


@for_people
def export_figure(ws: ui.Workspace | None, p: gridvlm.Plan | None) -> list[str]:
    """The overlay as HTML (always) and PNG (needs kaleido and Chrome/Chromium; else a warning)."""
    if ws is None or p is None:
        raise gr.Error("nothing to export yet: upload an image first", print_exception=False)
    fig = viz.plan_figure(p, image=ws.preview, seams=metrics.seam_energy(ws.preview, p))
    # plotly.js inside the file (~4.6 MB): the page opens offline, from a mail or a USB stick
    html = _export(f"{p.strategy}_overlay.html", fig.to_html(include_plotlyjs=True, div_id="gridvlm-overlay").encode())
    try:
        png = _export(f"{p.strategy}_overlay.png", fig.to_image(format="png", scale=2))
    except Exception:  # noqa: BLE001 - kaleido fails in many ways when no browser is usable
        log.info("PNG export failed", exc_info=True)
        gr.Warning("PNG export is not available on this server (it needs kaleido and Chrome or Chromium). The "
                   "HTML file is ready, and the camera icon on the figure saves it as PNG from your browser.")
        return [html]
    return [html, png]


@for_people
def export_views(ws: ui.Workspace | None, p: gridvlm.Plan | None) -> str:
    """The views as the gallery shows them (fast path, within 2/255 of exact), PNG files in one zip, named by
    sequence index and grid position: ``view00_global.png``, ``view01_r0c0.png``, …"""
    if ws is None or p is None:
        raise gridvlm.ImageError(ui.NO_IMAGE)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # PNG is compressed already
        for view, image in zip(p.views, pixels.views(ws.source, p, exact=False)):
            png = io.BytesIO()
            image.save(png, format="PNG")
            zf.writestr(view_file_name(view), png.getvalue())
    return _export(f"{p.strategy}_views.zip", buf.getvalue())


def view_file_name(view: gridvlm.Tile, suffix: str = "png") -> str:
    where = "global" if view.is_thumbnail else f"r{view.row}c{view.col}"
    return f"view{view.index:02d}_{where}.{suffix}"


def legend_for(p: gridvlm.Plan | None) -> str:
    """The overlay's legend for the shown plan."""
    return "" if p is None else ui.legend_markdown(p, bool(metrics.seam_lines(p)))


def show_views_once(ws: ui.Workspace | None, p: gridvlm.Plan | None, shown: tuple | None) -> tuple:
    """`show_views`, unless the gallery already shows this plan of this image (a refused event left both as they
    were): then nothing is resampled or sent. Returns the gallery (its label counting the views: on a narrow screen
    most are below the fold) and what it now shows."""
    key = None if ws is None or p is None else (ws.path, p)
    if shown is not None and key == shown:
        return gr.skip()
    gallery = named_views(p, show_views(ws, p))
    return (gr.update(value=gallery, label=ui.views_label(p)) if p is not None else gallery), key


def named_views(p: gridvlm.Plan | None, gallery: list[tuple[Any, str]]) -> list[tuple[str, str]]:
    """The gallery's images as JPEG files named by sequence index and grid position (``view00_global.jpg``), so
    that a view downloaded from the gallery keeps its place in the plan in its name."""
    named = []
    for view, (image, caption) in zip(p.views if p is not None else (), gallery):
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        named.append((_export(view_file_name(view, "jpg"), buf.getvalue()), caption))
    return named


def take_upload(path: str | None, shown: ui.Workspace | None, strategy: str, use_defaults: bool,
                max_tokens: float, params_json: str, show_windows: bool = False) -> tuple:
    """`upload` for the page: the new image and its plan, or — when the file or its plan is refused — everything
    left as it was, the file box emptied (it must not name a file whose plan is not shown) and the reason under it,
    saying which image is still shown. Outputs: the workspace, the Slice outputs, the file box, its status, the
    plan's status."""
    try:
        result = upload(path, strategy, use_defaults, max_tokens, params_json, show_windows)
    except Exception as exc:  # noqa: BLE001 - upload raised a readable gr.Error
        from pathlib import Path

        still = f" Still showing the previous image, {Path(shown.path).name}." if shown is not None else ""
        return (*[gr.skip()] * 8, None, warning(sentence(exc) + still), gr.skip())
    if isinstance(result, type(gr.skip())):
        return result
    return (*result, gr.skip(), "", "")


def remember_view(ws: ui.Workspace | None, strategy: str, use_defaults: bool, max_tokens: float,
                  params_json: str) -> tuple[dict, str, str]:
    """After a plan is shown: what the browser keeps (the view and this server's start id), the link's query
    and the note beside it. Without an image on this server (it restarted under the page) nothing is
    overwritten: the browser keeps the view it remembers, upload included, for the banner after a reload."""
    if ws is None:
        return gr.skip(), gr.skip(), gr.skip()
    view = ui.current_view(ws, strategy, use_defaults, max_tokens, params_json)
    return {"server": SERVER_START, **dataclasses.asdict(view)}, view.query(), ui.share_note(view)


def after_plan(ws: ui.Workspace | None, p: gridvlm.Plan | None, strategy: str, use_defaults: bool,
               max_tokens: float, params_json: str) -> tuple:
    """What follows a shown plan, in one event: "why this grid?", the legend, what the browser remembers, the
    link's query and its note. One event, not four: the browser redoes work for every component an event has
    touched each time any event starts or ends (gradio's loading status), so each extra event costs the page."""
    return (why_this_grid(p), legend_for(p), *remember_view(ws, strategy, use_defaults, max_tokens, params_json))


def restored_view(query: dict[str, str], saved: dict | None) -> tuple[ui.SliceView, str]:
    """The view a page opens with, and the banner above it ("" for none): the link's view when the URL asks for
    one; else the view this browser showed last, whose uploaded image the server no longer has (the server
    restarted, or the page closed and its upload was deleted) — the banner asks for it again."""
    try:
        linked = ui.view_from_query(query)
    except gridvlm.GridVLMError as exc:
        return ui.SliceView(), warning(f"This link's view cannot be shown: {ui_sentence(exc)} Showing the default "
                                       "view instead.")
    if linked is not None:
        return linked, ""
    view = _saved_view(saved)
    if view is None:
        return ui.SliceView(), ""
    if not view.upload:
        return view, ""
    why = ("the server restarted since this page was last open" if saved.get("server") != SERVER_START
           else "the page was closed, and its upload with it")
    return view, (f"⚠️ **Upload your image again:** {why}, so the server no longer has **{view.upload}**. "
                  f"Your strategy and settings are back; until you upload, they are shown on the example "
                  f"*{view.image.stem}*.")


def ui_sentence(exc: BaseException) -> str:
    text = sentence(exc)
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _saved_view(saved: Any) -> ui.SliceView | None:
    """The view a browser kept, when it is one this server can show (the browser's memory is the user's input)."""
    if not isinstance(saved, dict) or not saved.get("strategy"):
        return None
    upload = str(saved["upload"])[:200] if saved.get("upload") else None
    try:
        view = ui.view_from_query({"strategy": str(saved["strategy"]),
                                   "example": str(saved.get("example") or ui.DEFAULT_IMAGE.stem),
                                   "budget": str(saved.get("max_tokens") or ""),
                                   "params": json.dumps(saved["params"]) if saved.get("params") else ""})
    except (TypeError, ValueError):  # GridVLMError is a ValueError
        return None
    return dataclasses.replace(view, example=None if upload else view.example, upload=upload)


def open_page(image_path: str | None, saved: dict | None, request: gr.Request = None) -> tuple:
    """The page's first event: the view its link (or the browser's memory) asks for, planned, with every control
    set to that view and enabled only now, so nothing can be changed before the controls and the plan agree.
    When that view's plan is refused, the default view instead, and the banner says why."""
    query = dict(request.query_params) if request is not None else {}
    view, banner = restored_view(query, saved)
    try:
        shown = upload(str(view.image), view.strategy, view.max_tokens is None, view.max_tokens or 2048,
                       view.params_text())
    except Exception as exc:  # noqa: BLE001 - upload raised a readable gr.Error
        banner = warning(f"This view cannot be shown: {ui_sentence(exc)} Showing the default view instead.")
        view = ui.SliceView()
        shown = None
    status = ""
    if shown is None:
        try:
            shown = upload(str(view.image), view.strategy, True, 2048, view.params_text())
        except Exception as exc:  # noqa: BLE001 - the controls must come on whatever happens (the disk is full …)
            shown, status = [gr.skip()] * 8, warning(sentence(exc))
    on = dict(interactive=True)
    image = gr.update(value=str(view.image), **on) if view.image != ui.DEFAULT_IMAGE else gr.update(**on)
    controls = (
        image,
        gr.update(**on),  # family
        gr.update(value=view.strategy, **on),
        gr.update(value=view.max_tokens is None, **on),
        gr.update(value=view.max_tokens or 2048, **on),
        gr.update(value=view.params_text(), **on),
        gr.update(**on),  # show windows
        gr.update(**on),  # apply
        gr.update(visible=True),  # the examples
    )
    return (*controls, ui.strategy_about(view.strategy), ui.params_help(view.strategy), banner, *shown, status)


# Enter in the budget's number box applies it, and so does letting go of an arrow key on the slider: gradio's
# slider applies a budget on "release", which only a pointer (or leaving the number box) sends.
BUDGET_KEYS_JS = """() => {
  const keys = ['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'PageUp', 'PageDown', 'Home', 'End'];
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && e.target.matches && e.target.matches('#budget input[type=number]')) e.target.blur();
  }, true);
  document.addEventListener('keyup', (e) => {
    if (keys.includes(e.key) && e.target.matches && e.target.matches('#budget input[type=range]'))
      e.target.dispatchEvent(new PointerEvent('pointerup', {bubbles: true}));
  }, true);
}"""
# The link's address is the page's own (behind a proxy the server does not know it); the server adds the query.
LINK_JS = "(query) => query ? window.location.origin + window.location.pathname + query : ''"


def build_slice_tab(demo: gr.Blocks, ws: gr.State, plan_state: gr.State) -> None:
    """The Slice tab; call inside `demo` (its load event opens the linked or remembered view) with the user's
    image and plan states, which this tab fills.

    Every control starts disabled and the page's first event enables it together with the plan it shows, so
    nothing can be changed before the controls and the plan agree. A refused event changes no output: the last
    good figures stay, and the reason shows inline beside the control that caused it (`keep_whole`)."""
    # Not secret: which example, strategy and budget the page showed; the key must outlive a restart to notice it.
    remembered = gr.BrowserState(None, storage_key="gridvlm-slice-view", secret="gridvlm-slice-view")
    views_shown = gr.State(None)  # (upload path, plan) the gallery shows
    off = dict(interactive=False)
    banner = gr.Markdown(elem_id="page-banner")  # the server restarted: what the page needs from the user
    with gr.Tab("Slice", id="slice"):
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                image = serving.UploadFile(label="Image", file_types=["image"], type="filepath", value=str(ui.DEFAULT_IMAGE),
                                elem_id="image-upload", height=120, **off)
                upload_status = gr.Markdown(elem_id="upload-status")  # a refused upload, under the file box
                examples = gr.Examples([[str(p)] for p in ui.EXAMPLES], inputs=[image], label="Examples")
                examples.dataset.visible = False  # shown with the controls: a click sets the image box
                family = gr.Dropdown([ui.ALL_FAMILIES, *gridvlm.list_families()], value=ui.ALL_FAMILIES,
                                     label="Family", elem_id="family", **off)
                strategy = gr.Dropdown(ui.strategy_choices(ui.ALL_FAMILIES), value=ui.DEFAULT_STRATEGY,
                                       label="Strategy (type to filter)", elem_id="strategy", **off)
                about = gr.Markdown(ui.strategy_about(ui.DEFAULT_STRATEGY), elem_id="strategy-about")
                use_defaults = gr.Checkbox(True, label="Use the strategy's defaults (the reference checkpoint)",
                                           elem_id="use-defaults", **off)
                budget = gr.Slider(1, MAX_BUDGET, value=2048, step=1, label="Max visual tokens",
                                   info="Moving it (or Enter in its box) fits the plan into this budget (fit_budget)",
                                   elem_id="budget", **off)
                status = gr.Markdown(elem_id="slice-status")  # a refused plan, kept until the next plan is shown
                show_windows = gr.Checkbox(False, label="Show the encoder's attention windows (Qwen2.5-VL)",
                                           elem_id="show-windows", **off)
                with gr.Accordion("Advanced: the strategy's parameters", open=False):
                    params = gr.Code(ui.params_text(ui.DEFAULT_STRATEGY), language="json", lines=8,
                                     label="Parameters (JSON)", elem_id="params", **off)
                    apply = gr.Button("Apply parameters", size="sm", **off)
                    params_doc = gr.Markdown(ui.params_help(ui.DEFAULT_STRATEGY))
                link_query = gr.Textbox(visible=False)
                link = gr.Textbox(label="Link to this view", interactive=False, buttons=["copy"],
                                  elem_id="share-link")
                link_note = gr.Markdown(elem_id="share-note")
            with gr.Column(scale=2):
                summary = gr.Markdown(elem_id="slice-summary")
                overlay = gr.Plot(label="Tiles on the image", elem_id="overlay")
                legend = gr.Markdown(elem_id="overlay-legend")
                views = gr.Gallery(label="Views as the encoder sees them", columns=7, height=300,
                                   object_fit="contain", format="jpeg", elem_id="views")
                with gr.Row():
                    breakdown = gr.HTML(label="Token breakdown", elem_id="breakdown", js_on_load=None)
                    metrics_df = gr.Dataframe(headers=["quantity", "value"], datatype=["str", "str"],
                                              label="Tokens and metrics", interactive=False, wrap=True,
                                              column_widths=["70%", "30%"], elem_id="metrics")
                notes = gr.Markdown(elem_id="notes")
                with gr.Accordion("Why this grid? The candidates the reference weighed", open=False,
                                  elem_id="why-accordion"):
                    why = gr.Markdown(elem_id="why")
                with gr.Row(equal_height=True):
                    plan_json = gr.DownloadButton("Download the plan (JSON)", size="sm", elem_id="download-json")
                    make_files = gr.Button("Export the figure (HTML + PNG)", size="sm", elem_id="export")
                    make_zip = gr.Button("Download the views (zip)", size="sm", elem_id="export-views")
                file_status = gr.Markdown(elem_id="export-status")
                figure_files = gr.File(label="Files", file_count="multiple", height=90, elem_id="figure-files")

    slice_out = [overlay, summary, breakdown, metrics_df, notes, plan_json, plan_state]  # SLICE_OUTPUTS
    knobs = [strategy, use_defaults, budget, params, show_windows]
    # progress on the overlay only: a timer over each of the 7 outputs was redrawn ~10 times a second per output,
    # work the browser then did while it should have been drawing the figures
    cpu = dict(**serving.CPU, show_progress_on=overlay)
    planned = keep_whole(update_plan, SLICE_OUTPUTS)
    to_budget = keep_whole(set_budget, SLICE_OUTPUTS + 1)
    replan = dict(fn=planned, inputs=[ws, *knobs], outputs=[*slice_out, status], **cpu)
    switch = dict(fn=switch_strategy, inputs=[ws, strategy, use_defaults, budget, show_windows, about],
                  outputs=[about, params, params_doc, *slice_out, status], **cpu)
    opened = demo.load(open_page, [image, remembered],
                       [image, family, strategy, use_defaults, budget, params, show_windows, apply,
                        examples.dataset, about,
                        params_doc, banner, ws, *slice_out, status], **serving.CPU)
    demo.load(None, js=BUDGET_KEYS_JS)
    for event in (
        opened,
        image.change(take_upload, [image, ws, *knobs], [ws, *slice_out, image, upload_status, status], **cpu),
        # .input, not .change: the page's first event sets the strategy (and its parameters) itself
        strategy.input(**switch),
        family.input(choose_family, [family, plan_state], strategy).then(**switch),
        use_defaults.input(**replan),
        budget.release(to_budget, [ws, strategy, budget, params, show_windows], [use_defaults, *slice_out, status],
                       **cpu),
        apply.click(**replan),
        show_windows.input(**replan),
    ):
        event.success(keep_whole(show_views_once, 2), [ws, plan_state, views_shown], [views, views_shown, status],
                      **serving.CPU)
        event.success(after_plan, [ws, plan_state, *knobs[:4]], [why, legend, remembered, link_query, link_note],
                      queue=False, show_progress="hidden").then(None, link_query, link, js=LINK_JS)
    make_files.click(keep_whole(export_figure, 1), [ws, plan_state], [figure_files, file_status], **serving.CPU)
    make_zip.click(keep_whole(export_views, 1), [ws, plan_state], [figure_files, file_status], **serving.CPU)

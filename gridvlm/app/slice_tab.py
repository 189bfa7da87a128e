"""The Slice tab: one image, one strategy, every tile on the image with its numbers.

Handlers are module-level functions of plain values (tests call them directly); the user's decoded image
(`display.Workspace`) and plan live in gr.State objects that `build_slice_tab` receives from the demo.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import gradio as gr

import gridvlm
from gridvlm import metrics, pixels, viz

from gridvlm import limits

from . import display as ui
from . import serving
from .errors import for_people, session_id, with_status

MAX_BUDGET = 16384  # slider maximum, visual tokens


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
    p = ui.make_plan(ws.size, strategy, params, None if use_defaults else ui.whole(max_tokens, "max visual tokens"))
    limits.check_plan_size(p)  # one shape per view in the overlay
    seams = metrics.seam_energy(ws.preview, p)
    return (
        viz.plan_figure(p, image=ws.preview, seams=seams, show_windows=show_windows),
        ui.headline(p, seams.score),
        viz.token_breakdown_figure(p),
        ui.metrics_rows(p, metrics.plan_metrics(p), seams.score),
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
def show_counted_views(ws: ui.Workspace | None, p: gridvlm.Plan | None) -> Any:
    """`show_views` in the gallery, whose label says how many views there are."""
    views = show_views(ws, p)
    return gr.update(value=views, label=ui.views_label(p)) if p is not None else views


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
    """A new strategy's description, default parameters (JSON) and their help.

    A strategy switch shows these first, in an event of their own, then plans (`update_plan`): when the plan is
    refused (a budget it cannot meet), the new strategy's description and parameters still show, beside the last
    good figures and the message, so the next change is made with the right parameters."""
    return ui.strategy_about(strategy), ui.params_text(strategy), ui.params_help(strategy)


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
    html = _export(f"{p.strategy}_overlay.html", fig.to_html(include_plotlyjs="cdn", div_id="gridvlm-overlay").encode())
    try:
        png = _export(f"{p.strategy}_overlay.png", fig.to_image(format="png", scale=2))
    except Exception as exc:  # noqa: BLE001 - kaleido fails in many ways when no browser is usable
        gr.Warning(f"PNG export is not available here ({type(exc).__name__}: {exc}). The HTML file is ready, and "
                   "the camera icon on the figure saves it as PNG from your browser.")
        return [html]
    return [html, png]


def build_slice_tab(demo: gr.Blocks, ws: gr.State, plan_state: gr.State) -> None:
    """The Slice tab; call inside `demo` (its load event plans the default image) with the user's image and plan
    states, which this tab fills."""
    with gr.Tab("Slice", id="slice"):
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                image = serving.UploadFile(label="Image", file_types=["image"], type="filepath", value=str(ui.DEFAULT_IMAGE),
                                elem_id="image-upload", height=120)
                gr.Examples([[str(p)] for p in ui.EXAMPLES], inputs=[image], label="Examples")
                family = gr.Dropdown([ui.ALL_FAMILIES, *gridvlm.list_families()], value=ui.ALL_FAMILIES,
                                     label="Family", elem_id="family")
                strategy = gr.Dropdown(ui.strategy_choices(ui.ALL_FAMILIES), value=ui.DEFAULT_STRATEGY,
                                       label="Strategy (type to filter)", elem_id="strategy")
                about = gr.Markdown(ui.strategy_about(ui.DEFAULT_STRATEGY), elem_id="strategy-about")
                use_defaults = gr.Checkbox(True, label="Use the strategy's defaults (the reference checkpoint)",
                                           elem_id="use-defaults")
                budget = gr.Slider(1, MAX_BUDGET, value=2048, step=1, label="Max visual tokens",
                                   info="Moving it fits the plan into this budget (fit_budget)",
                                   elem_id="budget")
                show_windows = gr.Checkbox(False, label="Show the encoder's attention windows (Qwen2.5-VL)",
                                           elem_id="show-windows")
                with gr.Accordion("Advanced: the strategy's parameters", open=False):
                    params = gr.Code(ui.params_text(ui.DEFAULT_STRATEGY), language="json", lines=8,
                                     label="Parameters (JSON)", elem_id="params")
                    apply = gr.Button("Apply parameters", size="sm")
                    params_doc = gr.Markdown(ui.params_help(ui.DEFAULT_STRATEGY))
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="slice-status")  # what went wrong, kept after the toast is gone
                summary = gr.Markdown(elem_id="slice-summary")
                overlay = gr.Plot(label="Tiles on the image", elem_id="overlay")
                views = gr.Gallery(label="Views as the encoder sees them", columns=7, height=300,
                                   object_fit="contain", format="jpeg", elem_id="views")
                with gr.Row():
                    breakdown = gr.Plot(label="Token breakdown", elem_id="breakdown")
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
                figure_files = gr.File(label="Figure files", file_count="multiple", height=90,
                                       elem_id="figure-files")

    slice_out = [overlay, summary, breakdown, metrics_df, notes, plan_json, plan_state]
    knobs = [strategy, use_defaults, budget, params, show_windows]
    # progress on the overlay only: a timer over each of the 7 outputs was redrawn ~10 times a second per output,
    # work the browser then did while it should have been drawing the figures
    cpu = dict(**serving.CPU, show_progress_on=overlay)
    family.input(choose_family, [family, plan_state], strategy)
    for event in (
        image.change(upload, [image, *knobs], [ws, *slice_out], **cpu),
        demo.load(upload, [image, *knobs], [ws, *slice_out], **cpu),
        strategy.change(describe_strategy, strategy, [about, params, params_doc], queue=False,
                        show_progress="hidden").then(update_plan, [ws, *knobs], slice_out, **cpu),
        use_defaults.input(update_plan, [ws, *knobs], slice_out, **cpu),
        budget.release(set_budget, [ws, strategy, budget, params, show_windows], [use_defaults, *slice_out],
                       **cpu),
        apply.click(update_plan, [ws, *knobs], slice_out, **cpu),
        show_windows.input(update_plan, [ws, *knobs], slice_out, **cpu),
    ):
        with_status(event, status)
        with_status(event.success(show_counted_views, [ws, plan_state], views, **serving.CPU), status)
        event.success(why_this_grid, plan_state, why, queue=False, show_progress="hidden")
    with_status(make_files.click(export_figure, [ws, plan_state], figure_files, **serving.CPU), status)

"""gridvlm's app: how vision-language models slice an image, tile by tile and token by token.

Layout and event wiring only: every number comes from `gridvlm`, every figure from `gridvlm.viz`, every table row
from `gridvlm.ui`. Handlers are module-level functions (tests call them directly); per-user data lives in gr.State.
Tabs: Slice, Compare, Pack (here) and Chat (`app_chat`: a model answers about the Slice tab's image, cut natively
or as the Slice plan, with `app_attention`'s panel of where it looked). Model code (torch, transformers) is
imported only when the Chat tab first uses a model.

    python app.py        # serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (default 127.0.0.1:7860)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

import gridvlm
from gridvlm import metrics, pixels, viz
from gridvlm.app import chat_tab as app_chat
from gridvlm.app import display as ui
from gridvlm.app.errors import for_people

ASSETS = Path(__file__).resolve().parent / "gridvlm" / "app" / "assets"
EXAMPLES = sorted(p for p in ASSETS.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
DEFAULT_IMAGE = ASSETS / "landscape_photo.jpg"
DEFAULT_STRATEGY = "llava-next"
MAX_FILE_SIZE = "25mb"  # per upload; larger files are refused by gradio before any handler runs
CONCURRENCY = 4  # events of one kind running at once, so one slow user does not block the others
QUEUE_SIZE = 64  # events waiting beyond that are refused with "queue full" rather than piling up
STATE_TTL_S = 1800  # s; a user's decoded image (~36 MB at 12 MP) is dropped this long after it was set
MAX_BUDGET = 16384  # slider maximum, visual tokens




def _whole(value: float | None) -> int:
    """A number box's value as an int; an emptied box gives 0, which gridvlm refuses with a readable message."""
    return int(value or 0)


def _export(name: str, data: bytes) -> str:
    """Write a download under gradio's temp dir, named by content so the same plan is written once."""
    root = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio") / "gridvlm"
    folder = root / hashlib.sha1(data).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        path.write_bytes(data)
    return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Slice tab


def slice_image(ws: ui.Workspace | None, strategy: str, use_defaults: bool, max_tokens: float,
                params_json: str) -> tuple:
    """What the Slice tab shows first for one plan: overlay, headline, breakdown, table, notes, JSON, the plan.

    The views follow in a second event (`show_views`), so the numbers and the overlay do not wait for resampling.
    """
    if ws is None:
        raise gridvlm.ImageError("no image yet: upload one or pick an example")
    params = ui.parse_params(strategy, params_json)
    p = ui.make_plan(ws.size, strategy, params, None if use_defaults else int(max_tokens))
    seams = metrics.seam_energy(ws.preview, p)
    return (
        viz.plan_figure(p, image=ws.preview, seams=seams),
        ui.headline(p, seams.score),
        viz.token_breakdown_figure(p),
        ui.metrics_rows(p, metrics.plan_metrics(p), seams.score),
        ui.notes_markdown(p),
        _export(f"{p.strategy}_plan.json", json.dumps(p.to_dict(), indent=2).encode()),
        p,
    )


@for_people
def show_views(ws: ui.Workspace | None, p: gridvlm.Plan | None) -> list[tuple[Any, str]]:
    """The plan's views as the encoder sees them (fast path: a preview, within 2/255 of exact), captioned, in the
    model's sequence order."""
    if ws is None or p is None:
        return []
    return list(zip(pixels.views(ws.image, p, exact=False), ui.view_captions(p)))


@for_people
def upload(path: str | None, strategy: str, use_defaults: bool, max_tokens: float, params_json: str) -> tuple:
    """A new image (upload or example): decoded once into the user's state, then planned."""
    if not path:  # the file was cleared: keep showing the last image until a new one arrives
        return gr.skip()
    ws = ui.open_workspace(path)
    return (ws, *slice_image(ws, strategy, use_defaults, max_tokens, params_json))


@for_people
def update_plan(ws: ui.Workspace | None, strategy: str, use_defaults: bool, max_tokens: float,
                params_json: str) -> tuple:
    return slice_image(ws, strategy, use_defaults, max_tokens, params_json)


@for_people
def choose_strategy(ws: ui.Workspace | None, strategy: str, use_defaults: bool, max_tokens: float) -> tuple:
    """A new strategy: its description, its default parameters and its plan."""
    defaults = ui.params_text(strategy)
    return (ui.strategy_about(strategy), defaults, ui.params_help(strategy),
            *slice_image(ws, strategy, use_defaults, max_tokens, defaults))


@for_people
def set_budget(ws: ui.Workspace | None, strategy: str, max_tokens: float, params_json: str) -> tuple:
    """Moving the budget slider switches from the strategy's defaults to fitting the budget."""
    return (False, *slice_image(ws, strategy, False, max_tokens, params_json))


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


# ---------------------------------------------------------------------------------------------------------------
# Compare tab


@for_people
def compare(ws: ui.Workspace | None, strategies: list[str], use_budget: bool, max_tokens: float) -> tuple:
    """The chosen strategies on the same image, optionally at one token budget."""
    if ws is None:
        raise gridvlm.ImageError("no image yet: upload one or pick an example on the Slice tab")
    if not strategies:
        raise gridvlm.PlanError("pick at least one strategy to compare")
    result = ui.compare(ws, strategies, _whole(max_tokens) if use_budget else None)
    return (viz.compare_figure(result.plans, image=ws.preview), result.table(), viz.tokens_scatter(result.rows),
            ui.refused_markdown(result.refused))


# ---------------------------------------------------------------------------------------------------------------
# Pack tab


@for_people
def pack_images(paths: list[str] | None, max_seq_len: float, patch_size: float, per_image: float, order: str,
                tiling: str) -> tuple:
    """NaViT packing of the images (the examples when none are uploaded) next to a padded tiling batch."""
    result = ui.pack_vs_tile(paths or [str(p) for p in EXAMPLES], _whole(max_seq_len), _whole(patch_size),
                             _whole(per_image), order, tiling)
    packing = result.packing
    return (packing, viz.packing_figure(packing, [p.token_count for p in result.tiling]),
            gr.update(choices=ui.sequence_choices(packing), value=0), viz.mask_figure(packing, 0), result.table(),
            viz.packing_vs_tiling_figure(result.stats), result.summary())


@for_people
def show_mask(packing: Any, seq: int | None) -> Any:
    """The attention mask of one packed sequence."""
    if packing is None or seq is None:
        return None
    return viz.mask_figure(packing, int(seq))


# ---------------------------------------------------------------------------------------------------------------
# Layout


def build_demo() -> gr.Blocks:
    names = gridvlm.list_strategies()
    with gr.Blocks(title="gridvlm — how VLMs slice images", delete_cache=(3600, 7200)) as demo:
        ws = gr.State(None, time_to_live=STATE_TTL_S)
        plan_state = gr.State(None, time_to_live=STATE_TTL_S)
        packing_state = gr.State(None, time_to_live=STATE_TTL_S)
        gr.Markdown("# gridvlm\nHow vision-language models cut an image into tiles and visual tokens — computed "
                    "exactly as each model's reference code does.")

        with gr.Tab("Slice", id="slice"):
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    image = gr.File(label="Image", file_types=["image"], type="filepath", value=str(DEFAULT_IMAGE),
                                    elem_id="image-upload", height=120)
                    gr.Examples([[str(p)] for p in EXAMPLES], inputs=[image], label="Examples")
                    strategy = gr.Dropdown(names, value=DEFAULT_STRATEGY, label="Strategy", elem_id="strategy")
                    about = gr.Markdown(ui.strategy_about(DEFAULT_STRATEGY), elem_id="strategy-about")
                    use_defaults = gr.Checkbox(True, label="Use the strategy's defaults (the reference checkpoint)",
                                               elem_id="use-defaults")
                    budget = gr.Slider(1, MAX_BUDGET, value=2048, step=1, label="Max visual tokens",
                                       info="Moving it fits the plan into this budget (fit_budget)",
                                       elem_id="budget")
                    with gr.Accordion("Advanced: the strategy's parameters", open=False):
                        params = gr.Code(ui.params_text(DEFAULT_STRATEGY), language="json", lines=8,
                                         label="Parameters (JSON)", elem_id="params")
                        apply = gr.Button("Apply parameters", size="sm")
                        params_doc = gr.Markdown(ui.params_help(DEFAULT_STRATEGY))
                with gr.Column(scale=2):
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
                    with gr.Row(equal_height=True):
                        plan_json = gr.DownloadButton("Download the plan (JSON)", size="sm", elem_id="download-json")
                        make_files = gr.Button("Export the figure (HTML + PNG)", size="sm", elem_id="export")
                    figure_files = gr.File(label="Figure files", file_count="multiple", height=90,
                                           elem_id="figure-files")

        slice_out = [overlay, summary, breakdown, metrics_df, notes, plan_json, plan_state]
        knobs = [strategy, use_defaults, budget, params]
        for event in (
            image.change(upload, [image, *knobs], [ws, *slice_out]),
            demo.load(upload, [image, *knobs], [ws, *slice_out]),
            strategy.change(choose_strategy, [ws, strategy, use_defaults, budget],
                            [about, params, params_doc, *slice_out]),
            use_defaults.input(update_plan, [ws, *knobs], slice_out),
            budget.release(set_budget, [ws, strategy, budget, params], [use_defaults, *slice_out]),
            apply.click(update_plan, [ws, *knobs], slice_out),
        ):
            event.success(show_views, [ws, plan_state], views)
        make_files.click(export_figure, [ws, plan_state], figure_files)

        with gr.Tab("Compare", id="compare") as compare_tab:
            with gr.Row():
                chosen = gr.CheckboxGroup(names, value=names, label="Strategies", elem_id="compare-strategies")
                with gr.Column(min_width=240):
                    use_budget = gr.Checkbox(False, label="Equal token budget for all", elem_id="compare-use-budget")
                    compare_budget = gr.Number(2048, minimum=1, maximum=10**6, precision=0, label="Max visual tokens")
                    run_compare = gr.Button("Compare", variant="primary", elem_id="compare-run")
            refused = gr.Markdown(elem_id="compare-refused")
            compare_plot = gr.Plot(label="Small multiples", elem_id="compare-figure")
            compare_df = gr.Dataframe(headers=list(ui.COMPARE_COLUMNS), datatype=["str"] + ["number"] * 8,
                                      interactive=False, label="Strategies (click a header to sort)",
                                      elem_id="compare-table")
            scatter = gr.Plot(label="Tokens vs pixels per token", elem_id="compare-scatter")
        compare_in = [ws, chosen, use_budget, compare_budget]
        compare_out = [compare_plot, compare_df, scatter, refused]
        compare_tab.select(compare, compare_in, compare_out)
        run_compare.click(compare, compare_in, compare_out)

        with gr.Tab("Pack", id="pack") as pack_tab:
            gr.Markdown("NaViT packs whole images into shared sequences (a block-diagonal mask keeps them apart); "
                        "tiling models give each image its own row, padded to the longest. No upload: the examples.")
            with gr.Row():
                pack_files = gr.File(label="Images", file_count="multiple", file_types=["image"], type="filepath",
                                     elem_id="pack-upload", height=120)
                with gr.Column():
                    max_seq_len = gr.Number(4096, minimum=1, precision=0, label="max_seq_len (tokens)")
                    patch_size = gr.Number(16, minimum=1, maximum=256, precision=0, label="Patch size (px)")
                    per_image = gr.Number(1024, minimum=1, precision=0, label="NaViT: max tokens per image",
                                          info="Larger images are shrunk (aspect kept) to this many patches")
                with gr.Column():
                    order = gr.Radio(["given", "first-fit-decreasing"], value="given", label="Packing order")
                    tiling = gr.Dropdown(names, value=DEFAULT_STRATEGY, label="Tiling strategy to compare")
                    run_pack = gr.Button("Pack", variant="primary", elem_id="pack-run")
            pack_summary = gr.Markdown(elem_id="pack-summary")
            pack_plot = gr.Plot(label="Packed sequences", elem_id="pack-figure")
            with gr.Row():
                seq = gr.Dropdown([], label="Attention mask of sequence", type="value", elem_id="pack-seq")
            mask_plot = gr.Plot(label="Attention mask", elem_id="mask-figure")
            pack_df = gr.Dataframe(headers=ui.BATCH_HEADERS, datatype=["str"] + ["number"] * 7, interactive=False,
                                   label="Packing vs tiling", elem_id="pack-table")
            versus = gr.Plot(label="Packing vs tiling", elem_id="pack-versus")
        pack_in = [pack_files, max_seq_len, patch_size, per_image, order, tiling]
        pack_out = [packing_state, pack_plot, seq, mask_plot, pack_df, versus, pack_summary]
        pack_tab.select(pack_images, pack_in, pack_out)
        run_pack.click(pack_images, pack_in, pack_out)
        seq.input(show_mask, [packing_state, seq], mask_plot)

        app_chat.build_chat_tab(ws, plan_state)  # @spaces.GPU (ZeroGPU) wraps only its generation
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)


demo = build_demo()

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        share=False,
        max_file_size=MAX_FILE_SIZE,
    )

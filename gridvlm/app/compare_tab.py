"""The Compare tab: the chosen strategies on the Slice tab's image, side by side, optionally at one budget."""

from __future__ import annotations

import gradio as gr

import gridvlm
from gridvlm import viz

from . import display as ui
from . import serving
from .errors import for_people, with_status


@for_people
def compare(ws: ui.Workspace | None, strategies: list[str], use_budget: bool, max_tokens: float) -> tuple:
    """The chosen strategies on the same image, optionally at one token budget."""
    if ws is None:
        raise gridvlm.ImageError(ui.NO_IMAGE.replace("upload it again", "upload it again on the Slice tab"))
    if not isinstance(strategies, (list, tuple)):
        raise gridvlm.PlanError("pick the strategies to compare from the list")
    if not strategies:
        raise gridvlm.PlanError("pick at least one strategy to compare")
    result = ui.compare(ws, strategies, ui.whole(max_tokens, "max visual tokens") if use_budget else None)
    return (viz.compare_figure(result.plans, image=ws.preview), result.table(), viz.tokens_scatter(result.rows),
            ui.refused_markdown(result.refused))


def build_compare_tab(ws: gr.State) -> None:
    """The Compare tab; call inside the demo's Blocks with the user's image state (filled by the Slice tab)."""
    names = ui.strategy_choices()
    with gr.Tab("Compare", id="compare") as tab:
        with gr.Row():
            chosen = gr.CheckboxGroup(names, value=names, label="Strategies", elem_id="compare-strategies")
            with gr.Column(min_width=240):
                use_budget = gr.Checkbox(False, label="Equal token budget for all", elem_id="compare-use-budget")
                budget = gr.Number(2048, minimum=1, maximum=10**6, precision=0, label="Max visual tokens")
                run = gr.Button("Compare", variant="primary", elem_id="compare-run")
        status = gr.Markdown(elem_id="compare-status")  # what went wrong, kept after the toast is gone
        refused = gr.Markdown(elem_id="compare-refused")
        figure = gr.Plot(label="Small multiples", elem_id="compare-figure")
        table = gr.Dataframe(headers=list(ui.COMPARE_COLUMNS), datatype=["str"] + ["number"] * 8,
                             interactive=False, label="Strategies, in the registry's order",
                             elem_id="compare-table")
        scatter = gr.Plot(label="Tokens vs pixels per token", elem_id="compare-scatter")
    inputs = [ws, chosen, use_budget, budget]
    outputs = [figure, table, scatter, refused]
    for event in (tab.select(compare, inputs, outputs, **serving.CPU), run.click(compare, inputs, outputs, **serving.CPU)):
        with_status(event, status)

"""The Pack tab: the same images packed NaViT-style, padded to the longest, and tiled, at the same tokens per image."""

from __future__ import annotations

from typing import Any

import gradio as gr

from gridvlm import limits, viz
from gridvlm.packing import ORDERS, compare_layouts

from . import display as ui
from . import serving
from .errors import for_people, session_id, with_status


@serving.one_at_a_time  # picking an image set sends the dropdown's input twice
@for_people
def pack_images(paths: list[str] | None, max_seq_len: float, patch_size: float, per_image: float | None, order: str,
                tiling: str, drop_rate: float = 0.0, image_set: str = ui.EXAMPLE_SET) -> tuple:
    """Pack, pad and tile the uploads (else `image_set`) at the same tokens per image; `per_image` 0 or empty
    leaves the tiling strategy at its defaults. The request is checked against the server's limits before any
    file is read, and the sequence count before any figure is drawn."""
    seq_len = ui.whole(max_seq_len, "max_seq_len")
    limits.check_packing(seq_len, ui.pack_image_count(paths, image_set))
    for path in paths or []:
        serving.track_upload(path, session_id())
    names, sizes = ui.pack_images_of(paths, image_set)
    cap = ui.whole(per_image, "max tokens per image") if per_image else None
    comparison = compare_layouts(sizes, tiling, seq_len, patch_size=ui.whole(patch_size, "patch size"),
                                 max_tokens_per_image=cap, order=order, drop_rate=float(drop_rate or 0.0),
                                 names=names)
    limits.check_sequences(len(comparison.packing.sequences))
    view = ui.PackView(names, comparison)
    steps = len(sizes)
    return (view, view.table(), view.explanation(), viz.packing_figure(view.packing, names=names),
            gr.update(maximum=max(steps, 1), value=steps), view.step_caption(steps),
            gr.update(choices=ui.sequence_choices(view.packing), value=0),
            viz.mask_figure(view.packing, 0, names=names), viz.packing_vs_tiling_figure(comparison.layouts()),
            view.images_markdown())


@for_people
def show_step(view: ui.PackView | None, step: float | None) -> tuple:
    """The sequences after the packer's first `step` placements, and what the last one did."""
    if view is None:
        return gr.update(), ""
    k = ui.whole(step, "step")
    return viz.packing_figure(view.packing, names=view.names, upto=k), view.step_caption(k)


@serving.one_at_a_time  # the sequence dropdown sends input twice per choice
@for_people
def show_mask(view: ui.PackView | None, seq: int | None) -> Any:
    """The attention mask of one packed sequence."""
    if view is None or seq is None:
        return None
    return viz.mask_figure(view.packing, ui.whole(seq, "sequence"), names=view.names)


def image_set_settings(image_set: str) -> tuple:
    """The tiling strategy and max_seq_len an image set was chosen for."""
    chosen = ui.IMAGE_SETS.get(image_set)
    if chosen is None:
        return gr.update(), gr.update()
    return chosen.tiling, chosen.max_seq_len


def build_pack_tab(state_ttl_s: float) -> None:
    """The Pack tab; call inside the demo's Blocks. The user's packing is kept `state_ttl_s` seconds."""
    view_state = gr.State(None, time_to_live=state_ttl_s)
    default_set = ui.IMAGE_SETS[ui.EXAMPLE_SET]
    with gr.Tab("Pack", id="pack") as tab:
        gr.Markdown("The same images three ways, at the same tokens per image: **packed** (NaViT: whole images "
                    "share sequences of max_seq_len tokens, a block-diagonal mask keeps them apart), **padded** "
                    "(one row per image, every row as long as the longest) and **tiled** (the tiling strategy's own "
                    "plan, padded the same way). Upload images, or pick an image set.")
        with gr.Row():
            files = serving.UploadFile(label="Images", file_count="multiple", file_types=["image"], type="filepath",
                                       elem_id="pack-upload", height=120)
            with gr.Column():
                image_set = gr.Dropdown(list(ui.IMAGE_SETS), value=ui.EXAMPLE_SET, label="Image set (no upload)",
                                        elem_id="pack-set", info="Sets its strategy and max_seq_len too")
                tiling = gr.Dropdown(ui.strategy_choices(), value=default_set.tiling, elem_id="pack-tiling",
                                     label="Tiling strategy to compare")
                max_seq_len = gr.Number(default_set.max_seq_len, minimum=1, maximum=limits.active().max_seq_len,
                                        precision=0, label="max_seq_len (tokens per packed sequence)",
                                        elem_id="pack-seq-len")
            with gr.Column():
                per_image = gr.Number(0, minimum=0, precision=0, label="Max tokens per image (0: the strategy's "
                                      "defaults)", info="Fits the tiling plans to it; NaViT follows each plan")
                patch_size = gr.Number(16, minimum=1, maximum=256, precision=0, label="NaViT patch size (px)")
                order = gr.Radio(list(ORDERS), value="given", label="Packing order", elem_id="pack-order")
                drop_rate = gr.Slider(0, 0.9, value=0, step=0.05, label="NaViT token dropping (fraction dropped)")
                run = gr.Button("Pack", variant="primary", elem_id="pack-run")
        status = gr.Markdown(elem_id="pack-status")  # what went wrong, kept after the toast is gone
        table = gr.Dataframe(headers=ui.BATCH_HEADERS, datatype=["str"] + ["number"] * 7, interactive=False,
                             label="Packed vs padded vs tiled", elem_id="pack-table")
        explanation = gr.Markdown(elem_id="pack-explain")
        figure = gr.Plot(label="Packed sequences", elem_id="pack-figure")
        step = gr.Slider(0, 1, value=1, step=1, label="Packer step: the first k images placed", elem_id="pack-step")
        step_caption = gr.Markdown(elem_id="pack-step-caption")
        seq = gr.Dropdown([], label="Attention mask of sequence", type="value", elem_id="pack-seq")
        mask = gr.Plot(label="Attention mask", elem_id="mask-figure")
        versus = gr.Plot(label="Packed vs padded vs tiled", elem_id="pack-versus")
        images = gr.Markdown(elem_id="pack-images")
    inputs = [files, max_seq_len, patch_size, per_image, order, tiling, drop_rate, image_set]
    outputs = [view_state, table, explanation, figure, step, step_caption, seq, mask, versus, images]
    chosen = image_set.input(image_set_settings, image_set, [tiling, max_seq_len], queue=False,
                             show_progress="hidden")
    for event in (tab.select(pack_images, inputs, outputs, **serving.CPU),
                  run.click(pack_images, inputs, outputs, **serving.CPU),
                  chosen.then(pack_images, inputs, outputs, **serving.CPU),
                  step.input(show_step, [view_state, step], [figure, step_caption], trigger_mode="always_last",
                             **serving.CPU),
                  seq.input(show_mask, [view_state, seq], mask, **serving.CPU)):
        with_status(event, status)

"""The Pack tab: NaViT patch-n'-pack of a batch of images next to a padded batch of one tiling strategy."""

from __future__ import annotations

from typing import Any

import gradio as gr

from gridvlm import viz

from . import display as ui
from gridvlm import limits

from . import serving
from .errors import for_people, session_id, with_status


@for_people
def pack_images(paths: list[str] | None, max_seq_len: float, patch_size: float, per_image: float, order: str,
                tiling: str) -> tuple:
    """NaViT packing of the images (the examples when none are uploaded) next to a padded tiling batch. The
    request is checked against the server's limits before any file is read."""
    paths = paths or [str(p) for p in ui.EXAMPLES]
    seq_len = ui.whole(max_seq_len, "max_seq_len")
    limits.check_packing(seq_len, len(paths))
    for path in paths:
        serving.track_upload(path, session_id())
    result = ui.pack_vs_tile(paths, seq_len, ui.whole(patch_size, "patch size"),
                             ui.whole(per_image, "max tokens per image"), order, tiling)
    packing = result.packing
    limits.check_sequences(len(packing.sequences))
    return (packing, viz.packing_figure(packing, [p.token_count for p in result.tiling]),
            gr.update(choices=ui.sequence_choices(packing), value=0), viz.mask_figure(packing, 0), result.table(),
            viz.packing_vs_tiling_figure(result.stats), result.summary())


@for_people
def show_mask(packing: Any, seq: int | None) -> Any:
    """The attention mask of one packed sequence."""
    if packing is None or seq is None:
        return None
    return viz.mask_figure(packing, ui.whole(seq, "sequence"))


def build_pack_tab(state_ttl_s: float) -> None:
    """The Pack tab; call inside the demo's Blocks. The user's packing is kept `state_ttl_s` seconds."""
    packing_state = gr.State(None, time_to_live=state_ttl_s)
    with gr.Tab("Pack", id="pack") as tab:
        gr.Markdown("NaViT packs whole images into shared sequences (a block-diagonal mask keeps them apart); "
                    "tiling models give each image its own row, padded to the longest. No upload: the examples.")
        with gr.Row():
            files = serving.UploadFile(label="Images", file_count="multiple", file_types=["image"], type="filepath",
                            elem_id="pack-upload", height=120)
            with gr.Column():
                max_seq_len = gr.Number(4096, minimum=1, maximum=limits.active().max_seq_len, precision=0,
                                        label="max_seq_len (tokens)")
                patch_size = gr.Number(16, minimum=1, maximum=256, precision=0, label="Patch size (px)")
                per_image = gr.Number(1024, minimum=1, precision=0, label="NaViT: max tokens per image",
                                      info="Larger images are shrunk (aspect kept) to this many patches")
            with gr.Column():
                order = gr.Radio(["given", "first-fit-decreasing"], value="given", label="Packing order")
                tiling = gr.Dropdown(ui.strategy_choices(), value=ui.DEFAULT_STRATEGY, elem_id="pack-tiling",
                                     label="Tiling strategy to compare")
                run = gr.Button("Pack", variant="primary", elem_id="pack-run")
        status = gr.Markdown(elem_id="pack-status")  # what went wrong, kept after the toast is gone
        summary = gr.Markdown(elem_id="pack-summary")
        figure = gr.Plot(label="Packed sequences", elem_id="pack-figure")
        with gr.Row():
            seq = gr.Dropdown([], label="Attention mask of sequence", type="value", elem_id="pack-seq")
        mask = gr.Plot(label="Attention mask", elem_id="mask-figure")
        table = gr.Dataframe(headers=ui.BATCH_HEADERS, datatype=["str"] + ["number"] * 7, interactive=False,
                             label="Packing vs tiling", elem_id="pack-table")
        versus = gr.Plot(label="Packing vs tiling", elem_id="pack-versus")
    inputs = [files, max_seq_len, patch_size, per_image, order, tiling]
    outputs = [packing_state, figure, seq, mask, table, versus, summary]
    for event in (tab.select(pack_images, inputs, outputs, **serving.CPU),
                  run.click(pack_images, inputs, outputs, **serving.CPU),
                  seq.input(show_mask, [packing_state, seq], mask, **serving.CPU)):
        with_status(event, status)

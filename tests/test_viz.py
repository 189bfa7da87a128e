"""gridvlm.viz: every figure builds for every strategy, with one rectangle and one hover area per tile."""

import base64
import io

import numpy as np
import plotly.graph_objects as go
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import gridvlm
from gridvlm.metrics import plan_metrics, seam_energy
from gridvlm.packing import pack, padded_batch_stats
from gridvlm.viz import (
    compare_figure,
    mask_figure,
    packing_figure,
    packing_vs_tiling_figure,
    plan_figure,
    preview,
    token_breakdown_figure,
    tokens_scatter,
    overlay_height,
    view_footprint,
)

SIZES = [(1024, 768), (1, 200), (500, 3000)]


def _image(size, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _tile_shapes(fig):
    return [s for s in fig.layout.shapes if (s.name or "").startswith("tile ")]


def _tile_traces(fig):
    return [t for t in fig.data if isinstance(t, go.Scatter) and (t.name or "").startswith("tile ")]


@pytest.mark.parametrize("name", gridvlm.list_strategies())
@pytest.mark.parametrize("size", SIZES)
def test_plan_figure_has_one_rectangle_and_hover_per_tile(name, size):
    try:
        plan = gridvlm.plan(size, name)
    except gridvlm.PlanError as exc:  # the reference refuses this size (e.g. Phi-4-MM at 1×200): nothing to draw
        assert str(exc)
        return
    image = _image(size) if size[0] * size[1] < 2_000_000 else None
    fig = plan_figure(plan, image)
    assert isinstance(fig, go.Figure)
    assert len(_tile_shapes(fig)) == len(plan.tiles)
    traces = _tile_traces(fig)
    assert len(traces) == len(plan.tiles)
    for tile, trace in zip(plan.tiles, traces):
        assert f"tokens: {tile.token_count}" in trace.text
    assert str(plan.token_count) in fig.layout.title.text
    assert any(s.name == "global view" for s in fig.layout.shapes) == (plan.thumbnail is not None)


@given(st.integers(1, 20000), st.integers(1, 20000), st.integers(1, 20000))
def test_a_taller_image_gets_a_taller_overlay_within_bounds(w, h, taller):
    assert 640 <= overlay_height((w, h)) <= 1400
    assert overlay_height((w, h + taller)) >= overlay_height((w, h))  # never shorter for a taller image
    if h <= w:
        assert overlay_height((w, h)) == 640  # landscape and square: the width bounds the drawing


def test_a_portrait_overlay_is_drawn_at_its_height():
    p = gridvlm.plan((800, 4000), "internvl")
    assert plan_figure(p).layout.height == overlay_height((800, 4000)) == 1400


def test_plan_figure_with_overlapping_tiles_and_seams():
    plan = gridvlm.plan((1024, 768), "fixed-grid", overlap=112)
    img = _image((1024, 768))
    report = seam_energy(img, plan)
    fig = plan_figure(plan, img, seams=report)
    assert len(_tile_shapes(fig)) == len(plan.tiles) == 12
    assert sum(s.name == "seam" for s in fig.layout.shapes) == len(report.segments)
    (markers,) = [t for t in fig.data if t.name == "seam energy"]
    assert len(markers.x) == len(report.segments)
    hidden = plan_figure(plan, img, seams=report, show_seams=False)
    assert not any(s.name == "seam" for s in hidden.layout.shapes)


def test_padding_is_drawn_beyond_the_image_only_when_there_is_some():
    padded = plan_figure(gridvlm.plan((1024, 768), "llava-next"))
    assert any(s.name == "padding" for s in padded.layout.shapes)
    plain = plan_figure(gridvlm.plan((1024, 768), "navit"))
    assert not any(s.name == "padding" for s in plain.layout.shapes)


def test_view_footprint_maps_the_padded_input_to_original_pixels():
    # llava-1.5 pad: 1024×768 pasted on a 1024² square, 128 px of padding above and below
    (view,) = gridvlm.plan((1024, 768), "llava-1.5", mode="pad").tiles
    assert view_footprint(view) == pytest.approx((0, -128, 1024, 896))


def test_image_is_a_small_preview_spanning_the_original_extent():
    plan = gridvlm.plan((4032, 3024), "internvl")
    img = _image((4032, 3024))
    fig = plan_figure(plan, img, seams=seam_energy(img, plan))
    (im,) = fig.layout.images  # a layout image, not an image trace (see viz._image_layout)
    drawn = Image.open(io.BytesIO(base64.b64decode(im.source.split(",", 1)[1])))
    assert drawn.size == preview(img).size and max(drawn.size) == 1024
    assert (im.xref, im.yref, im.x, im.y, im.xanchor, im.yanchor) == ("x", "y", 0, 0, "left", "top")
    assert (im.sizex, im.sizey, im.sizing) == (4032, 3024, "stretch")
    assert not any(isinstance(t, go.Image) for t in fig.data)
    assert len(fig.to_json()) < 2_000_000


def test_compare_cells_hover_every_view_from_one_trace_each():
    """Small multiples stay light for the browser: per plan one image and one trace whose markers carry every
    view's hover text, in sequence order of tiles then the global view."""
    plans = {name: gridvlm.plan((1024, 768), name) for name in gridvlm.list_strategies()}
    fig = compare_figure(plans, _image((1024, 768)))
    assert len(fig.layout.images) == len(plans)
    for k, (name, plan) in enumerate(plans.items()):
        axis = "x" if k == 0 else f"x{k + 1}"
        (markers,) = [t for t in fig.data if t.xaxis == axis]
        assert len(markers.text) == plan.num_views, name
        views = [*plan.tiles, *([plan.thumbnail] if plan.thumbnail is not None else [])]
        assert [f"tokens: {v.token_count}" in text for v, text in zip(views, markers.text)] == [True] * len(views)


def test_preview_leaves_the_callers_image_alone():
    img = Image.new("RGB", (3000, 1000))
    assert preview(img).size == (1024, 341) and img.size == (3000, 1000)


def test_compare_figure_titles_carry_tokens():
    plans = {name: gridvlm.plan((1024, 768), name) for name in gridvlm.list_strategies()}
    fig = compare_figure(plans, _image((1024, 768)))
    titles = [a.text for a in fig.layout.annotations]
    for name, plan in plans.items():
        assert f"{name}<br>{plan.token_count} tok" in titles
    assert len(_tile_shapes(fig)) == sum(len(p.tiles) for p in plans.values())
    assert len(fig.to_json()) < 2_000_000


def test_tokens_scatter_one_point_per_strategy():
    rows = [{**plan_metrics(gridvlm.plan((1024, 768), n)), "strategy": n} for n in gridvlm.list_strategies()]
    (trace,) = tokens_scatter(rows).data
    assert list(trace.text) == [r["strategy"] for r in rows if r["pixels_per_token"]]


@pytest.mark.parametrize("name", gridvlm.list_strategies())
def test_token_breakdown_sums_to_the_total(name):
    plan = gridvlm.plan((1024, 768), name)
    fig = token_breakdown_figure(plan)
    assert sum(t.x[0] for t in fig.data) == plan.token_count + plan.text_tokens


def test_packing_figure_segments_and_utilisation():
    packing = pack([(256, 256), (128, 128), (512, 256), (64, 256), (224, 160)], max_seq_len=256, patch_size=32)
    fig = packing_figure(packing, token_counts=[576] * 5)
    images = [t for t in fig.data if t.name.startswith("image ")]
    padding = [t for t in fig.data if t.name == "padding"]
    assert len(images) == sum(len(s) for s in packing.sequences)
    assert len(padding) == sum(n < packing.max_seq_len for n in packing.lengths)
    assert sum(t.x[0] for t in images + padding) == len(packing.sequences) * packing.max_seq_len
    assert f"{100 * packing.utilization:.1f}%" in fig.layout.title.text
    assert "576" in images[0].hovertemplate


def test_mask_figure_shows_the_mask_as_is_when_small():
    packing = pack([(64, 64), (32, 64)], max_seq_len=32, patch_size=16)
    heat = mask_figure(packing, 0).data[0]
    np.testing.assert_array_equal(np.asarray(heat.z, dtype=bool), packing.attention_mask(0))


def test_mask_figure_pools_long_sequences():
    packing = pack([(512, 512), (256, 512), (256, 256)], max_seq_len=2048, patch_size=16)  # 1024 + 512 + 256
    heat = mask_figure(packing, 0).data[0]
    z = np.asarray(heat.z)
    assert z.shape == (512, 512)  # 2048 tokens in 4×4 blocks
    assert z[0, 0] == 1 and z[0, 511] == 0 and z[300, 300] == 1 and z[511, 511] == 0
    assert heat.dx == 4


def test_packing_vs_tiling_figure_accepts_stats_and_dicts():
    sizes = [(256, 256), (512, 256), (128, 128)]
    packing = pack(sizes, max_seq_len=1024, patch_size=16)
    counts = [item.tokens for item in packing.items]
    fig = packing_vs_tiling_figure({"packing": packing.stats(), "padded batch": padded_batch_stats(counts).to_dict()})
    assert len(fig.data) == 6
    padded = [t for t in fig.data if t.name == "padded batch"]
    assert padded[0].x[0] == 3 * 512 and padded[2].x[0] == 3 * 512**2


def test_packing_vs_tiling_panels_are_stacked_so_their_titles_never_share_a_line():
    packing = pack([(256, 256), (512, 256)], max_seq_len=1024, patch_size=16)
    fig = packing_vs_tiling_figure({"packing": packing.stats(), "padded": padded_batch_stats([256, 512])})
    titles = fig.layout.annotations
    assert len(titles) == 3 and len({round(a.y, 3) for a in titles}) == 3 and {a.x for a in titles} == {0.5}


def test_mask_figure_has_a_legend_and_labels_each_block_with_its_image():
    packing = pack([(64, 64), (32, 64), (16, 16)], max_seq_len=64, patch_size=16)
    fig = mask_figure(packing, 0, names=["a.png", "b.png", "c.png"])
    legend = [t.name for t in fig.data if t.showlegend is not False and t.type == "scatter"]
    assert any("may attend" in n for n in legend) and any("masked" in n for n in legend)
    labels = {(a.text, a.hovertext, a.x) for a in fig.layout.annotations}
    assert labels == {("0", "0: a.png", 8.0), ("1", "1: b.png", 20.0), ("2", "2: c.png", 24.5)}


def test_packing_figure_up_to_a_step_draws_only_the_images_placed_so_far():
    packing = pack([(6, 1), (5, 1), (4, 1), (3, 1)], max_seq_len=10, patch_size=1, order="first-fit-decreasing")
    fig = packing_figure(packing, upto=2)
    drawn = [t for t in fig.data if t.name != "padding"]
    assert [t.name for t in drawn] == ["image 0", "image 1"]
    assert [t.marker.line.width for t in drawn] == [1, 3]  # the latest placement is outlined


@pytest.mark.parametrize("name", gridvlm.list_strategies())
def test_attention_windows_are_drawn_on_request(name):
    plan = gridvlm.plan((1024, 768), name)
    windows = [s for s in plan_figure(plan, show_windows=True).layout.shapes if s.name == "attention window"]
    assert [(s.x0, s.y0, s.x1, s.y1) for s in windows] == [tuple(w) for w in plan.windows]
    assert not [s for s in plan_figure(plan).layout.shapes if s.name == "attention window"]


@pytest.mark.parametrize("name", gridvlm.list_strategies())
def test_a_row_break_marker_ends_every_token_row(name):
    plan = gridvlm.plan((1024, 768), name)
    token = gridvlm.strategy_info(name).row_break_token
    markers = [t for t in plan_figure(plan).data if token is not None and t.name == token]
    if token is None:
        return
    (trace,) = markers
    assert len(trace.x) == sum(v.token_grid[0] for v in plan.views)
    view = plan.views[0]
    assert max(trace.x) == pytest.approx(view.box[2] + (view.input_size[0] - view.content_box[2])
                                         * (view.box[2] - view.box[0]) / (view.content_box[2] - view.content_box[0]))

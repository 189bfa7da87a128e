"""Mapping a vector over visual positions back onto views and original pixels, for every layout chat makes.

Layouts come from gridvlm.models' own encode() on tiny checkpoints; the expected pixel boxes are derived here
independently (through the canvas for anyres plans, through tile boxes for grid plans).
"""

from __future__ import annotations

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow  # builds and runs tiny random-weight models

import gridvlm  # noqa: E402
from gridvlm import Plan  # noqa: E402
from gridvlm import attention as A  # noqa: E402
from gridvlm.models import load_vlm, make_tiny_vlm  # noqa: E402
from gridvlm.strategies.anyres import unpadded_size  # noqa: E402

CASES = {
    # name: (family, image size, plan maker)
    "llava-next wide (padded canvas, unpadding)": ("llava-next", (1000, 300), None),
    "llava-next tall": ("llava-next", (300, 900), None),
    "onevision large (anyres_max_9 pooling)": ("llava-onevision", (2000, 1500), None),
    "onevision small (no pooling)": ("llava-onevision", (500, 400), None),
    "internvl grid, thumbnail last": ("llava-next", (1000, 300), lambda size: gridvlm.plan(size, "internvl")),
    "llava-uhd slices, thumbnail last": ("llava-onevision", (900, 700),
                                         lambda size: gridvlm.plan(size, "llava-uhd", variant="release")),
    "minicpm-v, thumbnail first": ("llava-next", (1200, 500), lambda size: gridvlm.plan(size, "minicpm-v")),
}


def noise_image(w: int, h: int):
    from PIL import Image

    rng = np.random.default_rng(w * h)
    return Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h))


@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("mapping_vlms")
    vlms = {fam: load_vlm(make_tiny_vlm(root / fam, fam, seed=2), device="cpu")
            for fam in ("llava-next", "llava-onevision")}
    out = {}
    for name, (family, size, make) in CASES.items():
        vlm = vlms[family]
        plan = vlm.native_plan(size) if make is None else make(size)
        visual = vlm.encode(noise_image(*size), plan)
        out[name] = (vlm, plan, visual.layout)
    return out


def unit(n: int, i: int) -> np.ndarray:
    v = np.zeros(n)
    v[i] = 1.0
    return v


def expected_box(vlm, plan, layout, i):
    """Original pixels of position i, derived without gridvlm.attention: (box, cells per position).

    A cell is what its patch sees: patch_size pixels of the t × t input (g·patch may be less than t)."""
    g = vlm.geometry.features_side
    t, patch = vlm.geometry.tile_size, vlm.geometry.patch_size
    view = plan.views[layout.view[i]]
    fr, fc = layout.feat_row[i], layout.feat_col[i]
    w, h = plan.image_size
    if view.is_thumbnail:
        (bx0, by0, bx1, by1), (iw, ih) = view.box, view.input_size
        cx0, cy0, cx1, cy1 = view.content_box
        # the cell in input pixels, clipped to the content, then onto the box
        x0, x1 = max(fc * patch * iw / t, cx0), min((fc + 1) * patch * iw / t, cx1)
        y0, y1 = max(fr * patch * ih / t, cy0), min((fr + 1) * patch * ih / t, cy1)
        sx, sy = (bx1 - bx0) / (cx1 - cx0), (by1 - by0) / (cy1 - cy0)
        return (bx0 + (x0 - cx0) * sx, by0 + (y0 - cy0) * sy, bx0 + (x1 - cx0) * sx, by0 + (y1 - cy0) * sy), 1.0
    if vlm.is_native(plan):  # anyres: canvas cell → original through the plan's content box
        p = patch
        X0 = layout.col[i] * t + fc * p
        Y0 = layout.row[i] * t + fr * p
        ccx0, ccy0, ccx1, ccy1 = plan.content_box
        sx, sy = w / (ccx1 - ccx0), h / (ccy1 - ccy0)
        box = ((X0 - ccx0) * sx, (Y0 - ccy0) * sy, (X0 + p - ccx0) * sx, (Y0 + p - ccy0) * sy)
        rows, cols = plan.grid
        kept_r, kept_c, _, _ = unpadded_size(w, h, rows * g, cols * g, round7=True)
        stride = 1.0
        mt = plan.params.get("max_features_tiles")
        if mt is not None and math.sqrt(kept_r * kept_c / (mt * g * g)) > 1.1:
            stride = kept_r / int(kept_r // math.sqrt(kept_r * kept_c / (mt * g * g)))
        return (max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)), stride * p * max(sx, sy)
    bx0, by0, bx1, by1 = view.box  # grid plans here have no padding: the view is resized to t × t
    assert view.content_box == (0.0, 0.0, *map(float, view.input_size))
    cw, ch = (bx1 - bx0) * patch / t, (by1 - by0) * patch / t
    return (bx0 + fc * cw, by0 + fr * ch, bx0 + (fc + 1) * cw, by0 + (fr + 1) * ch), 1.0


def support(heat):
    ys, xs = np.nonzero(heat > 1e-12)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def check_pooled_position(maps, layout, plan, i):
    """A pooled position's unit mass: on the cells its bilinear taps read, by their weights (maybe in two tiles),
    and on the image inside its box, which holds its sample centre's cell."""
    expect = [np.zeros(m.shape) for m in maps.maps]
    for (v, r, c), w in zip(layout.foot_cells[i], layout.foot_weights[i]):
        if w > 0:
            expect[v][r, c] += w
    for got, want in zip(maps.maps, expect):
        np.testing.assert_allclose(got, want, atol=1e-12)
    assert maps.newline_mass == 0 and maps.stride == (1.0, 1.0)
    heat = A.to_image(maps, plan, plan.image_size, which="tiles")
    assert heat.sum() == pytest.approx(1.0, abs=1e-9)
    box = A.position_boxes(layout, plan)[i]
    sx0, sy0, sx1, sy1 = support(heat)
    assert box[0] - 1 <= sx0 and sx1 <= box[2] + 1 and box[1] - 1 <= sy0 and sy1 <= box[3] + 1, i
    v = layout.view[i]
    centre = A.cell_box(plan.views[v], layout.grids[v], layout.feat_row[i], layout.feat_col[i],
                        cell_px=layout.cell_px[v])
    assert box[0] - 1e-6 <= (centre[0] + centre[2]) / 2 <= box[2] + 1e-6
    assert box[1] - 1e-6 <= (centre[1] + centre[3]) / 2 <= box[3] + 1e-6


@pytest.mark.parametrize("case", list(CASES))
def test_unit_mass_lands_in_its_view_cell_and_pixels(layouts, case):
    vlm, plan, layout = layouts[case]
    n = len(layout)
    rng = np.random.default_rng(len(case))
    feats = np.nonzero(~layout.newline)[0]
    picks = list(rng.choice(feats, 12, replace=False)) + [feats[0], feats[-1]]
    if layout.newline.any():
        picks.append(np.nonzero(layout.newline)[0][0])
    for i in picks:
        maps = A.map_to_views(unit(n, i), layout, plan)
        if layout.newline[i]:
            assert maps.newline_mass == 1 and maps.view_mass.sum() == 0
            assert A.to_image(maps, plan, plan.image_size).sum() == 0
            continue
        v, fr, fc = layout.view[i], layout.feat_row[i], layout.feat_col[i]
        if layout.has_footprint and not plan.views[v].is_thumbnail:
            check_pooled_position(maps, layout, plan, i)
            continue
        assert maps.maps[v][fr, fc] == 1 and maps.view_mass[v] == 1 and maps.newline_mass == 0
        assert maps.labels[v] == ("global view" if plan.views[v].is_thumbnail
                                  else f"tile {plan.views[v].row},{plan.views[v].col}")
        which = "global" if plan.views[v].is_thumbnail else "tiles"
        other = "tiles" if which == "global" else "global"
        heat = A.to_image(maps, plan, plan.image_size, which=which)  # one bin per original pixel
        assert A.to_image(maps, plan, plan.image_size, which=other).sum() == 0
        assert heat.sum() == pytest.approx(1.0, abs=1e-9)
        (x0, y0, x1, y1), reach = expected_box(vlm, plan, layout, i)
        sx0, sy0, sx1, sy1 = support(heat)
        slack = 1 + (reach - 1) / 2 if reach > 1 else 1  # pooled: half a stride each side, else 1 px rounding
        assert x0 - slack <= sx0 and sx1 <= x1 + slack and y0 - slack <= sy0 and sy1 <= y1 + slack, (i, case)
        # the centre of the expected cell is painted
        assert heat[min(int((y0 + y1) / 2), heat.shape[0] - 1), min(int((x0 + x1) / 2), heat.shape[1] - 1)] > 0
        box = A.position_boxes(layout, plan)[i]
        assert box[0] - 1e-6 <= (x0 + x1) / 2 <= box[2] + 1e-6 and box[1] - 1e-6 <= (y0 + y1) / 2 <= box[3] + 1e-6


def test_pooling_and_unpadding_are_seen(layouts):
    vlm, plan, layout = layouts["onevision large (anyres_max_9 pooling)"]
    maps = A.map_to_views(np.ones(len(layout)), layout, plan)
    # bilinear pooling: each position is spread over the cells it reads, so the maps are on the tiles' own cells
    assert layout.has_footprint and maps.stride == (1.0, 1.0)
    pooled = layout.feature & (layout.view > 0)
    assert (layout.foot_weights[pooled] > 0).sum(axis=1).max() == 4  # 2 × 2 taps
    tiles = [m for view, m in zip(plan.views, maps.maps) if not view.is_thumbnail]
    assert sum(m.sum() for m in tiles) == pytest.approx(pooled.sum())  # mass kept
    crossing = [len({v for (v, _, _), w in zip(c, ws) if w > 0}) for c, ws in
                zip(layout.foot_cells[pooled], layout.foot_weights[pooled])]
    assert max(crossing) == 4  # some positions read cells of four tiles at a corner
    assert maps.present[0].all()  # the global view is whole

    vlm, plan, layout = layouts["llava-next wide (padded canvas, unpadding)"]
    maps = A.map_to_views(np.ones(len(layout)), layout, plan)
    assert maps.stride == (1.0, 1.0)
    tiles = [p for view, p in zip(plan.views, maps.present) if not view.is_thumbnail]
    assert not all(p.all() for p in tiles)  # unpadding removed whole feature rows
    assert maps.newline_mass == layout.newline.sum()
    # nothing lands in the canvas padding: heat over the padded area is 0 because it is outside the image
    heat = A.to_image(maps, plan, (200, 60))
    assert heat.shape == (60, 200) and heat.min() >= 0


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_total_mass_is_preserved(layouts, case, data):
    vlm, plan, layout = layouts[case]
    n = len(layout)
    k = data.draw(st.integers(1, 40))
    positions = data.draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k))
    masses = data.draw(st.lists(st.floats(0, 10, allow_nan=False), min_size=k, max_size=k))
    vector = np.zeros(n)
    np.add.at(vector, positions, masses)
    maps = A.map_to_views(vector, layout, plan)
    assert maps.total == pytest.approx(vector.sum(), rel=1e-9, abs=1e-9)
    assert sum(maps.masses().values()) == pytest.approx(vector.sum(), rel=1e-9, abs=1e-9)
    out = A.heat_size(plan.image_size, data.draw(st.integers(8, 96)))
    painted = A.to_image(maps, plan, out).sum() + A.to_image(maps, plan, out, which="global").sum()
    lost = A.padding_mass(maps, plan)
    assert painted + maps.newline_mass + lost == pytest.approx(vector.sum(), rel=1e-9, abs=1e-9)


def test_layout_survives_a_json_round_trip(layouts):
    import json

    vlm, plan, layout = layouts["internvl grid, thumbnail last"]
    vector = np.random.default_rng(0).random(len(layout))
    direct = A.map_to_views(vector, layout, plan)
    stored = json.loads(json.dumps({"layout": layout.to_dict(), "plan": plan.to_dict()}))
    again = A.map_to_views(vector, A.Layout.from_dict(stored["layout"]), Plan.from_dict(stored["plan"]))
    assert all(np.array_equal(a, b) for a, b in zip(direct.maps, again.maps))
    assert again.newline_mass == direct.newline_mass and again.labels[-1] == "global view"


def test_mismatched_vector_or_plan_is_explained(layouts):
    vlm, plan, layout = layouts["llava-next tall"]
    with pytest.raises(A.AttentionError, match="has 3 values but the layout has"):
        A.map_to_views([1, 2, 3], layout, plan)
    small = gridvlm.plan(plan.image_size, "llava-1.5")
    with pytest.raises(A.AttentionError, match="different images"):
        A.map_to_views(np.ones(len(layout)), layout, small)

"""The Pack tab's handlers, called directly, and the CLI `pack` reproducing them.

The expected numbers are worked out here from the token counts the tab shows per image (tiling plans from
gridvlm.plan, groupings by a packer written out below), not by calling the functions the tab calls.
"""

from __future__ import annotations

import json
import re

import pytest

gr = pytest.importorskip("gradio")
import gridvlm  # noqa: E402
from gridvlm.app import display as ui  # noqa: E402
from gridvlm.app import pack_tab  # noqa: E402
from gridvlm.cli import run  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(autouse=True)
def gradio_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))


ORDER_MATTERS = [label for label in ui.IMAGE_SETS if "order matters" in label]

# (image set, max_seq_len, patch size, max tokens per image (0: the strategy's defaults), order, drop rate, tiling)
CASES = [
    (ui.EXAMPLE_SET, 8192, 16, 0, "given", 0.0, "llava-next"),
    (ui.EXAMPLE_SET, 4096, 16, 1500, "first-fit-decreasing", 0.5, "internvl"),
    (ORDER_MATTERS[0], 8192, 16, 0, "first-fit-decreasing", 0.0, "llava-next"),
    (ORDER_MATTERS[1], 4096, 14, 0, "given", 0.25, "qwen2-vl"),
]


def _sizes(image_set: str) -> list[tuple[int, int]]:
    chosen = ui.IMAGE_SETS[image_set]
    return list(chosen.sizes) if chosen.sizes else [gridvlm.image_size(p) for p in ui.EXAMPLES]


def _pack(image_set, L, patch, cap, order, q, tiling):
    return pack_tab.pack_images(None, L, patch, cap, order, tiling, q, image_set)


def _navit_tokens(images_markdown: str) -> list[int]:
    """The last column of the tab's per-image table: each image's NaViT tokens, as shown."""
    rows = [line for line in images_markdown.splitlines() if re.match(r"\| \d+ \|", line)]
    return [int(line.rstrip(" |").rsplit("|", 1)[1].replace(",", "")) for line in rows]


def _next_fit(counts: list[int], L: int) -> list[list[int]]:
    groups: list[list[int]] = [[]]
    for k, n in enumerate(counts):
        if sum(counts[i] for i in groups[-1]) + n > L:
            groups.append([])
        groups[-1].append(k)
    return [g for g in groups if g]


def _first_fit_decreasing(counts: list[int], L: int) -> list[list[int]]:
    groups: list[list[int]] = []
    for k in sorted(range(len(counts)), key=lambda i: -counts[i]):
        room = [g for g in groups if sum(counts[i] for i in g) + counts[k] <= L]
        if room:
            room[0].append(k)
        else:
            groups.append([k])
    return groups


def _groups(counts, L, order):
    return (_next_fit if order == "given" else _first_fit_decreasing)(counts, L)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][:12]}-{c[1]}-{c[4]}-{c[6]}")
def test_each_images_navit_tokens_follow_its_tiling_plan(case):
    image_set, L, patch, cap, order, q, tiling = case
    view, *_, images = _pack(*case)
    sizes = _sizes(image_set)
    tiled = [gridvlm.fit_budget(s, tiling, cap) if cap else gridvlm.plan(s, tiling) for s in sizes]
    for size, plan, item, shown in zip(sizes, tiled, view.packing.items, _navit_tokens(images)):
        rows, cols = item.grid
        assert rows * cols <= plan.token_count  # never more tokens than the tiling strategy gives the image
        if (size[1] // patch) * (size[0] // patch) >= plan.token_count:  # shrunk as the navit strategy does
            navit = gridvlm.plan(size, "navit", patch_size=patch, max_tokens=plan.token_count)
            assert item.grid == navit.tiles[0].token_grid
        else:  # enlarged: no grid a row and a column larger would fit
            assert (rows + 1) * (cols + 1) > plan.token_count
        assert shown == int(rows * cols * (1 - q))
        assert f"| {size[0]}×{size[1]} | {plan.token_count:,} |" in images


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][:12]}-{c[1]}-{c[4]}-{c[6]}")
def test_the_table_equals_the_arithmetic_of_the_shown_token_counts(case):
    image_set, L, patch, cap, order, q, tiling = case
    view, table, *_, images = _pack(*case)
    counts = _navit_tokens(images)
    tiled = [(gridvlm.fit_budget(s, tiling, cap) if cap else gridvlm.plan(s, tiling)).token_count
             for s in _sizes(image_set)]
    n_seq = len(_groups(counts, L, order))
    longest, n = max(counts), len(counts)
    assert table == [
        ["NaViT packing", n_seq, L, sum(counts), n_seq * L - sum(counts), n_seq * L,
         round(sum(counts) / (n_seq * L), 4), sum(c * c for c in counts)],
        ["NaViT, padded batch", n, longest, sum(counts), n * longest - sum(counts), n * longest,
         round(sum(counts) / (n * longest), 4), n * longest**2],
        [f"{tiling}, padded batch", n, max(tiled), sum(tiled), n * max(tiled) - sum(tiled), n * max(tiled),
         round(sum(tiled) / (n * max(tiled)), 4), n * max(tiled) ** 2],
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][:12]}-{c[1]}-{c[4]}-{c[6]}")
def test_the_explanation_states_both_wastes_and_both_orders(case):
    image_set, L, patch, cap, order, q, tiling = case
    _, _, explanation, *_, images = _pack(*case)
    counts = _navit_tokens(images)
    n_seq = len(_groups(counts, L, order))
    packed_waste = 1 - sum(counts) / (n_seq * L)
    padded_waste = 1 - sum(counts) / (len(counts) * max(counts))
    assert (f"Packing wastes {packed_waste:.1%} of its {n_seq} sequence{'s' * (n_seq != 1)} on padding where a "
            f"batch padded to the longest image wastes {padded_waste:.1%}") in explanation
    assert f"differ by up to {max(counts) / min(c for c in counts if c):.1f}×" in explanation
    given, ffd = len(_next_fit(counts, L)), len(_first_fit_decreasing(counts, L))
    if ffd < given:
        assert f"first-fit-decreasing needs {ffd} sequences" in explanation
    elif given == ffd == -(-sum(counts) // L):
        assert f"Both orders need {given} sequence" in explanation and "the fewest possible" in explanation
    if packed_waste > padded_waste:
        assert "Packing loses here" in explanation


@pytest.mark.parametrize("image_set", ORDER_MATTERS)
def test_the_order_matters_sets_need_fewer_sequences_largest_first(image_set):
    chosen = ui.IMAGE_SETS[image_set]
    _, table, explanation, *_, images = _pack(image_set, chosen.max_seq_len, 16, 0, "given", 0.0, chosen.tiling)
    counts = _navit_tokens(images)
    assert len(_first_fit_decreasing(counts, chosen.max_seq_len)) < len(_next_fit(counts, chosen.max_seq_len))
    assert "Order matters here" in explanation


@pytest.mark.parametrize("order", ["given", "first-fit-decreasing"])
def test_each_step_draws_the_first_k_images_the_packer_placed(order):
    chosen = ui.IMAGE_SETS[ORDER_MATTERS[0]]
    view, *_, images = _pack(ORDER_MATTERS[0], chosen.max_seq_len, 16, 0, order, 0.0, chosen.tiling)
    counts = _navit_tokens(images)
    walk = list(range(len(counts))) if order == "given" else sorted(range(len(counts)), key=lambda i: -counts[i])
    groups = _groups(counts, chosen.max_seq_len, order)
    for k in range(len(counts) + 1):
        figure, caption = pack_tab.show_step(view, k)
        drawn = {int(t.text[0]) for t in figure.data if t.name != "padding"}
        assert drawn == set(walk[:k])
        assert caption.startswith(f"Step {k} of {len(counts)}")
        if k:
            seq = next(s for s, g in enumerate(groups) if walk[k - 1] in g)
            assert f"image {walk[k - 1]} " in caption and f"sequence {seq}" in caption


def test_every_segment_is_labelled_and_every_image_is_in_the_legend():
    view, _, _, figure, *_ = _pack(*CASES[0])
    segments = [t for t in figure.data if t.name != "padding"]
    assert sorted(int(t.text[0]) for t in segments) == list(range(len(view.names)))
    assert sorted(t.name for t in segments) == sorted(f"{k}: {name}" for k, name in enumerate(view.names))
    assert list(figure.layout.yaxis.tickvals) == [f"seq {s}" for s in range(len(view.packing.sequences))]


def test_the_mask_dropdown_offers_every_sequence_and_draws_each():
    view, *_, seq_choices, mask, _, _ = _pack(*CASES[2])
    assert [value for _, value in seq_choices["choices"]] == list(range(len(view.packing.sequences)))
    for s in range(len(view.packing.sequences)):
        annotations = {a.text for a in pack_tab.show_mask(view, s).layout.annotations}
        assert annotations == {str(i) for i, _ in view.packing.sequences[s]}


def test_uploads_replace_the_image_set(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (640, 480), (90, 30, 200)).save(path)
    view, *_, images = pack_tab.pack_images([str(path)] * 3, 8192, 16, 0, "given", "llava-next")
    tokens = gridvlm.plan((640, 480), "llava-next").token_count
    assert view.names == ["photo.png"] * 3 and f"| 640×480 | {tokens:,} |" in images


def test_a_non_image_is_a_readable_error(tmp_path):
    fake = tmp_path / "table.png"
    fake.write_bytes(b"a,b\n1,2\n")
    with pytest.raises(gr.Error) as shown:
        pack_tab.pack_images([str(fake)], 4096, 16, 0, "given", "llava-next")
    assert "table.png" in shown.value.message and str(tmp_path) not in shown.value.message


@pytest.mark.parametrize("max_seq_len, patch_size, per_image, words", [
    (4096, 0, 0, "patch_size"), (None, 16, 0, "max_seq_len"), (4096, 16, -5, "max tokens per image"),
    (1024, 16, 0, "raise max_seq_len to at least"),
])
def test_bad_or_empty_numbers_are_readable_errors(max_seq_len, patch_size, per_image, words):
    with pytest.raises(gr.Error) as shown:
        pack_tab.pack_images(None, max_seq_len, patch_size, per_image, "given", "llava-next")
    assert words in shown.value.message


def test_an_image_set_brings_its_strategy_and_sequence_length():
    for label, chosen in ui.IMAGE_SETS.items():
        assert pack_tab.image_set_settings(label) == (chosen.tiling, chosen.max_seq_len)


# ---------------------------------------------------------------------------------------------------------------
# The CLI reproduces the tab


def _cli_args(case) -> list[str]:
    image_set, L, patch, cap, order, q, tiling = case
    chosen = ui.IMAGE_SETS[image_set]
    images = [f"{w}x{h}" for w, h in chosen.sizes] if chosen.sizes else [str(p) for p in ui.EXAMPLES]
    args = ["pack", *images, "--max-seq-len", str(L), "--patch-size", str(patch), "--order", order,
            "--drop-rate", str(q), "--tiling", tiling, "--json"]
    return args + (["--max-tokens-per-image", str(cap)] if cap else [])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][:12]}-{c[1]}-{c[4]}-{c[6]}")
def test_cli_pack_prints_the_tabs_numbers(case, capsys):
    view, table, *_ = _pack(*case)
    assert run(_cli_args(case)) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = [[name, s["rows"], s["row_len"], s["real_tokens"], s["padding_tokens"], s["total_tokens"],
             round(s["utilization"], 4), s["attention_cost"]] for name, s in printed["layouts"].items()]
    assert rows == table
    assert printed["packing"]["sequences"] == [[list(x) for x in seq] for seq in view.packing.sequences]
    assert printed["explanation"] == view.comparison.explanation()

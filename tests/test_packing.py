"""gridvlm.packing: NaViT grouping against the reference vectors, and the invariants of masks and positions."""

import ast
import itertools
import json
import math
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gridvlm
from gridvlm.errors import PlanError
from gridvlm.packing import (
    ORDERS,
    Packing,
    pack,
    padded_batch_stats,
    patch_grid,
    token_dropout_counts,
)

# ---------------------------------------------------------------------------------------------------------------
# Reference vectors

# From the shared spec's vectors-public.json, key "navit_packing" (sizes are (h, w) there; the file holds three
# scenarios although the written specification speaks of five).
NAVIT_PACKING = [
    {
        "sizes_hw": [[256, 256], [128, 128], [512, 256], [64, 256], [1024, 1024], [224, 160]],
        "patch": 32, "max_seq_len": 2048, "token_dropout": 0.0,
        "tokens_per_image": [64, 16, 128, 16, 1024, 35],
        "groups": [[0, 1, 2, 3, 4, 5]],
    },
    {
        "sizes_hw": [[256, 256], [128, 128], [512, 256], [64, 256], [256, 512], [224, 160]],
        "patch": 32, "max_seq_len": 256, "token_dropout": 0.0,
        "tokens_per_image": [64, 16, 128, 16, 128, 35],
        "groups": [[0, 1, 2, 3], [4, 5]],
    },
    {
        "sizes_hw": [[256, 256], [128, 128], [512, 256], [64, 256], [256, 512], [224, 160]],
        "patch": 32, "max_seq_len": 256, "token_dropout": 0.5,
        "tokens_per_image": [64, 16, 128, 16, 128, 35],
        "groups": [[0, 1, 2, 3, 4, 5]],
    },
]

# From the shared spec's vectors-public.json, strategies "navit_p16" / "navit_p32":
# (patch, (w, h), patch_grid_hw, tokens, kept_tokens_dropout_0.5_forward, counted_tokens_dropout_0.5_grouping)
NAVIT_SIZES = [
    (16, (336, 336), (21, 21), 441, 220, 220),
    (16, (1, 1), (0, 0), 0, 1, 0),
    (16, (100, 5000), (312, 6), 1872, 936, 936),
    (16, (5000, 100), (6, 312), 1872, 936, 936),
    (16, (672, 672), (42, 42), 1764, 882, 882),
    (16, (1024, 768), (48, 64), 3072, 1536, 1536),
    (16, (1920, 1080), (67, 120), 8040, 4020, 4020),
    (16, (4032, 3024), (189, 252), 47628, 23814, 23814),
    (16, (800, 4000), (250, 50), 12500, 6250, 6250),
    (16, (337, 337), (21, 21), 441, 220, 220),
    (16, (2000, 1000), (62, 125), 7750, 3875, 3875),
    (16, (500, 800), (50, 31), 1550, 775, 775),
    (32, (336, 336), (10, 10), 100, 50, 50),
    (32, (1, 1), (0, 0), 0, 1, 0),
    (32, (100, 5000), (156, 3), 468, 234, 234),
    (32, (5000, 100), (3, 156), 468, 234, 234),
    (32, (672, 672), (21, 21), 441, 220, 220),
    (32, (1024, 768), (24, 32), 768, 384, 384),
    (32, (1920, 1080), (33, 60), 1980, 990, 990),
    (32, (4032, 3024), (94, 126), 11844, 5922, 5922),
    (32, (800, 4000), (125, 25), 3125, 1562, 1562),
    (32, (337, 337), (10, 10), 100, 50, 50),
    (32, (2000, 1000), (31, 62), 1922, 961, 961),
    (32, (500, 800), (25, 15), 375, 187, 187),
]


def _scenario_packing(case):
    sizes = [(w, h) for h, w in case["sizes_hw"]]
    return pack(sizes, case["max_seq_len"], patch_size=case["patch"], drop_rate=case["token_dropout"])


@pytest.mark.parametrize("case", NAVIT_PACKING, ids=lambda c: f"L{c['max_seq_len']}-q{c['token_dropout']}")
def test_given_order_reproduces_reference_groups(case):
    packing = _scenario_packing(case)
    assert [[i for i, _ in seq] for seq in packing.sequences] == case["groups"]


@pytest.mark.parametrize("case", NAVIT_PACKING, ids=lambda c: f"L{c['max_seq_len']}-q{c['token_dropout']}")
def test_tokens_per_image_match_reference(case):
    packing = _scenario_packing(case)
    assert [item.tokens for item in packing.items] == case["tokens_per_image"]


def test_dropout_scenario_groups_by_counted_tokens():
    # The q = 0.5 scenario only fits one sequence because the packer counts int(n/2): 193 of 256.
    packing = _scenario_packing(NAVIT_PACKING[2])
    assert packing.lengths == [32 + 8 + 64 + 8 + 64 + 17]


@pytest.mark.parametrize("p, size, grid, tokens, kept, counted", NAVIT_SIZES, ids=lambda v: str(v))
def test_patch_grid_matches_reference(p, size, grid, tokens, kept, counted):
    assert patch_grid(size, p) == grid
    assert grid[0] * grid[1] == tokens


@pytest.mark.parametrize("p, size, grid, tokens, kept, counted", NAVIT_SIZES, ids=lambda v: str(v))
def test_token_dropout_counts_match_reference(p, size, grid, tokens, kept, counted):
    assert token_dropout_counts(tokens, 0.5) == (counted, kept)


@pytest.mark.parametrize("p, size, grid, tokens, kept, counted", NAVIT_SIZES, ids=lambda v: str(v))
def test_packed_item_counts_match_reference(p, size, grid, tokens, kept, counted):
    item = pack([size], max_seq_len=50_000, patch_size=p, drop_rate=0.5).items[0]
    # The reference's forward "keeps" 1 token of an image with no patch (and then fails); pack keeps at most n.
    assert (item.grid, item.tokens, item.counted_tokens, item.kept_tokens) == (grid, tokens, counted, min(kept, tokens))


# ---------------------------------------------------------------------------------------------------------------
# Documented edge cases


def test_tiny_image_counts_zero_but_keeps_one_token_with_dropout():
    # 16×16 at p = 16 is one patch: grouping counts int(0.5) = 0, the forward keeps max(1, 0) = 1.
    packing = pack([(16, 16)] * 3, max_seq_len=2, patch_size=16, drop_rate=0.5)
    assert (packing.lengths, packing.kept_lengths, packing.padded_len) == ([0], (3,), 3)
    assert packing.image_ids(0).tolist() == [0, 1, 2]


def test_image_smaller_than_a_patch_stays_with_zero_tokens():
    packing = pack([(64, 64), (10, 300), (32, 32)], max_seq_len=32, patch_size=16)
    assert packing.sequences == [[(0, 16), (1, 0), (2, 4)]]
    assert packing.empty_items == (1,)
    assert 1 not in packing.image_ids(0).tolist()


def test_no_items_gives_no_sequences():
    packing = pack([], max_seq_len=64)
    assert (packing.sequences, packing.utilization, packing.padding_tokens) == ([], 0.0, 0)


def test_first_fit_decreasing_fills_earlier_sequences():
    # tokens at p = 1: 6, 5, 4, 3, 2 into 10 → FFD [6, 4], [5, 3, 2]; given order [6], [5, 4], [3, 2]
    sizes = [(6, 1), (5, 1), (4, 1), (3, 1), (2, 1)]
    ffd = pack(sizes, max_seq_len=10, patch_size=1, order="first-fit-decreasing")
    given_order = pack(sizes, max_seq_len=10, patch_size=1)
    assert [[i for i, _ in s] for s in ffd.sequences] == [[0, 2], [1, 3, 4]]
    assert len(given_order.sequences) == 3


def test_first_fit_decreasing_is_not_always_better_than_given_order():
    # 4+3+3 | 4+3+3 fills two sequences exactly; FFD puts both 4s together and needs three.
    sizes = [(4, 1), (3, 1), (3, 1), (4, 1), (3, 1), (3, 1)]
    assert len(pack(sizes, 10, patch_size=1).sequences) == 2
    assert len(pack(sizes, 10, patch_size=1, order="first-fit-decreasing").sequences) == 3


def test_first_fit_decreasing_keeps_input_order_among_equal_sizes():
    packing = pack([(2, 1), (2, 1), (3, 1), (2, 1)], max_seq_len=100, patch_size=1, order="first-fit-decreasing")
    assert [i for i, _ in packing.sequences[0]] == [2, 0, 1, 3]


# ---------------------------------------------------------------------------------------------------------------
# Inputs other than sizes


def test_images_use_their_size():
    image = SimpleNamespace(size=(640, 480))
    assert pack([image], 4096).items[0].grid == (30, 40)


def test_pil_image_uses_its_upright_size():
    from PIL import Image

    rotated = Image.new("RGB", (640, 480))
    rotated.getexif()[0x0112] = 6  # EXIF Orientation: turn 90° clockwise to display
    assert pack([rotated], 4096).items[0].size == (480, 640)
    assert pack([Image.new("RGB", (640, 480))], 4096).items[0].size == (640, 480)


def _navit_plan(w, h, p=16, strategy="navit"):
    tile = SimpleNamespace(token_grid=(h // p, w // p))
    return SimpleNamespace(strategy=strategy, params={"patch_size": p}, image_size=(w, h), tiles=(tile,),
                           token_count=(h // p) * (w // p))


def test_navit_plans_pack_like_their_sizes():
    from_plans = pack([_navit_plan(640, 480), _navit_plan(320, 320)], 2048)
    from_sizes = pack([(640, 480), (320, 320)], 2048)
    assert from_plans == from_sizes


def test_other_strategies_plans_are_refused():
    with pytest.raises(PlanError, match="only 'navit' plans"):
        pack([_navit_plan(640, 480, strategy="llava-next")], 2048)


def test_plan_with_other_patch_size_is_refused():
    with pytest.raises(PlanError, match="patch_size=32"):
        pack([_navit_plan(640, 480, p=32)], 2048, patch_size=16)


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_image_longer_than_max_seq_len_names_it():
    with pytest.raises(PlanError) as err:
        pack([(64, 64), (1024, 768)], max_seq_len=2048, patch_size=16)
    message = str(err.value)
    for part in ("item 1", "1024×768", "3072 tokens", "max_seq_len=2048"):
        assert part in message


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"order": "best-fit"}, "first-fit-decreasing"),
        ({"max_seq_len": 0}, "max_seq_len"),
        ({"patch_size": 0}, "patch_size"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"drop_rate": -0.1}, "drop_rate"),
        ({"items": [(640, 480), "cat.jpg"]}, "item 1"),
        ({"items": [(640, 0)]}, "at least 1 pixel"),
        ({"items": [(640.5, 480)]}, "whole pixels"),
        ({"items": (640, 480)}, "pass a list"),
    ],
    ids=lambda v: str(v),
)
def test_bad_arguments_raise_plan_error(kwargs, words):
    args = {"items": [(640, 480)], "max_seq_len": 2048} | kwargs
    with pytest.raises(PlanError, match=words):
        pack(**args)


# ---------------------------------------------------------------------------------------------------------------
# Invariants

sizes_st = st.lists(st.tuples(st.integers(1, 160), st.integers(1, 160)), max_size=12)
patch_st = st.sampled_from([8, 16, 32])


def _packing(sizes, p, extra, order="given", drop_rate=0.0, seed=0):
    biggest = max(((w // p) * (h // p) for w, h in sizes), default=1)
    return pack(sizes, max(1, biggest) + extra, patch_size=p, order=order, drop_rate=drop_rate, seed=seed)


def _reference_groups(counts, max_seq_len):
    """A transcription of vit-pytorch's group_images_by_max_seq_len, on token counts."""
    groups, group, seq_len = [], [], 0
    for index, n in enumerate(counts):
        assert n <= max_seq_len
        if (seq_len + n) > max_seq_len:
            groups.append(group)
            group, seq_len = [], 0
        group.append(index)
        seq_len += n
    if len(group) > 0:
        groups.append(group)
    return groups


@given(sizes_st, patch_st, st.integers(0, 300), st.sampled_from([0.0, 0.25, 0.5, 0.9]))
def test_given_order_equals_reference_grouping(sizes, p, extra, q):
    packing = _packing(sizes, p, extra, drop_rate=q)
    counts = [int((w // p) * (h // p) * (1 - q)) for w, h in sizes]
    assert [[i for i, _ in s] for s in packing.sequences] == _reference_groups(counts, packing.max_seq_len)


@given(sizes_st, patch_st, st.integers(0, 300), st.sampled_from(ORDERS))
def test_every_item_appears_exactly_once(sizes, p, extra, order):
    packing = _packing(sizes, p, extra, order)
    assert sorted(i for seq in packing.sequences for i, _ in seq) == list(range(len(sizes)))


@given(sizes_st, patch_st, st.integers(0, 300), st.sampled_from(ORDERS))
def test_no_sequence_exceeds_max_seq_len(sizes, p, extra, order):
    packing = _packing(sizes, p, extra, order)
    assert all(length <= packing.max_seq_len for length in packing.lengths)


@given(sizes_st, patch_st, st.integers(0, 300))
def test_first_fit_decreasing_never_needs_more_sequences_than_next_fit_decreasing(sizes, p, extra):
    # FFD can lose to a lucky given order (see above), never to the reference's greedy on the same sorted order.
    ffd = _packing(sizes, p, extra, "first-fit-decreasing")
    ordered = sorted(sizes, key=lambda s: -(s[0] // p) * (s[1] // p))
    assert len(ffd.sequences) <= len(_packing(ordered, p, extra).sequences)


@given(sizes_st, patch_st, st.integers(0, 300), st.sampled_from(ORDERS))
def test_padding_and_utilization_add_up(sizes, p, extra, order):
    packing = _packing(sizes, p, extra, order)
    capacity = len(packing.sequences) * packing.max_seq_len
    assert packing.padding_tokens + packing.real_tokens == capacity
    assert packing.utilization == pytest.approx(packing.real_tokens / capacity if capacity else 0.0)


@settings(max_examples=40)
@given(sizes_st, patch_st, st.integers(0, 100), st.sampled_from(ORDERS))
def test_mask_is_symmetric_block_diagonal_with_sum_of_squares_entries(sizes, p, extra, order):
    packing = _packing(sizes, p, extra, order)
    for s, seq in enumerate(packing.sequences):
        mask, ids = packing.attention_mask(s), packing.image_ids(s)
        assert mask.shape == (packing.max_seq_len, packing.max_seq_len)
        assert (mask == mask.T).all()
        assert mask.sum() == sum(n * n for _, n in seq)
        rows, cols = np.nonzero(mask)
        assert (ids[rows] == ids[cols]).all() and (ids[rows] >= 0).all()


@settings(max_examples=40)
@given(sizes_st, patch_st, st.integers(0, 100))
def test_padding_tokens_attend_nothing_and_have_no_position(sizes, p, extra):
    packing = _packing(sizes, p, extra)
    for s, length in enumerate(packing.lengths):
        mask, pos, ids = packing.attention_mask(s), packing.position_ids(s), packing.image_ids(s)
        assert not mask[length:].any() and not mask[:, length:].any()
        assert (pos[length:] == -1).all() and (ids[length:] == -1).all()


@settings(max_examples=40)
@given(sizes_st, patch_st, st.integers(0, 100), st.sampled_from(ORDERS))
def test_positions_cover_each_grid_once_without_dropping(sizes, p, extra, order):
    packing = _packing(sizes, p, extra, order)
    for s, seq in enumerate(packing.sequences):
        pos, ids = packing.position_ids(s), packing.image_ids(s)
        for i, _ in seq:
            rows, cols = packing.items[i].grid
            mine = sorted(map(tuple, pos[ids == i].tolist()))
            assert mine == [(r, c) for r in range(rows) for c in range(cols)]


@settings(max_examples=40)
@given(sizes_st, patch_st, st.integers(0, 100), st.sampled_from([0.1, 0.5, 0.9]), st.integers(0, 5))
def test_dropped_positions_are_sorted_unique_and_inside_the_grid(sizes, p, extra, q, seed):
    packing = _packing(sizes, p, extra, drop_rate=q, seed=seed)
    for s, seq in enumerate(packing.sequences):
        pos, ids = packing.position_ids(s), packing.image_ids(s)
        for i, _ in seq:
            item = packing.items[i]
            mine = [tuple(rc) for rc in pos[ids == i].tolist()]
            assert len(mine) == item.kept_tokens
            assert mine == sorted(set(mine))
            assert all(0 <= r < item.grid[0] and 0 <= c < item.grid[1] for r, c in mine)


def test_dropped_positions_follow_the_seed():
    sizes = [(160, 160)] * 2
    first, again, other = (pack(sizes, 200, 16, drop_rate=0.5, seed=s) for s in (0, 0, 1))
    assert first.kept_positions(0) == again.kept_positions(0)
    assert first.kept_positions(0) != other.kept_positions(0)
    assert first.kept_positions(0) != first.kept_positions(1)  # same size, own draw


@given(sizes_st, patch_st, st.integers(0, 300), st.sampled_from(ORDERS))
def test_spans_tile_each_sequence_in_order(sizes, p, extra, order):
    packing = _packing(sizes, p, extra, order)
    for s, seq in enumerate(packing.sequences):
        spans = packing.spans(s)
        assert [i for i, _, _ in spans] == [i for i, _ in seq]
        assert [stop - start for _, start, stop in spans] == [n for _, n in seq]
        assert all(a[2] == b[1] for a, b in zip(spans, spans[1:]))


# ---------------------------------------------------------------------------------------------------------------
# Costs and serialisation


def test_padded_batch_stats_pads_every_image_to_the_longest():
    stats = padded_batch_stats([100, 40, 60])
    assert (stats.rows, stats.row_len, stats.total_tokens) == (3, 100, 300)
    assert (stats.real_tokens, stats.padding_tokens, stats.utilization) == (200, 100, 200 / 300)
    assert stats.attention_cost == 3 * 100**2


def test_packing_attention_cost_is_block_diagonal_work():
    packing = pack([(10, 10), (4, 1), (6, 1)], max_seq_len=110, patch_size=1)
    assert packing.attention_cost == 100**2 + 4**2 + 6**2
    assert packing.dense_attention_cost == 110**2
    assert packing.stats().attention_cost == packing.attention_cost


def test_to_dict_is_json_serialisable():
    packing = pack([(640, 480), (320, 320), (8, 8)], 2048, drop_rate=0.25, order="first-fit-decreasing")
    data = json.loads(json.dumps(packing.to_dict()))
    assert data["sequences"] == [[list(entry) for entry in seq] for seq in packing.sequences]
    assert data["items"][2]["tokens"] == 0 and data["empty_items"] == [2]
    assert json.loads(json.dumps(packing.stats().to_dict()))["rows"] == 1


def test_packing_is_frozen():
    packing = pack([(64, 64)], 64)
    with pytest.raises(AttributeError):
        packing.max_seq_len = 1  # type: ignore[misc]
    assert isinstance(packing, Packing)


# ---------------------------------------------------------------------------------------------------------------
# Purity

PACKING_SOURCE = pathlib.Path(__file__).resolve().parents[1] / "gridvlm" / "packing.py"


def test_module_level_imports_are_standard_library_only():
    tree = ast.parse(PACKING_SOURCE.read_text())
    names = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    roots = {name.split(".")[0] for name in names}
    assert roots <= set(sys.stdlib_module_names) | {"__future__", "gridvlm"}


def test_packing_without_arrays_loads_no_heavy_library():
    code = (
        "import sys, gridvlm.packing as m; m.pack([(640, 480)] * 3, 4096).to_dict();"
        "print(sorted(n for n in ('torch', 'PIL', 'gradio', 'numpy') if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKING_SOURCE.parents[1])
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# The packer's steps and the bounds every order obeys


@given(sizes_st, patch_st, st.integers(0, 300), st.sampled_from(ORDERS))
def test_placements_replay_into_the_sequences(sizes, p, extra, order):
    packing = _packing(sizes, p, extra, order)
    replayed: list[list[tuple[int, int]]] = []
    for step in packing.placements():
        assert step.opened == (step.sequence == len(replayed))
        if step.opened:
            replayed.append([])
        replayed[step.sequence].append((step.item, step.tokens))
        assert list(step.lengths) == [sum(n for _, n in seq) for seq in replayed]
    assert replayed == packing.sequences


@given(sizes_st, patch_st, st.integers(0, 300))
def test_placements_walk_the_images_in_the_orders_own_order(sizes, p, extra):
    given_steps = _packing(sizes, p, extra).placements()
    assert [s.item for s in given_steps] == list(range(len(sizes)))
    ffd_tokens = [s.tokens for s in _packing(sizes, p, extra, "first-fit-decreasing").placements()]
    assert ffd_tokens == sorted(ffd_tokens, reverse=True)


@given(st.lists(st.integers(1, 64), max_size=14), st.integers(0, 64), st.sampled_from(ORDERS))
def test_no_order_beats_the_token_bound(counts, extra, order):
    L = max(counts, default=1) + extra
    packing = pack([(n, 1) for n in counts], L, patch_size=1, order=order)
    assert len(packing.sequences) >= -(-sum(counts) // L) == packing.sequence_lower_bound


@given(st.lists(st.integers(1, 64), max_size=14), st.integers(0, 64))
def test_first_fit_leaves_no_two_sequences_that_would_fit_in_one(counts, extra):
    # First fit opens a sequence only when the image fits in no earlier one, so any two sequences overflow together.
    L = max(counts, default=1) + extra
    lengths = pack([(n, 1) for n in counts], L, patch_size=1, order="first-fit-decreasing").lengths
    assert all(a + b > L for k, a in enumerate(lengths) for b in lengths[k + 1:])


@given(st.lists(st.integers(1, 64), max_size=14), st.integers(0, 64))
def test_the_given_order_leaves_no_two_neighbours_that_would_fit_in_one(counts, extra):
    L = max(counts, default=1) + extra
    lengths = pack([(n, 1) for n in counts], L, patch_size=1).lengths
    assert all(a + b > L for a, b in zip(lengths, lengths[1:]))


# ---------------------------------------------------------------------------------------------------------------
# Packing vs padding vs tiling at the same tokens per image

from gridvlm import plan  # noqa: E402
from gridvlm.packing import compare_layouts, resized_grid  # noqa: E402

image_sizes_st = st.tuples(st.integers(1, 6000), st.integers(1, 6000))


@given(image_sizes_st, st.sampled_from([14, 16, 32]), st.integers(1, 20_000))
def test_resized_grid_fits_the_budget_and_cannot_grow_both_ways(size, p, tokens):
    rows, cols = resized_grid(size, p, tokens)
    assert 1 <= rows * cols <= tokens
    if (size[1] // p) * (size[0] // p) < tokens:  # enlarged: one more row and column would not fit
        assert (rows + 1) * (cols + 1) > tokens


@given(st.integers(64, 6000), st.integers(64, 6000), st.integers(400, 20_000))
def test_resized_grid_keeps_the_aspect_ratio(w, h, tokens):
    rows, cols = resized_grid((w, h), 16, tokens)
    if min(rows, cols) >= 20:  # a one-patch rounding moves a side by at most 1/20
        assert abs(math.log((cols / rows) / (w / h))) < 0.11


@given(image_sizes_st, st.integers(1, 20_000))
def test_resized_grid_shrinks_as_navit_plans_do(size, tokens):
    if (size[1] // 16) * (size[0] // 16) >= tokens:
        assert resized_grid(size, 16, tokens) == plan(size, "navit", max_tokens=tokens).tiles[0].token_grid


LAYOUT_CASES = [  # (sizes, tiling, max_seq_len, cap, order, drop_rate)
    ([(1024, 768), (147, 144), (2560, 853)], "llava-next", 8192, None, "given", 0.0),
    ([(1760, 940), (256, 256), (300, 200), (800, 800)], "qwen2-vl", 4096, None, "first-fit-decreasing", 0.0),
    ([(1024, 768), (640, 480), (4032, 3024)], "internvl", 4096, 1000, "given", 0.5),
]


@pytest.mark.parametrize("sizes, tiling, L, cap, order, q", LAYOUT_CASES)
def test_compare_layouts_tiles_with_the_strategy_and_matches_navit_to_it(sizes, tiling, L, cap, order, q):
    found = compare_layouts(sizes, tiling, L, max_tokens_per_image=cap, order=order, drop_rate=q)
    expected = [gridvlm.fit_budget(s, tiling, cap) if cap else plan(s, tiling) for s in sizes]
    assert [p.token_count for p in found.tiled] == [p.token_count for p in expected]
    for p, item in zip(expected, found.packing.items):
        rows, cols = item.grid
        assert item.size == (cols * 16, rows * 16) and item.tokens == rows * cols <= p.token_count
        assert item.counted_tokens == int(item.tokens * (1 - q))
    assert found.other_order.order != found.packing.order
    assert sorted(found.other_order.to_dict()["items"], key=str) == sorted(found.packing.to_dict()["items"], key=str)


@pytest.mark.parametrize("sizes, tiling, L, cap, order, q", LAYOUT_CASES)
def test_compare_layouts_costs_equal_the_arithmetic_of_their_token_counts(sizes, tiling, L, cap, order, q):
    found = compare_layouts(sizes, tiling, L, max_tokens_per_image=cap, order=order, drop_rate=q)
    navit = [item.counted_tokens for item in found.packing.items]
    tiled = [p.token_count for p in found.tiled]
    rows = len(found.packing.sequences)
    packed, padded, tiled_batch = found.layouts().values()
    assert (packed.rows, packed.row_len, packed.padding_tokens) == (rows, L, rows * L - sum(navit))
    assert packed.attention_cost == sum(n * n for n in navit)
    assert (padded.rows, padded.row_len, padded.padding_tokens) == (len(sizes), max(navit),
                                                                     len(sizes) * max(navit) - sum(navit))
    assert padded.attention_cost == len(sizes) * max(navit) ** 2
    assert (tiled_batch.row_len, tiled_batch.real_tokens) == (max(tiled), sum(tiled))


def test_a_set_where_first_fit_decreasing_wins_says_so():
    # NaViT tokens 2400, 2400, 1200, 1200 (resized to match the tiling plan) into 4096: in order 2400 | 2400+1200 |
    # 1200, largest first 2400+1200 | 2400+1200.
    sizes = [(960, 640), (960, 640), (480, 640), (480, 640)]
    found = compare_layouts(sizes, "navit", 4096, patch_size=16, order="given")
    assert [item.tokens for item in found.packing.items] == [2400, 2400, 1200, 1200]
    assert (len(found.packing.sequences), len(found.other_order.sequences)) == (3, 2)
    assert "Order matters here: first-fit-decreasing needs 2 sequences" in found.explanation()[-1]


def test_where_both_orders_reach_the_bound_the_sentence_says_no_order_can_do_better():
    found = compare_layouts([(320, 320)] * 3, "navit", 1000, patch_size=16)  # 400 tokens each: 2 sequences
    assert len(found.packing.sequences) == len(found.other_order.sequences) == 2
    assert "the fewest possible" in found.explanation()[-1]


def test_an_image_over_max_seq_len_names_it_and_the_tiling_strategy():
    with pytest.raises(PlanError, match=r"photo\.jpg gets 2,255 NaViT tokens .*llava-next.* at least 2,255"):
        compare_layouts([(4032, 3024)], "llava-next", 1024, names=["photo.jpg"])


def test_comparison_to_dict_is_json_serialisable():
    found = compare_layouts([(1024, 768), (147, 144)], "llava-next", 8192)
    data = json.loads(json.dumps(found.to_dict()))
    assert list(data["layouts"]) == list(found.layouts())
    assert [row["navit_tokens"] for row in data["images"]] == [item.tokens for item in found.packing.items]


from gridvlm.packing import fewest_sequences  # noqa: E402


def _best_next_fit_over_every_order(counts, L):
    # Any packing is next-fit of some order (list its sequences one after another), so the minimum over all
    # orders of the reference's grouping is the true optimum.
    return min((len(_reference_groups(list(order), L)) for order in itertools.permutations(counts)), default=0)


@given(st.lists(st.integers(1, 40), max_size=6), st.integers(0, 40))
def test_fewest_sequences_is_the_best_any_order_reaches(counts, extra):
    L = max(counts, default=1) + extra
    assert fewest_sequences(counts, L) == _best_next_fit_over_every_order(counts, L)


def test_fewest_sequences_gives_up_beyond_its_image_limit():
    assert fewest_sequences([1] * 13, 4) is None and fewest_sequences([1] * 12, 4) == 3


def test_where_an_order_beats_both_packers_the_sentence_says_so():
    counts = [4, 4, 3, 3, 3, 3]  # optimum 4+3+3 | 4+3+3; given 4+4 | 3+3+3 | 3; FFD 4+4 | 3+3+3 | 3
    sizes = [(n * 16, 16) for n in counts]
    found = compare_layouts(sizes, "navit", 10, patch_size=16)
    assert [item.tokens for item in found.packing.items] == counts
    assert len(found.packing.sequences) == len(found.other_order.sequences) == 3
    assert "an order exists that needs only 2" in found.explanation()[-1]

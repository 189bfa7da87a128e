"""NaViT patch-n'-pack: which images share a sequence, and the masks and positions inside it.

Reference: lucidrains/vit-pytorch ``vit_pytorch/na_vit.py`` (``group_images_by_max_seq_len`` and ``NaViT.forward``).
Each image is cut into ``(h // p) * (w // p)`` patches, with no resizing; several images are concatenated into one
sequence of at most ``max_seq_len`` tokens, and a block-diagonal mask keeps every image attending only to itself.

Pure: standard library only. ``attention_mask``, ``position_ids`` and ``image_ids`` return numpy arrays and import
numpy when called; everything else (grouping, counts, costs, ``to_dict``) needs nothing outside the standard library.

Two reference details that look like bugs but are reproduced on purpose:

* The reference needs sides divisible by ``p`` and asserts otherwise; gridvlm crops the remainder instead, so
  every size gets ``floor`` rounding (337×337 at p = 16 → 21×21 patches, 1×1 → 0 patches).
* Token dropping (drop rate q): the grouping *counts* ``int(n·(1−q))`` tokens but the forward *keeps*
  ``max(1, int(n·(1−q)))``. For a tiny image (``0 < n·(1−q) < 1``) the packer counts 0 while the model feeds 1
  token, so a sequence can really hold more tokens than the packer budgeted. ``Packing`` groups and reports
  budgets with the counted number (as the reference does) and lays out the kept tokens in its arrays; when the
  off-by-one overflows a sequence, the arrays grow to ``padded_len`` instead of silently dropping tokens.

``compare_layouts`` puts the same images side by side packed, padded to the longest and tiled by a strategy, each
image at (nearly) the same token count in all three — the Pack tab's and ``gridvlm pack --tiling``'s numbers.

Images with zero patches (a side shorter than ``p``) stay in the packing — the reference's grouping appends them
like any other image — with 0 tokens: they appear in ``sequences`` with ``n = 0``, own no token position in the
arrays, and are listed in ``Packing.empty_items`` so a UI can say so.
"""

from __future__ import annotations

import operator
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from gridvlm.errors import PlanError

if TYPE_CHECKING:
    from gridvlm.geometry import Plan

ORDERS = ("given", "first-fit-decreasing")
"""``given``: the reference's greedy in-order grouping. ``first-fit-decreasing``: largest first, each into the
first sequence with room — fewer sequences in practice, though not on every input."""


# ---------------------------------------------------------------------------------------------------------------
# Pure token arithmetic


def patch_grid(size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """``(rows, cols)`` of ``patch_size``-pixel patches in a ``(w, h)`` image, remainder cropped.

    ``rows = h // p``, ``cols = w // p``; either is 0 when that side is shorter than one patch.
    """
    w, h = size
    return h // patch_size, w // patch_size


def token_dropout_counts(tokens: int, drop_rate: float) -> tuple[int, int]:
    """``(counted, kept)``: tokens the reference's grouping counts, and tokens its forward keeps.

    counted = ``int(n·(1−q))`` (``group_images_by_max_seq_len``); kept = ``max(1, int(n·(1−q)))`` (``forward``).
    With q = 0 the forward keeps all ``n`` tokens and never applies the ``max(1, …)``. Kept is the reference
    formula even for n = 0, where the reference's forward has nothing to keep and fails; ``pack`` clamps it to n.
    The float expression is the reference's, so rounding matches it bit for bit.
    """
    if drop_rate == 0:
        return tokens, tokens
    counted = int(tokens * (1 - drop_rate))
    return counted, max(1, counted)


# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class PackedItem:
    """One input of ``pack`` and its token counts."""

    index: int  # position in the ``items`` given to pack()
    size: tuple[int, int] | None  # (w, h) pixels; None for a plan that does not say
    grid: tuple[int, int]  # (rows, cols) of patches
    tokens: int  # rows * cols, before any dropping
    counted_tokens: int  # what the grouping budgets: int(tokens * (1 - q))
    kept_tokens: int  # what the forward feeds: max(1, counted), at most tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "size": list(self.size) if self.size is not None else None,
            "grid": list(self.grid),
            "tokens": self.tokens,
            "counted_tokens": self.counted_tokens,
            "kept_tokens": self.kept_tokens,
        }


@dataclass(frozen=True)
class BatchStats:
    """Cost of one batch of equal-length rows, for comparing packing with padding every image to the longest."""

    rows: int  # sequences in the batch
    row_len: int  # tokens per row, padding included
    real_tokens: int  # image tokens, padding excluded
    padding_tokens: int  # rows * row_len - real_tokens
    utilization: float  # real_tokens / (rows * row_len); 0.0 for an empty batch
    attention_cost: int  # query-key pairs the attention must score (FLOPs proxy)
    dense_attention_cost: int  # rows * row_len², what a kernel that ignores the mask scores

    @property
    def total_tokens(self) -> int:
        """Token positions in the batch, padding included."""
        return self.rows * self.row_len

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "row_len": self.row_len,
            "total_tokens": self.total_tokens,
            "real_tokens": self.real_tokens,
            "padding_tokens": self.padding_tokens,
            "utilization": self.utilization,
            "attention_cost": self.attention_cost,
            "dense_attention_cost": self.dense_attention_cost,
        }


def padded_batch_stats(token_counts: Sequence[int]) -> BatchStats:
    """Cost of the tiling-style batch: one row per image, every row padded to the longest image.

    attention_cost = Σ L² over rows (L = the longest count), i.e. the padded positions are computed too.
    """
    counts = [_nonnegative_int(n, "token count") for n in token_counts]
    rows = len(counts)
    row_len = max(counts, default=0)
    real = sum(counts)
    total = rows * row_len
    return BatchStats(
        rows=rows,
        row_len=row_len,
        real_tokens=real,
        padding_tokens=total - real,
        utilization=real / total if total else 0.0,
        attention_cost=rows * row_len**2,
        dense_attention_cost=rows * row_len**2,
    )


@dataclass(frozen=True)
class Placement:
    """One step of the packer: where one image went."""

    step: int  # 0-based, in the order the packer considers the images
    item: int  # the image's index in the items given to pack()
    tokens: int  # its counted tokens
    sequence: int  # the sequence it went into
    opened: bool  # True when it started that sequence (it fitted in no earlier one the packer tried)
    lengths: tuple[int, ...]  # counted tokens per sequence after this step


@dataclass(frozen=True)
class Packing:
    """Images grouped into sequences of at most ``max_seq_len`` tokens.

    ``sequences[s]`` is a list of ``(item_index, n_tokens)`` in sequence order, with ``n_tokens`` the *counted*
    tokens (the reference's budget). All aggregate numbers (``lengths``, ``padding_tokens``, ``utilization``,
    ``attention_cost``) use counted tokens. The per-token arrays (``image_ids``, ``position_ids``,
    ``attention_mask``, ``spans``) lay out the *kept* tokens — what the model's forward actually sees.
    """

    items: tuple[PackedItem, ...]  # one per input, in input order
    sequences: list[list[tuple[int, int]]]  # per sequence: (item_index, counted tokens)
    max_seq_len: int  # token budget per sequence
    patch_size: int  # pixels per patch side
    order: str = "given"  # one of ORDERS
    drop_rate: float = 0.0  # token dropout q in [0, 1)
    seed: int = 0  # picks which tokens are kept when q > 0

    # -- aggregate numbers ---------------------------------------------------------------------------------------

    @property
    def lengths(self) -> list[int]:
        """Counted tokens per sequence (each ``<= max_seq_len``)."""
        return [sum(n for _, n in seq) for seq in self.sequences]

    @property
    def real_tokens(self) -> int:
        """Counted image tokens over all sequences."""
        return sum(self.lengths)

    @property
    def padding_tokens(self) -> int:
        """Σ over sequences of ``max_seq_len - length``."""
        return len(self.sequences) * self.max_seq_len - self.real_tokens

    @property
    def utilization(self) -> float:
        """Real tokens / (sequences × max_seq_len); 0.0 when there is nothing to pack."""
        total = len(self.sequences) * self.max_seq_len
        return self.real_tokens / total if total else 0.0

    @property
    def attention_cost(self) -> int:
        """Σ over sequences of Σ_i n_i²: the query-key pairs of the block-diagonal mask (FLOPs proxy)."""
        return sum(n * n for seq in self.sequences for _, n in seq)

    @property
    def dense_attention_cost(self) -> int:
        """sequences × max_seq_len²: what attention scores when it ignores the mask."""
        return len(self.sequences) * self.max_seq_len**2

    @property
    def empty_items(self) -> tuple[int, ...]:
        """Indices of items with no whole patch (a side shorter than ``patch_size``): 0 tokens, no positions."""
        return tuple(item.index for item in self.items if item.tokens == 0)

    @property
    def kept_lengths(self) -> tuple[int, ...]:
        """Tokens per sequence as the forward lays them out (kept, not counted)."""
        return tuple(sum(self.items[i].kept_tokens for i, _ in seq) for seq in self.sequences)

    @property
    def padded_len(self) -> int:
        """Length of the per-token arrays: ``max_seq_len``, or more only when the dropout off-by-one overflows."""
        return max((self.max_seq_len, *self.kept_lengths))

    @property
    def sequence_lower_bound(self) -> int:
        """⌈real tokens / max_seq_len⌉: no order of these images fits them into fewer sequences."""
        return -(-self.real_tokens // self.max_seq_len)

    def placements(self) -> tuple[Placement, ...]:
        """The packer's steps, in the order it considered the images: which sequence each one went into.

        ``given`` walks the images in input order; ``first-fit-decreasing`` largest first (ties in input order).
        """
        where = {i: s for s, seq in enumerate(self.sequences) for i, _ in seq}
        counted = {item.index: item.counted_tokens for item in self.items}
        walk = sorted(counted, key=lambda i: -counted[i]) if self.order == "first-fit-decreasing" else list(counted)
        lengths: list[int] = []
        steps = []
        for step, i in enumerate(walk):
            s = where[i]
            opened = s == len(lengths)
            if opened:
                lengths.append(0)
            lengths[s] += counted[i]
            steps.append(Placement(step, i, counted[i], s, opened, tuple(lengths)))
        return tuple(steps)

    def stats(self) -> BatchStats:
        """This packing's cost in the same terms as ``padded_batch_stats``."""
        return BatchStats(
            rows=len(self.sequences),
            row_len=self.max_seq_len,
            real_tokens=self.real_tokens,
            padding_tokens=self.padding_tokens,
            utilization=self.utilization,
            attention_cost=self.attention_cost,
            dense_attention_cost=self.dense_attention_cost,
        )

    # -- token layout (kept tokens) ------------------------------------------------------------------------------

    def kept_positions(self, item_index: int) -> list[tuple[int, int]]:
        """``(row, col)`` of the tokens an item keeps, row-major sorted.

        Without dropping that is the whole grid. With dropping the kept subset is drawn by
        ``random.Random(f"{seed}/{item_index}")``, so it is reproducible and differs between items.
        """
        item = self.items[item_index]
        rows, cols = item.grid
        flat = range(rows * cols)
        if item.kept_tokens < item.tokens:
            flat = sorted(random.Random(f"{self.seed}/{item_index}").sample(flat, item.kept_tokens))
        return [divmod(k, cols) for k in flat]

    def spans(self, seq: int) -> tuple[tuple[int, int, int], ...]:
        """``(item_index, start, stop)`` token ranges of sequence ``seq``; the attention mask's diagonal blocks."""
        out, start = [], 0
        for i, _ in self._sequence(seq):
            stop = start + self.items[i].kept_tokens
            out.append((i, start, stop))
            start = stop
        return tuple(out)

    def image_ids(self, seq: int):
        """Item index of each token of sequence ``seq``, -1 for padding. numpy int64, shape ``(padded_len,)``."""
        import numpy as np

        ids = np.full(self.padded_len, -1, dtype=np.int64)
        for i, start, stop in self.spans(seq):
            ids[start:stop] = i
        return ids

    def position_ids(self, seq: int):
        """``(row, col)`` of each token in its image's patch grid, -1 for padding.

        numpy int64, shape ``(padded_len, 2)``: the indices of NaViT's factorised ``pos_h[row] + pos_w[col]``.
        """
        import numpy as np

        pos = np.full((self.padded_len, 2), -1, dtype=np.int64)
        for i, start, stop in self.spans(seq):
            if stop > start:
                pos[start:stop] = self.kept_positions(i)
        return pos

    def attention_mask(self, seq: int):
        """Block-diagonal mask of sequence ``seq``: True where query and key are tokens of the same image.

        numpy bool, shape ``(padded_len, padded_len)`` (queries, keys); padding rows and columns are all False —
        a softmax over a fully masked row is NaN, so a model must not read padding outputs (or must unmask them).
        """
        ids = self.image_ids(seq)  # (L,)
        return (ids[:, None] == ids[None, :]) & (ids[:, None] >= 0)  # (L, L)

    def _sequence(self, seq: int) -> tuple[tuple[int, int], ...]:
        if not 0 <= seq < len(self.sequences):
            raise IndexError(f"sequence {seq} does not exist; this packing has {len(self.sequences)}")
        return self.sequences[seq]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: inputs, grouping and costs (not the per-token arrays)."""
        return {
            "max_seq_len": self.max_seq_len,
            "patch_size": self.patch_size,
            "order": self.order,
            "drop_rate": self.drop_rate,
            "seed": self.seed,
            "items": [item.to_dict() for item in self.items],
            "sequences": [[[i, n] for i, n in seq] for seq in self.sequences],
            "lengths": list(self.lengths),
            "kept_lengths": list(self.kept_lengths),
            "padding_tokens": self.padding_tokens,
            "utilization": self.utilization,
            "attention_cost": self.attention_cost,
            "dense_attention_cost": self.dense_attention_cost,
            "empty_items": list(self.empty_items),
        }


# ---------------------------------------------------------------------------------------------------------------
# pack()


def pack(
    items: Iterable[Any],
    max_seq_len: int,
    patch_size: int = 16,
    order: str = "given",
    drop_rate: float = 0.0,
    seed: int = 0,
) -> Packing:
    """Group images into sequences of at most ``max_seq_len`` tokens, NaViT style.

    ``items``: ``(w, h)`` sizes, images (anything with a ``.size`` of ``(w, h)``; PIL's EXIF rotation is applied)
    or ``navit`` plans. An image contributes ``(h // p) * (w // p)`` tokens, counted as ``int(n·(1−q))`` with
    token dropping. ``order="given"`` is the reference's greedy grouping (a new sequence whenever the next image
    does not fit the current one); ``"first-fit-decreasing"`` places the largest images first, each into the
    first sequence with room. ``seed`` only decides which tokens are kept when ``drop_rate > 0``.
    """
    max_seq_len = _positive_int(max_seq_len, "max_seq_len")
    patch_size = _positive_int(patch_size, "patch_size")
    if order not in ORDERS:
        raise PlanError(f"order={order!r} is not a packing order; use one of {', '.join(map(repr, ORDERS))}")
    drop_rate = _drop_rate(drop_rate)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PlanError(f"seed={seed!r} must be an integer")
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise PlanError(f"items must be a list of (w, h) sizes, images or navit plans, not {items!r}")

    packed = tuple(_packed_item(k, item, patch_size, drop_rate) for k, item in enumerate(items))
    for item in packed:
        if item.counted_tokens > max_seq_len:
            raise PlanError(
                f"item {item.index} ({_describe(item)}) has {item.counted_tokens} tokens at patch_size="
                f"{patch_size}, more than max_seq_len={max_seq_len}; raise max_seq_len to at least "
                f"{item.counted_tokens}, use a larger patch_size or downscale that image"
            )

    counts = [(item.index, item.counted_tokens) for item in packed]
    groups = _group_in_order(counts, max_seq_len) if order == "given" else _first_fit_decreasing(counts, max_seq_len)
    return Packing(
        items=packed,
        sequences=[list(g) for g in groups],
        max_seq_len=max_seq_len,
        patch_size=patch_size,
        order=order,
        drop_rate=drop_rate,
        seed=seed,
    )


def _group_in_order(counts: list[tuple[int, int]], max_seq_len: int) -> list[list[tuple[int, int]]]:
    """The reference's ``group_images_by_max_seq_len``: next-fit in the given order."""
    groups: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    length = 0
    for index, n in counts:
        if length + n > max_seq_len:
            groups.append(current)
            current, length = [], 0
        current.append((index, n))
        length += n
    if current:
        groups.append(current)
    return groups


def _first_fit_decreasing(counts: list[tuple[int, int]], max_seq_len: int) -> list[list[tuple[int, int]]]:
    """Largest first (ties keep input order), each into the first sequence with room."""
    groups: list[list[tuple[int, int]]] = []
    lengths: list[int] = []
    for index, n in sorted(counts, key=lambda c: -c[1]):
        for g, length in enumerate(lengths):
            if length + n <= max_seq_len:
                groups[g].append((index, n))
                lengths[g] += n
                break
        else:
            groups.append([(index, n)])
            lengths.append(n)
    return groups


# ---------------------------------------------------------------------------------------------------------------
# Input checking


def _packed_item(index: int, item: Any, patch_size: int, drop_rate: float) -> PackedItem:
    size: tuple[int, int] | None
    if hasattr(item, "strategy") and hasattr(item, "tiles"):
        size, grid = _plan_grid(index, item, patch_size)
    else:
        size = _item_size(index, item)
        grid = patch_grid(size, patch_size)
    tokens = grid[0] * grid[1]
    counted, kept = token_dropout_counts(tokens, drop_rate)
    return PackedItem(index, size, grid, tokens, counted, min(kept, tokens))


def _plan_grid(index: int, plan: Any, patch_size: int) -> tuple[tuple[int, int] | None, tuple[int, int]]:
    if plan.strategy != "navit":
        raise PlanError(
            f"item {index} is a {plan.strategy!r} plan; only 'navit' plans can be packed — pass the image size "
            f"instead, or plan it with plan(size, 'navit', patch_size={patch_size})"
        )
    params = getattr(plan, "params", None) or {}
    plan_patch = params.get("patch_size", patch_size) if isinstance(params, dict) else patch_size
    if plan_patch != patch_size:
        raise PlanError(
            f"item {index} was planned with patch_size={plan_patch} but pack() was given patch_size={patch_size}; "
            f"pass patch_size={plan_patch}"
        )
    if not plan.tiles:
        raise PlanError(f"item {index} is a navit plan without tiles; make it with plan(size, 'navit')")
    rows, cols = (_nonnegative_int(v, f"item {index}'s token_grid") for v in plan.tiles[0].token_grid)
    if rows * cols != plan.token_count:
        raise PlanError(
            f"item {index}'s navit plan says {plan.token_count} tokens but its token_grid {rows}×{cols} "
            f"holds {rows * cols}; rebuild the plan"
        )
    size = getattr(plan, "image_size", None)
    return (tuple(size) if size is not None else None), (rows, cols)


def _item_size(index: int, item: Any) -> tuple[int, int]:
    """``(w, h)`` of a size tuple or an image; PIL's EXIF orientation 5–8 swaps the sides, as upright loading does."""
    is_image = hasattr(item, "size") and not isinstance(item, (tuple, list))
    raw = item.size if is_image else item
    try:
        w, h = raw
        if isinstance(w, bool) or isinstance(h, bool):
            raise TypeError
        w, h = operator.index(w), operator.index(h)
    except (TypeError, ValueError):
        raise PlanError(
            f"item {index} is {_short_repr(item)}; pack() takes (width, height) pairs of whole pixels, images "
            f"(with a .size) or navit plans — to pack one image, pass a list: [(w, h)]"
        ) from None
    if w < 1 or h < 1:
        raise PlanError(f"item {index} has size {w}×{h}; width and height must be at least 1 pixel")
    if is_image and _exif_orientation(item) in (5, 6, 7, 8):  # rotated by ±90°: upright w/h are swapped
        w, h = h, w
    return w, h


def _exif_orientation(image: Any) -> int | None:
    getexif = getattr(image, "getexif", None)
    if getexif is None:
        return None
    orientation = getexif().get(0x0112)  # the EXIF Orientation tag
    return orientation if isinstance(orientation, int) else None


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(f"{name}={value!r} must be a whole number of at least 1")
    return value


def _nonnegative_int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise PlanError(f"{name} {value!r} must be a whole number") from None
    if n < 0:
        raise PlanError(f"{name} {n} must not be negative")
    return n


def _drop_rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise PlanError(f"drop_rate={value!r} must be a fraction in [0, 1): 0 keeps every token, 0.5 half")
    return float(value)


def _describe(item: PackedItem) -> str:
    rows, cols = item.grid
    size = f"{item.size[0]}×{item.size[1]} px, " if item.size is not None else ""
    return f"{size}{rows}×{cols} patches"


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------------------------
# Packing vs padding vs tiling, at the same tokens per image


def resized_grid(size: tuple[int, int], patch_size: int, tokens: int) -> tuple[int, int]:
    """``(rows, cols)``: a patch grid of at most ``tokens`` patches with the image's aspect ratio.

    The image is resized up or down (enlarged, no grid a row and a column larger fits): ``s = √(tokens / (w·h))`` patches per pixel side, ``rows = ⌊h·s⌋``,
    ``cols = ⌊w·s⌋`` (at least 1 each), then one row or column off the longer side until it fits. When the image
    has more own patches than ``tokens``, NaViT's budget rule (``plan(size, 'navit', max_tokens=tokens)``) is used
    instead, so a shrunk image gets the grid the Slice tab shows for it. ``patch_size`` only matters there.
    """
    from .strategies.native import navit_grid

    w, h = size
    if (h // patch_size) * (w // patch_size) >= tokens:
        rows, cols, _ = navit_grid(w, h, patch_size, tokens)
        return rows, cols
    s = (tokens / (w * h)) ** 0.5
    rows, cols = max(1, int(h * s)), max(1, int(w * s))
    while rows * cols > tokens:
        if rows >= cols:
            rows -= 1
        else:
            cols -= 1
    return rows, cols


FEWEST_SEQUENCES_MAX_IMAGES = 12  # exact search up to this many images (instant there; exponential beyond)


def fewest_sequences(counts: Sequence[int], max_seq_len: int) -> int | None:
    """The fewest sequences of ``max_seq_len`` that hold images of these token counts, found by exhaustive search
    (bin packing, exactly); None for more than ``FEWEST_SEQUENCES_MAX_IMAGES`` images. Every count must fit."""
    if len(counts) > FEWEST_SEQUENCES_MAX_IMAGES:
        return None
    items = sorted(counts, reverse=True)
    bound = -(-sum(items) // max_seq_len)
    best = len(items)

    def place(k: int, lengths: list[int]) -> None:
        nonlocal best
        if len(lengths) >= best:
            return
        if k == len(items):
            best = len(lengths)
            return
        tried = set()
        for s, length in enumerate(lengths):
            if length + items[k] <= max_seq_len and length not in tried:  # equal lengths are the same choice
                tried.add(length)
                lengths[s] += items[k]
                place(k + 1, lengths)
                lengths[s] -= items[k]
                if best == bound:
                    return
        lengths.append(items[k])
        place(k + 1, lengths)
        lengths.pop()

    place(0, [])
    return best


@dataclass(frozen=True)
class LayoutComparison:
    """The same images three ways, each image at (nearly) the same token count in all three.

    ``tiled[k]`` is image k under the tiling strategy; NaViT resizes image k (aspect kept, up or down) to at most
    ``tiled[k].token_count`` patches, and those tokens are both packed (``packing``) and padded to the longest
    image (``padded``). ``other_order`` packs the same tokens in the other order, to show what the order costs.
    """

    sizes: tuple[tuple[int, int], ...]  # (w, h) of each original image
    tiling: str  # the tiling strategy's name
    max_tokens_per_image: int | None  # the shared cap the tiling plans were fitted to; None = its defaults
    tiled: tuple[Plan, ...]  # the tiling strategy's plan of each image
    packing: Packing  # NaViT tokens of each image, packed in the chosen order
    other_order: Packing  # the same, packed in the other order

    @property
    def packed(self) -> BatchStats:
        """Packed sequences of max_seq_len."""
        return self.packing.stats()

    @property
    def padded(self) -> BatchStats:
        """The same NaViT tokens, one row per image, padded to the longest."""
        return padded_batch_stats([item.counted_tokens for item in self.packing.items])

    @property
    def tiled_batch(self) -> BatchStats:
        """The tiling strategy's visual tokens, one row per image, padded to the longest."""
        return padded_batch_stats([p.token_count for p in self.tiled])

    @property
    def tiled_padding_share(self) -> float:
        """Share of the tiling plans' view tokens that look at padded pixels: Σ padding·tokens / Σ tokens over
        every view (a view's ``padding`` is its padded share of input pixels)."""
        views = [v for p in self.tiled for v in p.views]
        total = sum(v.token_count for v in views)
        return sum(v.padding * v.token_count for v in views) / total if total else 0.0

    def layouts(self) -> dict[str, BatchStats]:
        """Layout name -> its cost, in the order the app's table shows them."""
        return {"NaViT packing": self.packed, "NaViT, padded batch": self.padded,
                f"{self.tiling}, padded batch": self.tiled_batch}

    def explanation(self) -> list[str]:
        """What the numbers mean, a paragraph each: packing vs padding (and why packing loses when it does), what
        the tokens are, what tiling adds, what the order changes."""
        packed, padded, tiled = self.packed, self.padded, self.tiled_batch
        if not self.sizes or not packed.real_tokens:
            return ["There are no image tokens to pack."]
        counts = [item.counted_tokens for item in self.packing.items if item.counted_tokens]
        spread = max(counts) / min(counts)
        n_seq = f"{packed.rows} sequence{'s' * (packed.rows != 1)}"
        lines = [
            f"Packing wastes {1 - packed.utilization:.1%} of its {n_seq} on padding where a batch padded to the "
            f"longest image wastes {1 - padded.utilization:.1%}: "
            + (f"the images' token counts differ by up to {spread:.1f}×, and every row is as long as the longest."
               if spread > 1 else "all images have the same token count, so padding to the longest costs nothing "
               "and packing can only lose the end of each sequence.")
        ]
        if packed.utilization < padded.utilization:
            lines.append(self._why_packing_loses())
        budget = (f"at most {self.max_tokens_per_image:,} tokens per image" if self.max_tokens_per_image else
                  "its default parameters")
        lines.append(
            f"Like with like: each image gets as many NaViT tokens as {self.tiling} gives it ({budget}) — NaViT here "
            f"resizes it, aspect kept, to at most that many {self.packing.patch_size}-px patches (the real NaViT "
            f"never resizes) — {self.packing.real_tokens:,} tokens in all vs {tiled.real_tokens:,} for "
            f"{self.tiling}; the differences between the rows come from the layout, not from the token counts."
        )
        if self.packing.drop_rate:
            lines[-1] += f" Token dropping ({self.packing.drop_rate:g}) then removes NaViT tokens before packing."
        share = self.tiled_padding_share
        spends = (f"spends {share:.1%} of its view tokens on padded pixels inside its views" if share else
                  "spends no view tokens on padded pixels")
        lines.append(
            f"{self.tiling} {spends}, and padding its batch to the longest image wastes another "
            f"{1 - tiled.utilization:.1%} of the batch."
        )
        lines.append(self._order_sentence())
        return lines

    def _why_packing_loses(self) -> str:
        p = self.packing
        tail = p.max_seq_len - min(p.lengths)
        text = (f"Packing loses here because there are few images for sequences this long: {tail:,} of its "
                f"{p.padding_tokens:,} padding tokens are the unfilled end of its emptiest sequence")
        gaps = p.padding_tokens - tail
        text += f", {gaps:,} are left at the ends of the other sequences" if gaps else ""
        fit_all = -(-p.real_tokens // 1024) * 1024  # one sequence, rounded up to a multiple of 1024
        if fit_all < p.max_seq_len or len(p.sequences) > 1:
            text += (f"; with max_seq_len = {fit_all:,} one sequence would hold them all at "
                     f"{p.real_tokens / fit_all:.1%} (packing pays off when many images share each sequence)")
        return text + "."

    def _order_sentence(self) -> str:
        mine, other = len(self.packing.sequences), len(self.other_order.sequences)
        given, ffd = (mine, other) if self.packing.order == "given" else (other, mine)
        bound = self.packing.sequence_lower_bound
        if ffd < given:
            by_order = {self.packing.order: self.packing, self.other_order.order: self.other_order}
            full = {o: f"{p.utilization:.1%} full" for o, p in by_order.items()}
            return (f"Order matters here: first-fit-decreasing needs {ffd} sequences "
                    f"({full['first-fit-decreasing']}), the given order {given} ({full['given']}). The "
                    "given order closes a sequence as soon as the next image does not fit; first-fit-decreasing "
                    "places the largest images first and fills the gaps they leave with the small ones.")
        if given < ffd:
            return (f"Here the given order needs fewer sequences ({given}) than first-fit-decreasing ({ffd}): "
                    "FFD is a heuristic, and placing the largest first can leave gaps no remaining image fills.")
        if given == bound:
            return (f"Both orders need {given} sequence{'s' * (given != 1)}, the fewest possible: "
                    f"{self.packing.real_tokens:,} tokens / {self.packing.max_seq_len:,} per sequence, rounded "
                    "up — no order can do better, so the order makes no difference.")
        best = fewest_sequences([i.counted_tokens for i in self.packing.items], self.packing.max_seq_len)
        over = (f"more than the {bound} that {self.packing.real_tokens:,} tokens would fill at "
                f"{self.packing.max_seq_len:,} per sequence")
        if best is None:
            return (f"Both orders need {given} sequences, {over}: the images do not split into sequences that full "
                    "(no order may reach that bound).")
        if best == given:
            return (f"Both orders need {given} sequences, {over}, and no order needs fewer: these sizes cannot be "
                    "split into sequences that full, so the order makes no difference.")
        return (f"Both orders need {given} sequences, but an order exists that needs only {best}: neither greedy rule "
                "finds it (exact bin packing is NP-hard; the packers place each image once and never move it).")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the inputs, each image's tokens, each layout's cost, both orders' grouping."""
        return {
            "tiling": self.tiling,
            "max_tokens_per_image": self.max_tokens_per_image,
            "images": [
                {"size": list(size), "tiled_tokens": p.token_count, "navit_grid": list(item.grid),
                 "navit_size": list(item.size), "navit_tokens": item.tokens, "counted_tokens": item.counted_tokens}
                for size, p, item in zip(self.sizes, self.tiled, self.packing.items)
            ],
            "layouts": {name: stats.to_dict() for name, stats in self.layouts().items()},
            "tiled_padding_share": self.tiled_padding_share,
            "packing": self.packing.to_dict(),
            "other_order": {"order": self.other_order.order, "sequences": len(self.other_order.sequences)},
            "explanation": self.explanation(),
        }


def compare_layouts(
    sizes: Sequence[tuple[int, int]],
    tiling: str,
    max_seq_len: int,
    patch_size: int = 16,
    max_tokens_per_image: int | None = None,
    order: str = "given",
    drop_rate: float = 0.0,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> LayoutComparison:
    """Pack, pad and tile the same images at the same tokens per image (see ``LayoutComparison``).

    Each image is planned with ``tiling`` (fitted to ``max_tokens_per_image`` with ``fit_budget`` when given);
    NaViT then resizes it to at most that plan's visual tokens (``resized_grid``). ``names`` only name the images
    in error messages. Raises ``PlanError`` when one image's NaViT tokens exceed ``max_seq_len``.
    """
    from .strategies import fit_budget, plan

    max_seq_len = _positive_int(max_seq_len, "max_seq_len")
    patch_size = _positive_int(patch_size, "patch_size")
    if max_tokens_per_image is not None:
        max_tokens_per_image = _positive_int(max_tokens_per_image, "max tokens per image")
    label = (lambda k: names[k]) if names is not None else (lambda k: f"image {k}")
    sizes = tuple(_item_size(k, s) for k, s in enumerate(sizes))
    tiled = tuple(fit_budget(s, tiling, max_tokens_per_image) if max_tokens_per_image else plan(s, tiling)
                  for s in sizes)
    grids = [resized_grid(s, patch_size, p.token_count) for s, p in zip(sizes, tiled)]
    for k, (rows, cols) in enumerate(grids):
        counted, _ = token_dropout_counts(rows * cols, _drop_rate(drop_rate))
        if counted > max_seq_len:
            raise PlanError(
                f"{label(k)} gets {counted:,} NaViT tokens (as many as {tiling} gives it), more than max_seq_len="
                f"{max_seq_len:,}; raise max_seq_len to at least {counted:,}, or cap the tokens per image at "
                f"{max_seq_len:,}"
            )
    resized = [(cols * patch_size, rows * patch_size) for rows, cols in grids]
    other = ORDERS[1 - ORDERS.index(order)] if order in ORDERS else order
    packing = pack(resized, max_seq_len, patch_size=patch_size, order=order, drop_rate=drop_rate, seed=seed)
    other_order = pack(resized, max_seq_len, patch_size=patch_size, order=other, drop_rate=drop_rate, seed=seed)
    return LayoutComparison(sizes, tiling, max_tokens_per_image, tiled, packing, other_order)

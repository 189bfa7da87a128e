"""Variable-sized slices: LLaVA-UHD and its maintained form in MiniCPM-V.

The image is cut into cols × rows slices whose grid best matches its aspect ratio; each slice is
resized to about the encoder's native area, and a resampler compresses every view to a fixed number
of queries. MiniCPM-V 2.6, MiniCPM-V 4.6 and the LLaVA-UHD-v1 branch share one slicing routine
(`minicpm_slicing`), parametrised by rounding, size divisor and tie-break; the LLaVA-UHD paper
release has its own (`uhd_release_slicing`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..geometry import Plan, make_tile, row_major_boxes, whole
from .registry import BudgetKnob, Candidate, Explanation, ParamSpec, PixelRecipe, StrategyInfo, register
from .reference import CLIP, CLIP_L_336, QWEN2_7B, SIGLIP, SIGLIP_SO400M, VICUNA_13B, ReferenceModel


def ensure_divide(length: float, divisor: int, floor: bool) -> int:
    """`length` to a multiple of `divisor` (at least one); MiniCPM-V rounds half-to-even, UHD-v1 floors."""
    units = math.floor(length / divisor) if floor else round(length / divisor)
    return max(units * divisor, divisor)


def find_best_resize(width: float, height: float, scale: int, divisor: int, upscale: bool,
                     floor: bool) -> tuple[int, int]:
    """(w, h) of about scale² pixels with the aspect ratio kept, sides multiples of `divisor`."""
    if width * height > scale * scale or upscale:
        r = width / height
        height = int(scale / math.sqrt(r))
        width = int(height * r)
    return ensure_divide(width, divisor, floor), ensure_divide(height, divisor, floor)


def rank_slice_grids(width: int, height: int, multiple: int, max_slices: int,
                     rows_first: bool) -> tuple[list[tuple[int, int, int, float]], int]:
    """Every grid `best_slice_grid` weighs, in its order, as (cols, rows, slices, log-ratio error), and the index of
    the winner (-1 when no grid is allowed): the least |log(W/H) − log(cols/rows)| among multiple−1 … multiple+1
    slices (n = 1 and n > max_slices skipped).

    MiniCPM-V 2.6 walks cols ascending and keeps the first minimum; transformers' MiniCPM-V 4.6 walks
    rows ascending and lets a later grid with more rows win a tie (`rows_first`).
    """
    log_ratio = math.log(width / height)
    grids, best, best_err, best_rows = [], -1, math.inf, 1
    for n in (multiple - 1, multiple, multiple + 1):
        if n == 1 or n > max_slices:
            continue
        for m in range(1, n + 1):
            if n % m:
                continue
            cols, rows = (n // m, m) if rows_first else (m, n // m)
            err = abs(log_ratio - math.log(cols / rows))
            grids.append((cols, rows, n, err))
            if err < best_err or (rows_first and err == best_err and rows > best_rows):
                best, best_err, best_rows = len(grids) - 1, err, rows
    return grids, best


def best_slice_grid(width: int, height: int, multiple: int, max_slices: int,
                    rows_first: bool) -> tuple[int, int]:
    """(cols, rows) whose ratio is closest in log space to the image's (see `rank_slice_grids`)."""
    grids, best = rank_slice_grids(width, height, multiple, max_slices, rows_first)
    return (1, 1) if best < 0 else grids[best][:2]


def slice_multiple(w: int, h: int, scale: int, max_slices: int) -> int:
    """MiniCPM-V's `multiple`: about how many scale² views the image's area needs, at most max_slices."""
    return min(math.ceil(w * h / (scale * scale)), max_slices)


def minicpm_slicing(w: int, h: int, scale: int, divisor: int, max_slices: int, floor: bool,
                    rows_first: bool) -> tuple[tuple[int, int], tuple[int, int] | None, tuple[int, int] | None]:
    """(source size, grid (cols, rows) or None, refine size or None) as MiniCPM-V's slice_image computes them."""
    multiple = slice_multiple(w, h, scale, max_slices)
    if multiple <= 1:
        return find_best_resize(w, h, scale, divisor, True, floor), None, None
    source = find_best_resize(w, h, scale, divisor, False, floor)
    cols, rows = best_slice_grid(w, h, multiple, max_slices, rows_first)
    refine_w, refine_h = ensure_divide(w, cols, floor), ensure_divide(h, rows, floor)
    sw, sh = find_best_resize(refine_w / cols, refine_h / rows, scale, divisor, True, floor)
    return source, (cols, rows), (sw * cols, sh * rows)


def _sliced_plan(name: str, w: int, h: int, p: dict, source: tuple[int, int], grid, refine,
                 tokens_of, thumbnail_position: str, separators: bool, text_tokens_of) -> Plan:
    """A plan with a global source view plus equal slices of the refined (resized) image."""
    if grid is None:  # unsliced: the source view is the image's only view
        tile = make_tile(0, 0, 0, whole((w, h)), source, tokens_of(source), _token_grid(tokens_of(source), source, p))
        tokens = {"tiles": tile.token_count}
        return Plan(name, p, (w, h), (1, 1), None, (tile,), None, None, tile.token_count, tokens,
                    text_tokens=text_tokens_of(0, 0))
    cols, rows = grid
    sw, sh = refine[0] // cols, refine[1] // rows
    first = 1 if thumbnail_position == "first" else 0
    tiles = []
    for r, c, cbox in row_major_boxes(rows, cols, sw, sh):
        box = (c * w / cols, r * h / rows, (c + 1) * w / cols, (r + 1) * h / rows)
        n = tokens_of((sw, sh))
        tiles.append(make_tile(first + len(tiles), r, c, box, (sw, sh), n, _token_grid(n, (sw, sh), p), canvas_box=cbox))
    n_source = tokens_of(source)
    thumb = make_tile(0 if first else len(tiles), -1, -1, whole((w, h)), source, n_source,
                      _token_grid(n_source, source, p))
    tokens = {"thumbnail": n_source, "tiles": sum(t.token_count for t in tiles)}
    if separators:
        tokens["separators"] = rows * cols  # ',' after each slice in a row, '\n' after the last
    return Plan(name, p, (w, h), (rows, cols), refine, tuple(tiles), thumb, thumbnail_position,
                sum(tokens.values()), tokens, text_tokens=text_tokens_of(rows, cols),
                content_box=(0, 0, refine[0], refine[1]))


def _token_grid(n: int, size: tuple[int, int], p: dict) -> tuple[int, int]:
    """Spatial feature grid where the model keeps one (4.6: 16 patches merged); else the resampler's queries."""
    if p.get("version") == "4.6":
        return size[1] // 56, size[0] // 56
    side = math.isqrt(n)
    return (side, side) if side * side == n else (1, n)


# ---------------------------------------------------------------------------------------------
# Why this grid?


def _names(labels: list[str]) -> str:
    if len(labels) > 3:
        return f"{labels[0]}, {labels[1]} and {len(labels) - 2} more"
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _grid_label(cols: int, rows: int, n: int) -> str:
    return f"{cols} col{'s' * (cols != 1)} × {rows} row{'s' * (rows != 1)}, {n} slice{'s' * (n != 1)}"


def _counts_text(counts: list[int], considered: list[int], limit: str, max_slices: int) -> str:
    skipped = [n for n in counts if n not in considered]
    text = f"slice counts {', '.join(map(str, considered))} are considered"
    why = [("1 is never sliced" if n == 1 else f"{n} exceeds {limit} {max_slices}") for n in skipped]
    return text + (f" ({'; '.join(why)})" if why else "")


def _grid_candidates(w: int, h: int, grids: list[tuple[int, int, int, float]], best: int, later_wins: bool,
                     chosen_extra: str) -> tuple[list[Candidate], str]:
    """Candidates from a ranked grid list and the tie sentence of the decision. `later_wins`: ties go to the grid
    with more rows (MiniCPM-V 4.6), else to the first minimum."""
    labels = [_grid_label(cols, rows, n) for cols, rows, n, _ in grids]
    best_err = grids[best][3]
    ties = [labels[i] for i, g in enumerate(grids) if i != best and g[3] == best_err]
    rule = "4.6 breaks ties toward the grid with more rows" if later_wins else "the reference keeps the first minimum"
    candidates = []
    for i, (cols, rows, n, err) in enumerate(grids):
        if i == best:
            note = f"ties {_names(ties)} on log-ratio error; {rule}" if ties else ""
            label = labels[i] + chosen_extra
        else:
            label = labels[i]
            note = ""
            if err == best_err:
                note = ("ties the winner on log-ratio error but has fewer rows" if later_wins else
                        "ties the winner on log-ratio error; the winner came first")
        candidates.append(Candidate(label, {"log-ratio error": err, "slices": n}, chosen=i == best,
                                    grid=(rows, cols), note=note))
    cols, rows = grids[best][:2]
    decision = (f"{labels[best]} wins: cols/rows = {cols}/{rows} is closest to the image's {w}/{h} "
                f"in log space (error {best_err:.4f})")
    if ties:
        decision += f"; {_names(ties)} tie{'s' * (len(ties) == 1)} it exactly and {rule}"
    return candidates, decision


def explain_minicpm_slicing(name: str, w: int, h: int, scale: int, divisor: int, max_slices: int, floor: bool,
                            rows_first: bool, limit: str) -> Explanation:
    """Why MiniCPM-V's slice_image (also LLaVA-UHD's v1 branch) slices as it does, from the planner's own helpers
    (`slice_multiple`, `rank_slice_grids`, `minicpm_slicing`)."""
    multiple = slice_multiple(w, h, scale, max_slices)
    source, grid, refine = minicpm_slicing(w, h, scale, divisor, max_slices, floor, rows_first)
    tie = ("ties go to the grid with more rows (transformers' MiniCPM-V 4.6)" if rows_first
           else "an exact tie keeps the first grid found (cols ascending)")
    rule = (f"multiple = min(ceil(W·H / {scale}²), {limit} {max_slices}); at 1 the image is one view, resized to "
            f"about {scale}² pixels. Otherwise every cols × rows grid of multiple−1, multiple or multiple+1 slices "
            f"is scored by |log(W/H) − log(cols/rows)|; the least wins and {tie}.")
    if grid is None:
        only = Candidate(f"no slicing: one view resized to {source[0]}×{source[1]}",
                         {"image area / scale²": w * h / (scale * scale)}, chosen=True, grid=(1, 1),
                         note=f"multiple = {multiple} ≤ 1")
        return Explanation(name, (w, h), rule, (only,),
                           f"the image's {w * h:,} pixels need at most one {scale}² view (multiple = {multiple}), "
                           f"so it is not sliced: one view of {source[0]}×{source[1]}")
    grids, best = rank_slice_grids(w, h, multiple, max_slices, rows_first)
    cols, rows = grid
    extra = f" of {refine[0] // cols}×{refine[1] // rows}"
    candidates, decision = _grid_candidates(w, h, grids, best, rows_first, extra)
    considered = sorted({g[2] for g in grids})
    counts = _counts_text([multiple - 1, multiple, multiple + 1], considered, limit, max_slices)
    decision = (f"multiple = {multiple}, so {counts}. {decision}. The global view is {source[0]}×{source[1]}, "
                f"the image is resized to {refine[0]}×{refine[1]} and cut")
    return Explanation(name, (w, h), rule, tuple(candidates), decision)


def explain_release_slicing(w: int, h: int, max_slices: int, base: int) -> Explanation:
    """Why the LLaVA-UHD paper release picks its grid, from `rank_release_grids` (the planner's own)."""
    s, grids, best = rank_release_grids(w, h, max_slices, base)
    rule = (f"s = min(ceil(W·H / {base}²), max_slices {max_slices}); every factorisation cols × rows of s and s+1 "
            "slices (s−1 too when s > 2) is scored by |log(cols/rows) − log(W/H)|; the least wins and an exact tie "
            "keeps the first found (cols ascending, fewer slices first). A 1×1 grid is the image alone.")
    candidates, decision = _grid_candidates(w, h, grids, best, False, "")
    considered = sorted({g[2] for g in grids})
    decision = f"s = {s}, so grids of {', '.join(map(str, considered))} slices are weighed. {decision}"
    if grids[best][:2] == (1, 1):
        decision += "; a 1×1 grid means the image is its only view"
    return Explanation("llava-uhd", (w, h), rule, tuple(candidates), decision)


def _explain_uhd(w: int, h: int, p: dict[str, Any]) -> Explanation:
    if p["variant"] == "v1-branch":
        return explain_minicpm_slicing("llava-uhd", w, h, p["scale_resolution"] or 336, p["patch_size"],
                                       p["max_slices"] or 7, True, False, "max_slices")
    return explain_release_slicing(w, h, p["max_slices"] or 6, p["scale_resolution"] or 336)


def _explain_minicpm(w: int, h: int, p: dict[str, Any]) -> Explanation:
    v46 = p["version"] == "4.6"
    return explain_minicpm_slicing("minicpm-v", w, h, p["scale_resolution"], p["patch_size"] * (4 if v46 else 1),
                                   p["max_slice_nums"], False, v46, "max_slice_nums")


# ---------------------------------------------------------------------------------------------
# MiniCPM-V 2.6 / 4.6


def _minicpm_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    v46 = p["version"] == "4.6"
    divisor = p["patch_size"] * (4 if v46 else 1)  # 4.6's "16x" downsampling needs multiples of 56
    source, grid, refine = minicpm_slicing(w, h, p["scale_resolution"], divisor, p["max_slice_nums"], False,
                                           rows_first=v46)
    if v46:
        tokens_of = lambda s: (s[0] // p["patch_size"]) * (s[1] // p["patch_size"]) // 16  # noqa: E731
    else:
        tokens_of = lambda s: p["query_num"]  # noqa: E731

    def text_tokens(rows: int, cols: int) -> int:
        # <image_id>k</image_id> (3) + <image></image> (2) + <slice></slice> per slice + '\n' between rows
        return 5 + (2 * rows * cols + rows - 1 if rows else 0)

    return _sliced_plan("minicpm-v", w, h, p, source, grid, refine, tokens_of, "first", False, text_tokens)


register(StrategyInfo(
    name="minicpm-v",
    family="variable slices",
    summary="MiniCPM-V (LLaVA-UHD's maintained form): up to 9 slices in the grid closest to the image's aspect, "
            "global view first; 64 resampler queries per view (2.6) or 16× merged patches (4.6)",
    reference="Yao et al. 2024, MiniCPM-V; OpenBMB/MiniCPM-V finetune/dataset.py slice_image, "
              "transformers models/minicpmv4_6",
    params={
        "version": ParamSpec("str", "2.6", "'2.6' (resampler, grid [cols, rows]) or '4.6' (transformers; sides "
                                           "multiples of 56, ties go to more rows)", choices=("2.6", "4.6")),
        "max_slice_nums": ParamSpec("int", 9, "most slices", min=1, max=64),
        "scale_resolution": ParamSpec("int", 448, "each view is resized to about this side squared", min=14, max=4096),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
        "query_num": ParamSpec("int", 64, "resampler queries per view (2.6: 64; Llama3-V 2.5: 96)", min=1, max=4096),
    },
    budget="max_slice_nums",
    planner=_minicpm_plan,
    explainer=_explain_minicpm,
    knob=BudgetKnob("max_slice_nums", "most slices", lambda p, n: range(1, 65), monotone=False),
    pixels=PixelRecipe(SIGLIP),  # MiniCPM-V 2.6 norm_mean/norm_std 0.5; transformers MiniCPMV4_6 IMAGENET_STANDARD
    reference_model=ReferenceModel(SIGLIP_SO400M, QWEN2_7B),  # openbmb/MiniCPM-V-2_6
    vectors=("minicpmv26", "minicpmv46_hf"),
    order=70,
))


# ---------------------------------------------------------------------------------------------
# LLaVA-UHD


def rank_release_grids(w: int, h: int, max_slices: int,
                       base: int) -> tuple[int, list[tuple[int, int, int, float]], int]:
    """The LLaVA-UHD paper release's `cal_num_of_slices`: s, every grid it weighs as (cols, rows, slices,
    |log r − log(w/h)|) in its order, and the index of the first minimum."""
    s = min(math.ceil(w * h / (base * base)), max_slices)

    def factorize(n: int) -> list[tuple[float, int, int]]:
        return [(i / (n / i), i, n // i) for i in range(1, n + 1) if n % i == 0]

    ns = (s, s + 1) if s <= 2 else (s - 1, s, s + 1)
    log_origin = math.log(w / h)
    grids, best, min_dif = [], -1, 1000
    for n in ns:
        for r, cols, rows in factorize(n):
            grids.append((cols, rows, n, abs(math.log(r) - log_origin)))
            if min_dif > abs(math.log(r) - log_origin):
                min_dif, best = abs(math.log(r) - log_origin), len(grids) - 1
    return s, grids, best


def uhd_release_grid(w: int, h: int, max_slices: int, base: int) -> tuple[int, int]:
    """(cols, rows) of the LLaVA-UHD paper release (`cal_num_of_slices`): first minimum of |log r − log(w/h)|."""
    _s, grids, best = rank_release_grids(w, h, max_slices, base)
    return (0, 0) if best < 0 else grids[best][:2]


def adapt_size(height: int, width: int, patch: int, max_patches: int) -> tuple[int, int]:
    """Patch grid (rows, cols) of about max_patches with the aspect ratio kept (LLaVA-UHD's adapt_size)."""
    scale = math.sqrt(max_patches * (patch / height) * (patch / width))
    rows = max(min(math.floor(scale * height / patch), max_patches), 1)
    cols = max(min(math.floor(scale * width / patch), max_patches), 1)
    return rows, cols


def _uhd_plan(w: int, h: int, p: dict[str, Any]) -> Plan:
    if p["variant"] == "v1-branch":
        scale = p["scale_resolution"] or 336
        max_slices = p["max_slices"] or 7
        queries = p["query_num"] or 144
        source, grid, refine = minicpm_slicing(w, h, scale, p["patch_size"], max_slices, True, rows_first=False)
        return _sliced_plan("llava-uhd", w, h, p, source, grid, refine, lambda s: queries, "last", True,
                            lambda rows, cols: 0)
    base = p["scale_resolution"] or 336
    patch = p["patch_size"]
    queries = p["query_num"] or 64
    max_patches = (base // patch) ** 2
    cols, rows = uhd_release_grid(w, h, p["max_slices"] or 6, base)
    ar, ac = adapt_size(h, w, patch, max_patches)
    view = (ac * patch, ar * patch)  # process_image resizes every view to the whole image's adapt_size
    if cols * rows == 1:
        tile = make_tile(0, 0, 0, whole((w, h)), view, queries, _token_grid(queries, view, p))
        return Plan("llava-uhd", p, (w, h), (1, 1), None, (tile,), None, None, queries, {"tiles": queries})
    tiles = []
    for r in range(rows):
        for c in range(cols):
            box = (c * w // cols, r * h // rows, (c + 1) * w // cols, (r + 1) * h // rows)
            tiles.append(make_tile(len(tiles), r, c, box, view, queries, _token_grid(queries, view, p)))
    thumb = make_tile(len(tiles), -1, -1, whole((w, h)), view, queries, _token_grid(queries, view, p))
    sr, sc = adapt_size(h // rows, w // cols, patch, max_patches)
    notes = (f"the release resizes every slice to the whole image's {view[0]}×{view[1]}, while get_patch_nums "
             f"gives the encoder a {sr}×{sc} patch grid per slice",)
    n = queries * (rows * cols + 1)
    return Plan("llava-uhd", p, (w, h), (rows, cols), None, tuple(tiles), thumb, "last", n,
                {"tiles": queries * rows * cols, "thumbnail": queries}, notes=notes)


register(StrategyInfo(
    name="llava-uhd",
    family="variable slices",
    summary="LLaVA-UHD: image cut into ≤ 6 (release) or ≤ 7 (v1 branch) slices matching its aspect ratio, each "
            "resampled to a fixed number of queries; the whole image comes last",
    reference="Xu et al. 2024, LLaVA-UHD; thunlp/LLaVA-UHD slice_logic.py (release d0d857d) and "
              "llava/slice_process.py (branch LLaVA-UHD-v1)",
    params={
        "variant": ParamSpec("str", "release", "'release' (paper code, 64 queries, ≤ 6 slices) or 'v1-branch' "
                                               "(MiniCPM-style slicing with floor rounding, 144 queries, separators)",
                             choices=("release", "v1-branch")),
        "max_slices": ParamSpec("int", None, "most slices; None = the variant's own (6 release, 7 v1-branch)",
                                min=1, max=64, nullable=True),
        "scale_resolution": ParamSpec("int", None, "encoder side the views are sized for; None = 336",
                                      min=14, max=4096, nullable=True),
        "query_num": ParamSpec("int", None, "resampler queries per view; None = the variant's own (64 / 144)",
                               min=1, max=4096, nullable=True),
        "patch_size": ParamSpec("int", 14, "ViT patch side", min=1, max=64),
    },
    budget="max_slices",
    planner=_uhd_plan,
    explainer=_explain_uhd,
    knob=BudgetKnob("max_slices", "most slices", lambda p, n: range(1, 65), monotone=False),
    # CLIP ViT-L/14-336 encoder (slice_logic.py itself leaves values in [0, 1]). The release crops each slice,
    # then resizes it with torch's bilinear antialiased interpolation in float; PIL's bilinear (the algorithm
    # torch's antialias mode was ported from) stands in for it on the fast path.
    pixels=PixelRecipe(CLIP, resample="bilinear"),
    pixels_for=lambda base, plan: replace(base, float_resize=plan.params["variant"] == "release"),
    reference_model=ReferenceModel(CLIP_L_336, VICUNA_13B),  # LLaVA-UHD paper: CLIP-L/14 + Vicuna-13B
    vectors=("llava_uhd_v1_release", "llava_uhd_v1_branch"),
    order=60,
))

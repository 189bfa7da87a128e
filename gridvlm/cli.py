"""gridvlm plan|compare|pack|app (or python -m gridvlm ...) — the planning API on the command line.

Bad input prints one line on stderr and exits with status 2; there is never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Sequence

from . import fit_budget, list_strategies, plan
from .errors import GridVLMError, PlanError
from .extras import MissingExtra
from .strategies import image_size_of

_SIZE = re.compile(r"^(\d+)[x×](\d+)$")


def image_size_arg(text: str) -> tuple[int, int]:
    """An image path (only its header is read) or a size written WxH."""
    match = _SIZE.match(text)
    if match:
        return int(match.group(1)), int(match.group(2))
    from .imaging import image_size

    return image_size(text)


def param_arg(text: str) -> tuple[str, Any]:
    """KEY=VALUE; VALUE is read as JSON (numbers, true/false, null, lists), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise PlanError(f"--param expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def plan_table(p) -> str:
    w, h = p.image_size
    lines = [
        f"{p.strategy}  {w}×{h}  grid {p.grid[0]}×{p.grid[1]}  views {p.num_views}  visual tokens {p.token_count}"
        + (f"  (+{p.text_tokens} text)" if p.text_tokens else ""),
        "  tokens: " + ", ".join(f"{k} {v}" for k, v in p.tokens.items()),
        f"  {'view':>4} {'row,col':>7} {'box in original (x0,y0,x1,y1)':>34} {'input':>11} {'pad':>5} {'tokens':>6}",
    ]
    for v in p.views:
        where = "global" if v.is_thumbnail else f"{v.row},{v.col}"
        box = "(" + ", ".join(f"{c:.1f}" for c in v.box) + ")"
        size = f"{v.input_size[0]}×{v.input_size[1]}"
        lines.append(f"  {v.index:>4} {where:>7} {box:>34} {size:>11} {v.padding:>5.0%} {v.token_count:>6}")
    lines += [f"  note: {n}" for n in p.notes]
    return "\n".join(lines)


def compare_rows(size: tuple[int, int], max_tokens: int | None) -> tuple[list, list[str]]:
    size = image_size_of(size)  # a bad size is the user's mistake, not every strategy's refusal
    plans, refused = [], []
    for name in list_strategies():
        try:
            plans.append(fit_budget(size, name, max_tokens) if max_tokens else plan(size, name))
        except PlanError as exc:
            refused.append(f"{name}: {exc}")
    return plans, refused


def compare_table(plans, refused) -> str:
    lines = [f"{'strategy':<18} {'grid':>6} {'views':>5} {'tokens':>7} {'pixels/token':>12}"]
    for p in plans:
        ppt = p.image_size[0] * p.image_size[1] / p.token_count if p.token_count else float("inf")
        grid = f"{p.grid[0]:>3}×{p.grid[1]:<2}"
        lines.append(f"{p.strategy:<18} {grid} {p.num_views:>5} {p.token_count:>7} {ppt:>12.1f}")
    lines += [f"not possible: {r}" for r in refused]
    return "\n".join(lines)


def markdown_table(plans, refused) -> str:
    """Every plan as a row of a Markdown table (the README's strategy table is this, for 1024×768)."""
    from .strategies import strategy_info

    lines = ["| strategy | family | grid | views | visual tokens | text tokens | budget knob |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for p in plans:
        info = strategy_info(p.strategy)
        knob = f"`{info.knob.param}`" if info.knob else "none"
        lines.append(f"| `{p.strategy}` | {info.family} | {p.grid[0]}×{p.grid[1]} | {p.num_views} | {p.token_count} "
                     f"| {p.text_tokens} | {knob} |")
    lines += [f"| `{r.split(':', 1)[0]}` | refused: {r.split(':', 1)[1].strip()} | | | | | |" for r in refused]
    return "\n".join(lines)


def explain_table(e) -> str:
    """Why the plan is what it is: the rule, every candidate with its scores (the chosen one marked), the decision."""
    w, h = e.image_size
    lines = [f"{e.strategy}  {w}×{h}", f"  rule: {e.rule}"]
    for c in e.candidates:
        scores = ", ".join(f"{k} {v:g}" for k, v in c.scores.items())
        lines.append(f"  {'→' if c.chosen else ' '} {c.label}: {scores}" + (f"  ({c.note})" if c.note else ""))
    lines.append(f"  decision: {e.decision}")
    return "\n".join(lines)


def layouts_table(comparison) -> str:
    """The Pack tab's numbers: one row per layout, each image's tokens, the grouping and what they mean."""
    lines = [f"{'layout':<28} {'rows':>5} {'row length':>10} {'real tokens':>11} {'padding':>8} {'total':>8} "
             f"{'utilisation':>11} {'attention (Σ L²)':>17}"]
    for name, s in comparison.layouts().items():
        lines.append(f"{name:<28} {s.rows:>5} {s.row_len:>10} {s.real_tokens:>11} {s.padding_tokens:>8} "
                     f"{s.total_tokens:>8} {s.utilization:>11.1%} {s.attention_cost:>17}")
    lines.append(f"  {'image':>5} {'size':>11} {comparison.tiling + ' tokens':>20} {'NaViT patches':>13} "
                 f"{'NaViT tokens':>12}")
    for k, (size, p, item) in enumerate(zip(comparison.sizes, comparison.tiled, comparison.packing.items)):
        grid = f"{item.grid[0]}×{item.grid[1]}"
        lines.append(f"  {k:>5} {f'{size[0]}×{size[1]}':>11} {p.token_count:>20} {grid:>13} {item.counted_tokens:>12}")
    lines.append(pack_table(comparison.packing))
    lines += comparison.explanation()
    return "\n".join(lines)


def pack_table(packing) -> str:
    lines = [f"{len(packing.sequences)} sequence(s) of {packing.max_seq_len}, utilisation {packing.utilization:.1%}, "
             f"padding {packing.padding_tokens} tokens"]
    for i, seq in enumerate(packing.sequences):
        parts = ", ".join(f"image {idx}: {n}" for idx, n in seq)
        lines.append(f"  sequence {i}: {parts}  (length {packing.lengths[i]})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridvlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="how one strategy slices an image")
    p.add_argument("image", help="image path, or a size as WxH")
    p.add_argument("--strategy", default="llava-next", help=f"one of: {', '.join(list_strategies())}")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a strategy parameter")
    p.add_argument("--max-tokens", type=int, default=None, help="fit the plan into this many visual tokens")
    p.add_argument("--json", action="store_true", help="print Plan.to_dict() as JSON")
    e = sub.add_parser("explain", help="why a strategy cuts an image as it does: the candidates and the winner")
    e.add_argument("image", help="image path, or a size as WxH")
    e.add_argument("--strategy", default="llava-next", help="a strategy name (see plan --help)")
    e.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a strategy parameter")
    e.add_argument("--json", action="store_true", help="print the explanation as JSON")
    c = sub.add_parser("compare", help="every strategy on one image")
    c.add_argument("image", help="image path, or a size as WxH")
    c.add_argument("--max-tokens", type=int, default=None, help="an equal token budget for every strategy")
    c.add_argument("--json", action="store_true")
    c.add_argument("--markdown", action="store_true", help="a Markdown table (the README's strategy table)")
    k = sub.add_parser("pack", help="NaViT packing of several images")
    k.add_argument("images", nargs="+", help="image paths, or sizes as WxH")
    k.add_argument("--max-seq-len", type=int, required=True)
    k.add_argument("--patch-size", type=int, default=16)
    k.add_argument("--order", default="given", choices=("given", "first-fit-decreasing"))
    k.add_argument("--tiling", default=None, metavar="STRATEGY",
                   help="compare with this strategy as the Pack tab does: NaViT gets as many tokens per image as it")
    k.add_argument("--max-tokens-per-image", type=int, default=None, metavar="N",
                   help="with --tiling: fit its plans to N tokens per image; without: shrink each image to N patches")
    k.add_argument("--drop-rate", type=float, default=0.0, help="NaViT token dropping, a fraction in [0, 1)")
    k.add_argument("--seed", type=int, default=0, help="which tokens are kept when dropping")
    k.add_argument("--json", action="store_true")
    sub.add_parser("app", help="serve the Gradio app (pip install 'gridvlm[app]'; GRADIO_SERVER_NAME/PORT)")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with 2 and a usage line on bad flags
    try:
        if args.command == "plan":
            size = image_size_arg(args.image)
            params = dict(param_arg(t) for t in args.param)
            if args.max_tokens is not None:
                result = fit_budget(size, args.strategy, args.max_tokens, **params)
            else:
                result = plan(size, args.strategy, **params)
            print(json.dumps(result.to_dict(), indent=2) if args.json else plan_table(result))
        elif args.command == "explain":
            from dataclasses import asdict

            from .strategies import explain

            found = explain(image_size_arg(args.image), args.strategy, **dict(param_arg(t) for t in args.param))
            print(json.dumps(asdict(found), indent=2) if args.json else explain_table(found))
        elif args.command == "compare":
            plans, refused = compare_rows(image_size_arg(args.image), args.max_tokens)
            if args.json:
                print(json.dumps([p.to_dict() for p in plans], indent=2))
            elif args.markdown:
                print(markdown_table(plans, refused))
            else:
                print(compare_table(plans, refused))
        elif args.command == "app":
            from .app import launch

            launch()
        else:
            from .packing import compare_layouts, pack

            sizes = [image_size_arg(i) for i in args.images]
            if args.tiling is not None:
                found = compare_layouts(sizes, args.tiling, args.max_seq_len, patch_size=args.patch_size,
                                        max_tokens_per_image=args.max_tokens_per_image, order=args.order,
                                        drop_rate=args.drop_rate, seed=args.seed)
                print(json.dumps(found.to_dict(), indent=2) if args.json else layouts_table(found))
            else:
                items = (sizes if args.max_tokens_per_image is None else
                         [plan(s, "navit", patch_size=args.patch_size, max_tokens=args.max_tokens_per_image)
                          for s in sizes])
                packing = pack(items, args.max_seq_len, patch_size=args.patch_size, order=args.order,
                               drop_rate=args.drop_rate, seed=args.seed)
                print(json.dumps(packing.to_dict(), indent=2) if args.json else pack_table(packing))
    except (GridVLMError, MissingExtra) as exc:  # bad input, or `app` without gridvlm[app]
        print(f"gridvlm: {exc}", file=sys.stderr)
        return 2
    return 0


def main() -> None:
    sys.exit(run())

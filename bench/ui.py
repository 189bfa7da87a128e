"""How long the app's Slice tab takes: an uploaded 4032×3024 JPEG to its outputs, and a strategy switch.

    python bench/ui.py [--repeats 5] [--out bench/results/ui.json]

The handlers are called in process, exactly as gradio calls them (no server, no browser). The Slice tab answers
in two events: the first (`upload`, or `switch_strategy` on a switch, which also returns the strategy's description
and parameters) returns the overlay, headline, breakdown, metrics table, notes and plan JSON; the second (`show_views`) the gallery of views as the encoder sees them. Both are timed, and
so is gradio's own postprocessing of those outputs (plot to JSON, gallery images written to its cache), which
runs before the browser gets anything. Times are the median of N runs, in ms. Compare and Pack are timed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="gridvlm-bench-"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

import gridvlm  # noqa: E402
from gridvlm.app import compare_tab, pack_tab, slice_tab  # noqa: E402
from gridvlm.app import display as ui  # noqa: E402

PHOTO = ROOT / "gridvlm" / "app" / "assets" / "landscape_photo.jpg"  # 4032×3024 JPEG
SWITCHES = ["internvl", "llava-next", "qwen2-vl", "idefics3", "llava-onevision"]
GOALS_MS = {"upload": 500, "switch": 150}


def median_ms(fn, repeats: int) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3, result


def gradio_postprocess(figure, gallery) -> None:
    """What gradio does to these outputs before sending them: the figure to JSON, the views to image files."""
    gr.Plot().postprocess(figure)
    gr.Gallery(format="jpeg").postprocess(gallery)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ui.json")
    args = parser.parse_args()
    n = args.repeats
    rows = []

    def add(step: str, strategy: str, ms: float, goal: str = "") -> None:
        rows.append({"step": step, "strategy": strategy, "ms": round(ms, 1), "goal": goal})

    params = ui.params_text("llava-next")
    slice_tab.upload(str(PHOTO), "llava-next", True, 2048, params)  # warm-up: imports, first JPEG decode
    first_ms, out = median_ms(lambda: slice_tab.upload(str(PHOTO), "llava-next", True, 2048, params), n)
    ws, figure, *_, p = out
    views_ms, gallery = median_ms(lambda: slice_tab.show_views(ws, p), n)
    post_ms, _ = median_ms(lambda: gradio_postprocess(figure, gallery), n)
    add("upload -> overlay, numbers (event 1)", "llava-next", first_ms)
    add("upload -> views gallery (event 2)", "llava-next", views_ms)
    add("gradio postprocess of both", "llava-next", post_ms)
    add("upload -> all Slice outputs", "llava-next", first_ms + views_ms + post_ms, f"<= {GOALS_MS['upload']}")

    # Where the first event's time goes (the parts `upload` calls, in order).
    from gridvlm import metrics, pixels, viz

    p = gridvlm.plan(ws.size, "llava-next")
    seams = metrics.seam_energy(ws.preview, p)
    for part, fn in [
        ("  part: decode + preview (ui.open_workspace)", lambda: ui.open_workspace(str(PHOTO))),
        ("  part: metrics.seam_energy on the preview", lambda: metrics.seam_energy(ws.preview, p)),
        ("  part: viz.plan_figure", lambda: viz.plan_figure(p, image=ws.preview, seams=seams)),
        ("  part: display.breakdown_html", lambda: ui.breakdown_html(p)),
        ("  part: pixels.views (fast path, as the gallery)", lambda: pixels.views(ws.image, p, exact=False)),
    ]:
        add(part, "llava-next", median_ms(fn, n)[0])

    for name in SWITCHES:
        def switch(name=name):
            return slice_tab.switch_strategy(ws, name, True, 2048)

        first_ms, out = median_ms(switch, n)
        figure, p = out[3], out[3 + slice_tab.SLICE_OUTPUTS - 1]
        views_ms, gallery = median_ms(lambda: slice_tab.show_views(ws, p), n)
        post_ms, _ = median_ms(lambda: gradio_postprocess(figure, gallery), n)
        add("switch -> overlay, numbers (event 1)", name, first_ms, f"<= {GOALS_MS['switch']}")
        add("  part: viz.plan_figure", name, median_ms(lambda: viz.plan_figure(p, image=ws.preview), n)[0])
        add("switch -> all Slice outputs", name, first_ms + views_ms + post_ms)

    compare_ms, _ = median_ms(lambda: compare_tab.compare(ws, gridvlm.list_strategies(), False, 2048), max(1, n // 2))
    add("Compare tab, all strategies", "all", compare_ms)
    examples = ui.IMAGE_SETS[ui.EXAMPLE_SET]  # the Pack tab's defaults
    pack_ms, _ = median_ms(lambda: pack_tab.pack_images(None, examples.max_seq_len, 16, 0, "given", examples.tiling), n)
    add("Pack tab, the examples", examples.tiling, pack_ms)

    load = os.getloadavg()[0]
    print(f"{'step':<46} {'strategy':<16} {'ms':>8}  goal (ms)")
    for row in rows:
        print(f"{row['step']:<46} {row['strategy']:<16} {row['ms']:>8.1f}  {row['goal']}")
    print(f"load average at the end: {load:.1f} on {os.cpu_count()} CPUs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "unit": f"milliseconds, median of {n} runs (Compare: {max(1, n // 2)})",
        "image": f"{PHOTO.relative_to(ROOT)} ({ws.size[0]}x{ws.size[1]} JPEG)",
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
                   f"{platform.python_implementation()} {platform.python_version()}, gradio {gr.__version__}",
        "load_average_1min_at_end": round(load, 2),
        "goals_ms": GOALS_MS,
        "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

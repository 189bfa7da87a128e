"""How long a user waits in a real browser: the app on 127.0.0.1, Debian's chromium driven by playwright.

    python bench/browser.py [--repeats 5] [--out bench/results/browser.json]

Steps, each timed from the user's action to the figures redrawn in the page (median of N runs, ms):
- upload of a 5120×2880 photo (bench/photos/shell_5120x2880.jpg) → overlay redrawn, and → views gallery filled;
- strategy switch (llava-next → internvl and back) → overlay redrawn with the new plan;
- Compare of all strategies (the Compare button) → small multiples, table and scatter redrawn;
- Pack of the examples (the Pack button) → packed sequences, mask and packing-vs-tiling redrawn.

The clock starts in the page, at the DOM event of the action (the file input's ``change``, the ``pointerdown`` on
an option or button), and stops at the first animation frame after every watched plotly figure has been given new
data by gradio (``el.data`` is a new array: gradio calls ``Plotly.react`` on the same element) and the step's own
condition holds (the headline names the photo's size, the overlay's title the new strategy, the table has every
row). No sleeps: the page checks the condition on every frame. Browser and server share this machine's cores, as
they would for a user running the app locally; the load average is printed with the table.

Also printed: the JSON size of what each event sends (the figures as gradio serialises them), measured in process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import App  # noqa: E402  (bench/load.py: the app in a child process on a free port)

PHOTO = ROOT / "bench" / "photos" / "shell_5120x2880.jpg"
OTHER = ROOT / "bench" / "photos" / "moss_2560x1600.jpg"  # uploaded between runs, so each run changes the image
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]  # as tests/test_app_browser.py launches it
TARGETS_MS = {"upload → overlay": 1000, "switch → overlay": 500, "Compare (all strategies)": 2000}
STEP_TIMEOUT_MS = 120_000  # bounds a failure only

# Arms a watch: the clock starts at the first `start` event (capture phase, anywhere in the page) and stops at the
# first animation frame at which every plot in `plots` has new data and `check` (a JS expression) is true.
ARM = """({start, plots, check, marks}) => {
    const plotOf = sel => document.querySelector(sel + ' .js-plotly-plot');
    const old = plots.map(sel => { const el = plotOf(sel); return el ? el.data : undefined; });
    const w = window.__bench = {t0: null, t1: null, marks: {}};
    const test = new Function('return (' + check + ');');
    addEventListener(start, () => { if (w.t0 === null) w.t0 = performance.now(); }, {capture: true, once: true});
    const fresh = (sel, k) => { const el = plotOf(sel); return !!el && !!el.data && el.data !== old[k]; };
    const frame = () => {
        if (w.t0 !== null) {
            for (const [name, sel] of Object.entries(marks || {}))
                if (!(name in w.marks) && fresh(sel, plots.indexOf(sel))) w.marks[name] = performance.now() - w.t0;
            let ok = plots.every(fresh);
            if (ok) { try { ok = !!test(); } catch (e) { ok = false; } }
            if (ok) { requestAnimationFrame(() => { w.t1 = performance.now(); }); return; }
        }
        requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
}"""


def _timed(page, action, plots: list[str], check: str = "true", start: str = "pointerdown",
           marks: dict[str, str] | None = None) -> tuple[float, dict[str, float]]:
    """ms from the action's DOM event to the frame after the watched plots were redrawn (and `check` holds)."""
    page.evaluate(ARM, {"start": start, "plots": plots, "check": check, "marks": marks or {}})
    action()
    page.wait_for_function("() => window.__bench.t1 !== null", timeout=STEP_TIMEOUT_MS, polling=50)
    w = page.evaluate("() => window.__bench")
    return w["t1"] - w["t0"], w["marks"]


def _set_image(page, path: Path) -> None:
    """Replace the Slice tab's image as a user does: clear the file shown, then choose the new one."""
    box = page.locator("#image-upload")
    clear = box.get_by_role("button", name="Clear")
    if clear.count():
        clear.first.click()
    box.locator("input[type=file]").set_input_files(str(path))


def _headline_has(text: str) -> str:
    return f"((document.querySelector('#slice-summary') || {{}}).innerText || '').includes({json.dumps(text)})"


def _title_starts(sel: str, text: str) -> str:
    return (f"(() => {{ const t = document.querySelector('{sel} .js-plotly-plot').layout.title; "
            f"return String((t && t.text) || t || '').startsWith({json.dumps(text)}); }})()")


def _views_count(n: int) -> str:
    return f"document.querySelectorAll('#views img').length === {n}"


def _choose(page, strategy: str) -> None:
    page.locator("#strategy input").click()
    page.get_by_role("option", name=strategy, exact=True).click()


def payload_kb() -> dict[str, float]:
    """KB of JSON the main figures take as gradio sends them (gr.Plot's postprocess), for the photo."""
    import gradio as gr

    import gridvlm
    from gridvlm.app import compare_tab, pack_tab, slice_tab
    from gridvlm.app import display as ui

    def kb(fig) -> float:
        return round(len(gr.Plot().postprocess(fig).model_dump_json()) / 1024, 1)

    out = slice_tab.upload(str(PHOTO), "llava-next", True, 2048, ui.params_text("llava-next"))
    ws, overlay, _, breakdown, *_ = out
    figure, _, scatter, _ = compare_tab.compare(ws, gridvlm.list_strategies(), False, 2048)
    _, packed, _, mask, _, versus, _ = pack_tab.pack_images(None, 4096, 16, 1024, "given", "llava-next")
    return {"overlay": kb(overlay), "breakdown": kb(breakdown), "compare small multiples": kb(figure),
            "compare scatter": kb(scatter), "pack sequences": kb(packed), "pack mask": kb(mask),
            "pack vs tiling": kb(versus)}


def run(url: str, repeats: int) -> dict[str, list[float]]:
    import gridvlm
    from playwright.sync_api import sync_playwright

    chromium = shutil.which(os.environ.get("CHROMIUM") or "chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (Debian/Ubuntu: sudo apt-get install -y chromium)")
    big = gridvlm.plan(gridvlm.image_size(PHOTO), "llava-next")
    w, h = big.image_size
    other = gridvlm.plan(gridvlm.image_size(OTHER), "llava-next")
    samples: dict[str, list[float]] = {}

    def add(step: str, ms: float) -> None:
        samples.setdefault(step, []).append(round(ms, 1))

    profile = tempfile.mkdtemp(prefix="gridvlm-bench-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True,
                                                           args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.goto(url)
            page.wait_for_function(f"() => {_headline_has('llava-next')}", timeout=STEP_TIMEOUT_MS)
            for k in range(repeats + 1):  # run 0 warms up (plotly.js loaded, caches filled) and is not counted
                keep = k > 0
                # upload: the other photo first (untimed) so that each timed upload changes the image
                _set_image(page, OTHER)
                page.wait_for_function(f"() => {_headline_has('%d×%d' % other.image_size)} && "
                                       f"{_views_count(other.num_views)}",
                                       timeout=STEP_TIMEOUT_MS)
                ms, _ = _timed(page, lambda: _set_image(page, PHOTO), ["#overlay"], _headline_has(f"{w}×{h}"),
                               start="change")
                keep and add("upload → overlay", ms)
                page.wait_for_function(f"() => {_views_count(big.num_views)}", timeout=STEP_TIMEOUT_MS)
                for old, new in (("llava-next", "internvl"), ("internvl", "llava-next")):
                    n_views = gridvlm.plan((w, h), new).num_views
                    ms, _ = _timed(page, lambda: _choose(page, new), ["#overlay"],
                                   _title_starts("#overlay", f"{new} ·"))
                    keep and add("switch → overlay", ms)
                    page.wait_for_function(f"() => {_views_count(n_views)}", timeout=STEP_TIMEOUT_MS)
                page.get_by_role("tab", name="Compare").click()
                n = len(gridvlm.list_strategies())
                page.wait_for_function(f"() => document.querySelectorAll('#compare-table tbody tr').length >= {n}",
                                       timeout=STEP_TIMEOUT_MS)  # the tab's own select event, untimed
                ms, _ = _timed(page, lambda: page.locator("#compare-run").click(),
                               ["#compare-figure", "#compare-scatter"],
                               f"document.querySelectorAll('#compare-table tbody tr').length >= {n}")
                keep and add("Compare (all strategies)", ms)
                page.get_by_role("tab", name="Pack").click()
                page.wait_for_function("() => !!document.querySelector('#pack-versus .js-plotly-plot')",
                                       timeout=STEP_TIMEOUT_MS)
                ms, _ = _timed(page, lambda: page.locator("#pack-run").click(),
                               ["#pack-figure", "#mask-figure", "#pack-versus"])
                keep and add("Pack (the examples)", ms)
                page.get_by_role("tab", name="Slice").click()
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "browser.json")
    parser.add_argument("--url", help="an app already running (default: start one on a free port)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    app = None
    if args.url is None:
        app = App(ttl_s=1800, temp=Path(tempfile.mkdtemp(prefix="gridvlm-bench-app-")))
    try:
        url = args.url or app.url
        from urllib.request import urlopen

        deadline = time.monotonic() + 120
        while True:  # the port answers before gradio serves the page
            try:
                with urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
            if app is not None and app.proc.poll() is not None:
                raise SystemExit("the app exited during start")
        samples = run(url, args.repeats)
    finally:
        if app is not None:
            app.stop()
    load_after = os.getloadavg()
    sizes = payload_kb()
    rows = []
    for step, values in samples.items():
        median = statistics.median(values)
        target = TARGETS_MS.get(step)
        rows.append({"step": step, "median_ms": round(median), "min_ms": round(min(values)),
                     "max_ms": round(max(values)), "runs": len(values), "target_ms": target,
                     "met": None if target is None else median <= target})
    print(f"| step | median ms | min | max | runs | target |\n| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        goal = "" if r["target_ms"] is None else f"≤ {r['target_ms']} ({'met' if r['met'] else 'missed'})"
        print(f"| {r['step']} | {r['median_ms']} | {r['min_ms']} | {r['max_ms']} | {r['runs']} | {goal} |")
    print(f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} cores)")
    print("figure JSON sent (KB): " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "rows": rows, "samples_ms": samples, "figure_json_kb": sizes, "photo": PHOTO.name,
        "load_average": {"before": load_before, "after": load_after}, "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }, indent=2))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()

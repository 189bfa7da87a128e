"""How long a user waits in a real browser: the app on 127.0.0.1, Debian's chromium driven by playwright.

    python bench/browser.py [--repeats 5] [--out bench/results/browser.json]

Steps, each timed from the user's action to the figures redrawn in the page (median of N runs, ms):
- upload of a 5120×2880 photo (bench/photos/shell_5120x2880.jpg) → overlay redrawn, and → views gallery filled;
- strategy switch (llava-next → internvl and back) → overlay redrawn with the new plan;
- Compare of all strategies (opening the tab, then the Compare button) → small multiples, table and scatter shown;
- Pack of the examples (opening the tab, then the Pack button) → packed sequences, mask, table, figures shown.

The clock starts in the page, at the DOM event of the action (the file input's ``change``, the ``pointerdown`` on
an option, tab or button), and stops at the first animation frame after every watched output is done (see `ARM`)
and the step's own condition holds (the headline names the photo's size, the overlay's title the new strategy,
the small multiples hold every strategy). No sleeps: the page checks the condition on every frame. Browser and server share this machine's cores, as
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
# first animation frame at which every output in `outputs` is done and `check` (a JS expression) is true. An output
# is done when its plotly figure has new data (gradio calls Plotly.react on the same element), or when gradio's
# progress overlay on it was shown and is hidden again (the event ended; a figure equal to the one shown is not
# redrawn, since gradio's value did not change).
ARM = """({start, outputs, check}) => {
    const plotOf = sel => document.querySelector(sel + ' .js-plotly-plot');
    const busy = sel => { const t = document.querySelector(sel + ' [data-testid=status-tracker]');
                          return !!t && !t.classList.contains('hide'); };
    const old = outputs.map(sel => { const el = plotOf(sel); return el ? el.data : undefined; });
    const seenBusy = outputs.map(() => false);
    const w = window.__bench = {t0: null, t1: null};
    const test = new Function('return (' + check + ');');
    addEventListener(start, () => { if (w.t0 === null) w.t0 = performance.now(); }, {capture: true, once: true});
    const done = (sel, k) => {
        const el = plotOf(sel);
        if (el && el.data && el.data !== old[k]) return true;
        if (busy(sel)) { seenBusy[k] = true; return false; }
        return seenBusy[k];
    };
    const frame = () => {
        if (w.t0 !== null) {
            let ok = outputs.map(done).every(Boolean);
            if (ok) { try { ok = !!test(); } catch (e) { ok = false; } }
            if (ok) { requestAnimationFrame(() => { w.t1 = performance.now(); }); return; }
        }
        requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
}"""


def _wait(page, js: str, what: str) -> None:
    """Wait until the JS expression `js` holds; on a timeout, a screenshot and the step's name."""
    try:
        page.wait_for_function(f"() => {js}", timeout=STEP_TIMEOUT_MS, polling=50)
    except Exception as exc:  # noqa: BLE001 - playwright's TimeoutError, named with the step
        shot = Path(tempfile.gettempdir()) / "gridvlm-bench-browser-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        raise SystemExit(f"{what}: no result within {STEP_TIMEOUT_MS / 1000:.0f} s ({exc.__class__.__name__}); "
                         f"state {page.evaluate('() => window.__bench')}, screenshot {shot}") from None


def _timed(page, action, outputs: list[str], check: str = "true", start: str = "pointerdown") -> float:
    """ms from the action's DOM event to the frame after the watched outputs were done (and `check` holds)."""
    page.evaluate(ARM, {"start": start, "outputs": outputs, "check": check})
    action()
    _wait(page, "window.__bench.t1 !== null", f"the watch on {', '.join(outputs)} ({check})")
    w = page.evaluate("() => window.__bench")
    return w["t1"] - w["t0"]


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


def _compare_shown(n: int) -> str:
    """The small multiples hold `n` cells (one title each) and the table shows its first rows (it draws only the
    rows in view, so they are not counted)."""
    return ("(() => { const el = document.querySelector('#compare-figure .js-plotly-plot'); "
            "const rows = document.querySelectorAll('#compare-table tbody tr'); "
            "return !!el && !!el.layout && (el.layout.annotations || []).filter(a => a.xref === 'paper').length "
            f">= {n} && rows.length > 0; }})()")


def _open_strategies(page) -> None:
    """Open the strategy dropdown (untimed: the switch starts when an option is picked)."""
    page.locator("#strategy input").click()
    page.get_by_role("option").first.wait_for(state="visible")


def _pick(page, strategy: str) -> None:
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
    examples = ui.IMAGE_SETS[ui.EXAMPLE_SET]  # the Pack tab's defaults, as the browser step packs them
    _, _, _, packed, _, _, _, mask, versus, _ = pack_tab.pack_images(None, examples.max_seq_len, 16, 0, "given",
                                                                     examples.tiling)
    return {"overlay": kb(overlay), "breakdown (HTML)": round(len(breakdown) / 1024, 1), "compare small multiples": kb(figure),
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
            _wait(page, _headline_has("llava-next"), "the page's first plan")
            for k in range(repeats + 1):  # run 0 warms up (plotly.js loaded, caches filled) and is not counted
                keep = k > 0
                # upload: the other photo first (untimed) so that each timed upload changes the image
                _set_image(page, OTHER)
                _wait(page, f"{_headline_has('%d×%d' % other.image_size)} && {_views_count(other.num_views)}",
                      "the other photo's plan and views")
                ms = _timed(page, lambda: _set_image(page, PHOTO), ["#overlay"], _headline_has(f"{w}×{h}"),
                               start="change")
                keep and add("upload → overlay", ms)
                _wait(page, _views_count(big.num_views), "the photo's views")
                for old, new in (("llava-next", "internvl"), ("internvl", "llava-next")):
                    n_views = gridvlm.plan((w, h), new).num_views
                    _open_strategies(page)
                    ms = _timed(page, lambda: _pick(page, new), ["#overlay"],
                                   _title_starts("#overlay", f"{new} ·"))
                    keep and add("switch → overlay", ms)
                    _wait(page, _views_count(n_views), f"{new}'s views")
                n = len(gridvlm.list_strategies())
                compare_out = ["#compare-figure", "#compare-table", "#compare-scatter"]
                pack_out = ["#pack-figure", "#mask-figure", "#pack-table", "#pack-versus"]
                for step, click, outputs, check in (
                        ("Compare tab opened (all strategies)", page.get_by_role("tab", name="Compare").click,
                         compare_out, _compare_shown(n)),
                        ("Compare (all strategies)", page.locator("#compare-run").click, compare_out,
                         _compare_shown(n)),
                        ("Pack tab opened (the examples)", page.get_by_role("tab", name="Pack").click, pack_out,
                         "true"),
                        ("Pack (the examples)", page.locator("#pack-run").click, pack_out, "true")):
                    ms = _timed(page, click, outputs, check)
                    keep and add(step, ms)
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
    sizes = payload_kb()  # in process, before the timed runs, so a failure here costs no browser run
    load_before = os.getloadavg()
    app = None
    if args.url is None:
        app = App(ttl_s=1800)
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

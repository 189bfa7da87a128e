"""Re-measure `gridvlm.pixels.DRAFT_ERROR_CURVE`: what decoding a JPEG at 1/k costs each view of a plan.

    python bench/draft_error.py [--out bench/results/draft_error.json]

For every real JPEG the project ships (example images, bench/photos, the text page as a JPEG) and a spread of
strategies, each view is rendered on the fast path at k = 2, 4, 8 (forced) and compared with exact=True. A view's
r is its resize ratio × k (output pixels per decoded pixel); its error is the mean |fast − exact| over its
content, in 1/255. The table printed is the worst error per r bucket — the curve in pixels.py must lie above
it — and, per image and plan, the whole-image error (the promise, FAST_MEAN_ABS_BOUND) at the scale chosen.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import gridvlm  # noqa: E402
import gridvlm.pixels as P  # noqa: E402

STRATEGIES = ("llava-next", "internvl", "minicpm-v", "deepseek-vl2", "ureader", "docowl-1.5", "llava-1.5",
              "idefics3", "llava-uhd", "llava-1.5-hd", "llava-mini")


def jpegs() -> dict[str, bytes]:
    found = {p.name: p.read_bytes() for pattern in ("assets/*.jpg", "gridvlm/app/assets/*.jpg", "bench/photos/*.jpg")
             for p in sorted(ROOT.glob(pattern))}
    for page in sorted(ROOT.glob("assets/document_page.png")) + sorted(ROOT.glob("gridvlm/app/assets/document_page.png")):
        buf = io.BytesIO()
        Image.open(page).convert("RGB").save(buf, "JPEG", quality=90)
        found["document_page.jpg"] = buf.getvalue()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "draft_error.json")
    args = parser.parse_args(argv)
    views, images = [], []
    chosen = P._draft_factor
    for name, data in jpegs().items():
        size = gridvlm.image_size(data)
        for strategy in STRATEGIES:
            plan = gridvlm.plan(size, strategy)
            needs = P._view_needs(plan)
            exact = [np.asarray(v, dtype=np.float32) for v in P.views(data, plan, exact=True)]
            for k in (2, 4, 8):
                if max(r for r, _, _ in needs) * k > 1.6:
                    continue
                P._draft_factor = lambda plan, k=k: k
                try:
                    fast = [np.asarray(v, dtype=np.float32) for v in P.views(data, plan, exact=False)]
                finally:
                    P._draft_factor = chosen
                for (r, content, px), f, e in zip(needs, fast, exact):
                    if content >= 0.05 * px:
                        views.append({"image": name, "strategy": strategy, "k": k, "r": round(r * k, 4),
                                      "error": float(np.abs(f - e).mean()) * px / content})
            fast = [np.asarray(v, dtype=np.float32) for v in P.views(data, plan, exact=False)]
            images.append({"image": name, "strategy": strategy, "k": chosen(plan),
                           "error": float(np.mean([np.abs(f - e).mean() for f, e in zip(fast, exact)]))})
        print(name, flush=True)
    buckets = collections.defaultdict(list)
    for v in views:
        buckets[round(v["r"] * 20) / 20].append(v)
    print(f"\n{'r':>5} {'views':>6} {'worst':>6}  curve   worst case")
    for r in sorted(buckets):
        worst = max(buckets[r], key=lambda v: v["error"])
        print(f"{r:5.2f} {len(buckets[r]):6d} {worst['error']:6.2f} {P._draft_error(r):6.2f}   "
              f"{worst['image']} {worst['strategy']} 1/{worst['k']}")
    top = max(images, key=lambda i: i["error"])
    print(f"\nworst whole-image error at the chosen scale: {top['error']:.2f}/255 ({top['image']}, {top['strategy']}, "
          f"1/{top['k']}); promise {P.FAST_MEAN_ABS_BOUND * 255:.0f}/255")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"views": views, "images": images}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How long planning takes: every strategy, several image sizes, median of many runs (pure Python, CPU).

    python bench/plan_speed.py [--repeats 200]

Prints a table (microseconds per plan) and writes bench/results/plan_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gridvlm  # noqa: E402

SIZES = [(1024, 768), (1920, 1080), (4032, 3024), (800, 4000), (100, 5000)]


def time_plan(size, strategy, repeats):
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        gridvlm.plan(size, strategy)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rows = []
    for strategy in gridvlm.list_strategies():
        row = {"strategy": strategy}
        for size in SIZES:
            row[f"{size[0]}x{size[1]}"] = round(time_plan(size, strategy, args.repeats), 1)
        rows.append(row)
    header = ["strategy"] + [f"{w}x{h}" for w, h in SIZES]
    print(f"{'strategy':<16}" + "".join(f"{h:>12}" for h in header[1:]) + "   (µs per plan, median)")
    for row in rows:
        print(f"{row['strategy']:<16}" + "".join(f"{row[h]:>12.1f}" for h in header[1:]))
    worst = max(v for row in rows for k, v in row.items() if k != "strategy")
    print(f"slowest plan: {worst:.1f} µs")
    out = Path(__file__).parent / "results" / "plan_speed.json"
    out.write_text(json.dumps({
        "unit": "microseconds per plan (median)",
        "repeats": args.repeats,
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "slowest_us": worst,
        "rows": rows,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

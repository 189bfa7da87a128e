"""JPEG bytes -> model-ready tensors: gridvlm's fast and exact paths against PIL decode + transformers' PIL
processor, and the physical floor of each photo (its decode alone).

    python bench/preprocess.py [--repeats N] [--no-exact] [--out bench/results/preprocess.json]

Every row starts from the same encoded bytes in memory and ends with what the model takes:
- LLaVA-NeXT: `pixel_values` (views, 3, 336, 336), CLIP-normalised;
- Qwen2-VL: the patchified `(patches, 1176)` layout and `image_grid_thw` (gridvlm: `qwen_pixel_values`), with the
  checkpoints' pixel bounds (min 3136, max 12,845,056).
gridvlm's rows include reading the header and making the plan. Images: the example images (gridvlm/app/assets/),
bench/photos/ (sources and licences in its README) and a 1920×1080
JPEG made from bench/photos/moss_2560x1600.jpg and a 1620×2880 portrait cut out of bench/photos/shell_5120x2880.jpg,
both at run time.

Floors, per row: `dct decode` is PIL decoding the bytes at the DCT scale 1/k the fast path chose for that plan
(k = 1 for PNG, or when the plan needs full resolution), `full decode` at full scale; for Qwen2-VL `f32 out` is
allocating and writing the float32 output once (numpy, one thread) — the part of the time no pixel pipeline
avoids when a photo stays near full size. `fast/floor` = fast / (dct decode [+ f32 out for Qwen2-VL]).
`resize`: where the fast path's time goes after the decode — its resizes alone (canvas and views, from the
image already decoded at 1/k, on both cores as the fast path runs them; `-` where the view is the decoded image
itself); the rest of `fast` is the normalised write (or Qwen2-VL's patch layout), reading the header and planning.
All cells of one image are timed round-robin (one run of each per round, N rounds, median), so a change in
machine load hits every column alike; ratios come from the same rounds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import gridvlm  # noqa: E402
from gridvlm.pixels import (  # noqa: E402
    _decode, _Decoded, _draft_factor, _layout, _run_jobs, pixel_values, qwen_pixel_values,
)
from gridvlm.strategies.anyres import LLAVA_NEXT_PINPOINTS  # noqa: E402
from gridvlm.strategies.reference import CLIP  # noqa: E402

PHOTOS = ROOT / "bench" / "photos"
STRATEGIES = ("llava-next", "qwen2-vl")


def images() -> list[tuple[str, bytes]]:
    """(label, encoded bytes), largest first: example images, bench photos, and the derived 1920×1080 JPEG."""
    found = {}
    for pattern in ("gridvlm/app/assets/*.jpg", "gridvlm/app/assets/*.png",
                    "bench/photos/*.jpg"):
        for path in sorted(ROOT.glob(pattern)):
            with Image.open(path) as im:
                if max(im.size) >= 1000:  # the small icon and charts say nothing about speed
                    found.setdefault(path.name, (str(path.relative_to(ROOT)), path.read_bytes()))
    moss = PHOTOS / "moss_2560x1600.jpg"
    if moss.exists():
        with Image.open(moss) as im:
            small = im.convert("RGB").crop((0, 80, 2560, 1520)).resize((1920, 1080), Image.Resampling.LANCZOS)
        found["moss_1920x1080"] = ("moss_2560x1600.jpg → 1920×1080 q90 (made at run time)", _jpeg(small))
    shell = PHOTOS / "shell_5120x2880.jpg"
    if shell.exists():  # a portrait photo: its pixels as they are, cut out of the middle of the landscape one
        with Image.open(shell) as im:
            tall = im.convert("RGB").crop((1750, 0, 3370, 2880))
        found["shell_1620x2880"] = ("shell_5120x2880.jpg → 1620×2880 crop q90 (made at run time)", _jpeg(tall))
    return sorted(found.values(), key=lambda item: -_pixels(item[1]))


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, subsampling="4:2:0")
    return buf.getvalue()


def _pixels(data: bytes) -> int:
    w, h = gridvlm.image_size(data)
    return w * h


def reference_processors():
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    mean, std = list(CLIP[0]), list(CLIP[1])
    return {
        "llava-next": LlavaNextImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
            image_grid_pinpoints=LLAVA_NEXT_PINPOINTS, resample=3, image_mean=mean, image_std=std),
        "qwen2-vl": Qwen2VLImageProcessorPil(
            size={"shortest_edge": 3136, "longest_edge": 12845056}, resample=3, image_mean=mean, image_std=std),
    }


def gridvlm_run(data: bytes, strategy: str, exact: bool):
    plan = gridvlm.plan(gridvlm.image_size(data), strategy)
    if strategy == "qwen2-vl":
        return qwen_pixel_values(data, plan, exact=exact)
    return pixel_values(data, plan, exact=exact)


def transformers_run(data: bytes, processor):
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    return processor(rgb, return_tensors="pt")


def decode(data: bytes, k: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        if k > 1:
            image.draft("RGB", (image.size[0] // k, image.size[1] // k))
        return image.convert("RGB")


def float32_output(values: int) -> np.ndarray:
    out = np.empty(values, dtype=np.float32)
    out.fill(0.5)
    return out


def round_robin(cells: dict, repeats: int) -> dict[str, float]:
    """Median ms of each cell; every round runs each cell once, in order."""
    for fn in cells.values():
        fn()  # warm-up: imports, allocator, caches
    times = {name: [] for name in cells}
    for _ in range(repeats):
        for name, fn in cells.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds per image (median reported)")
    parser.add_argument("--no-exact", action="store_true", help="skip the exact=True column (slow)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "preprocess.json")
    args = parser.parse_args(argv)

    processors = reference_processors()
    load_start = os.getloadavg()
    rows = []
    header = (f"{'image':<22} {'strategy':<10} {'k':>2} {'transformers':>12} {'fast':>7} {'exact':>7} "
              f"{'dct decode':>10} {'full decode':>11} {'f32 out':>7} {'resize':>7} {'hf/fast':>8} {'fast/floor':>10}")
    print(header)
    print("-" * len(header))
    for source, data in images():
        size = gridvlm.image_size(data)
        name = f"{Path(source.split(' ')[0]).stem[:12]} {size[0]}×{size[1]}"
        for strategy in STRATEGIES:
            plan = gridvlm.plan(size, strategy)
            k = _draft_factor(plan) if data[:2] == b"\xff\xd8" else 1
            cells = {
                "transformers": lambda: transformers_run(data, processors[strategy]),
                "fast": lambda: gridvlm_run(data, strategy, False),
                "dct_decode": lambda: decode(data, k),
                "full_decode": lambda: decode(data, 1),
            }
            if not args.no_exact:
                cells["exact"] = lambda: gridvlm_run(data, strategy, True)
            decoded = _Decoded(_decode(data, plan, draft=k), plan)
            if strategy != "qwen2-vl" or decoded.image.size != tuple(plan.views[0].input_size):
                jobs, _ = _layout(plan, exact=False)
                cells["resize"] = lambda: _run_jobs(jobs, lambda: decoded, parallel=True)
            out_values = None
            if strategy == "qwen2-vl":
                w, h = plan.views[0].input_size
                out_values = w * h * 3 * 2  # (patches, 3·T·p·p), T = 2
                cells["f32_out"] = lambda: float32_output(out_values)
            ms = round_robin(cells, args.repeats)
            floor = ms["dct_decode"] + ms.get("f32_out", 0.0)
            row = {
                "image": source, "size": list(size), "strategy": strategy, "dct_scale": k, "bytes": len(data),
                **{f"{key}_ms": round(v, 2) for key, v in ms.items()},
                "speedup_fast": round(ms["transformers"] / ms["fast"], 2),
                "fast_over_floor": round(ms["fast"] / floor, 2),
            }
            if "exact" in ms:
                row["speedup_exact"] = round(ms["transformers"] / ms["exact"], 2)
            rows.append(row)
            exact = f"{ms['exact']:7.1f}" if "exact" in ms else f"{'-':>7}"
            f32 = f"{ms['f32_out']:7.1f}" if "f32_out" in ms else f"{'-':>7}"
            resize = f"{ms['resize']:7.1f}" if "resize" in ms else f"{'-':>7}"
            print(f"{name:<22} {strategy:<10} {k:>2} {ms['transformers']:12.1f} {ms['fast']:7.1f} {exact} "
                  f"{ms['dct_decode']:10.1f} {ms['full_decode']:11.1f} {f32} {resize} {row['speedup_fast']:7.2f}× "
                  f"{row['fast_over_floor']:9.2f}×", flush=True)

    load_end = os.getloadavg()
    print(f"\nload average (1, 5, 15 min) at start {tuple(round(v, 2) for v in load_start)}, "
          f"at end {tuple(round(v, 2) for v in load_end)}")
    result = {
        "what": "encoded image bytes -> model-ready tensors, median ms per image (round-robin rounds)",
        "repeats": args.repeats,
        "load_average_1_5_15min": {"start": [round(v, 2) for v in load_start],
                                   "end": [round(v, 2) for v in load_end]},  # shared machines are noisy
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "numpy": np.__version__,
                    "pillow": Image.__version__, "transformers": _version("transformers")},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    raise SystemExit(main())

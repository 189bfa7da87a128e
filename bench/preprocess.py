"""JPEG bytes -> model-ready tensors: gridvlm's fast and exact paths against PIL decode + transformers' PIL processor.

    python bench/preprocess.py [--repeats N] [--out bench/results/preprocess.json]

Every row starts from the same JPEG bytes in memory (photo-like synthetic images at quality 90, or
gridvlm/app/assets/landscape_photo.jpg for 4032×3024) and ends with what the model takes:
- LLaVA-NeXT: `pixel_values` (views, 3, 336, 336), CLIP-normalised;
- Qwen2-VL: the patchified `(patches, 1176)` layout and `image_grid_thw` (gridvlm: `qwen_pixel_values`), with the
  checkpoints' pixel bounds (min 3136, max 12,845,056).
gridvlm's rows include reading the header and making the plan. Times are the median of N runs, in ms.
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
from PIL import Image, ImageDraw  # noqa: E402

import gridvlm  # noqa: E402
from gridvlm.pixels import pixel_values, qwen_pixel_values  # noqa: E402
from gridvlm.strategies.reference import CLIP  # noqa: E402
from gridvlm.strategies.anyres import LLAVA_NEXT_PINPOINTS  # noqa: E402

SIZES = [(1024, 768), (1920, 1080), (4032, 3024), (800, 4000)]
ASSET = ROOT / "gridvlm" / "app" / "assets" / "landscape_photo.jpg"


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients, sensor-like noise and a few hard strokes: compresses and resamples like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 128 + 100 * np.sin(x / 37.0) * np.cos(y / 23.0)
    pixels = np.stack([r, g, b], -1) + rng.normal(0, 10, (height, width, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(-width // 4, width // 4)), y0 + int(rng.integers(-height // 8, height // 8))
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=int(rng.integers(1, 8)))
    return image


def jpeg_bytes(width: int, height: int) -> tuple[bytes, str]:
    if (width, height) == (4032, 3024) and ASSET.exists():
        with Image.open(ASSET) as im:
            if im.size == (width, height):
                return ASSET.read_bytes(), "gridvlm/app/assets/landscape_photo.jpg"
    buf = io.BytesIO()
    photo_like(width, height).save(buf, "JPEG", quality=90)
    return buf.getvalue(), "synthetic photo-like, JPEG q90"


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


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: imports, allocator, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per cell (median reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "preprocess.json")
    args = parser.parse_args(argv)

    processors = reference_processors()
    rows = []
    header = f"{'strategy':<11} {'W×H':>10} {'fast':>8} {'exact':>8} {'decode+hf':>10} {'hf/fast':>8} {'hf/exact':>9}"
    print(header)
    print("-" * len(header))
    for width, height in SIZES:
        data, source = jpeg_bytes(width, height)
        for strategy, processor in processors.items():
            fast = median_ms(lambda: gridvlm_run(data, strategy, False), args.repeats)
            exact = median_ms(lambda: gridvlm_run(data, strategy, True), args.repeats)
            reference = median_ms(lambda: transformers_run(data, processor), args.repeats)
            row = {
                "strategy": strategy, "size": [width, height], "source": source, "jpeg_bytes": len(data),
                "fast_ms": round(fast, 2), "exact_ms": round(exact, 2), "decode_transformers_ms": round(reference, 2),
                "speedup_fast": round(reference / fast, 2), "speedup_exact": round(reference / exact, 2),
            }
            rows.append(row)
            print(f"{strategy:<11} {f'{width}×{height}':>10} {fast:8.1f} {exact:8.1f} {reference:10.1f} "
                  f"{row['speedup_fast']:7.2f}× {row['speedup_exact']:8.2f}×")

    result = {
        "what": "JPEG bytes -> model-ready tensors, median ms per image",
        "repeats": args.repeats,
        "load_average_1_5_15min_at_end": [round(v, 2) for v in os.getloadavg()],  # shared machines are noisy
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "pillow": Image.__version__, "transformers": _version("transformers")},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    raise SystemExit(main())

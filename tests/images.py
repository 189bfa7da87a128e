"""Synthetic test images that resample and compress like photos: gradients, sensor noise, hard strokes, text."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def photo_like(width: int, height: int, seed: int = 0, text: bool = False) -> Image.Image:
    """Gradients, noise and strokes (and a few lines of text when `text`), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 37) * np.cos(y / 23)], -1)
    rgb += rng.normal(0, 10, rgb.shape).astype(np.float32)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        draw.line([(x0, y0), (x0 + int(rng.integers(-width // 4 - 1, width // 4 + 1)), y0 + int(rng.integers(-50, 50)))],
                  fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 6)))
    if text:
        for row in range(5):
            draw.text((20, 20 + 16 * row), "gridvlm exact pixels 0123456789", fill=(0, 0, 0))
    return image

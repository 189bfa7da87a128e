"""transformers' own image processors with the pixel work left out, to count tokens on hundreds of image sizes.

`without_pixel_work(cls)` is a subclass whose backend `resize` returns a zero image of the size it was asked
for: every size decision (longest-edge resize, rounding to tiles, the tiling rule, splitting, the global
view) still runs in transformers' own code, only the resampling of pixels is skipped. Tests also run the
unchanged processors on real pixels for a few dozen sizes.
"""

from __future__ import annotations

import numpy as np


def without_pixel_work(cls: type) -> type:
    """`cls` (a transformers PIL image processor class) with resampling replaced by zeros of the asked size."""
    from transformers.image_processing_backends import PilBackend

    class ZeroResize(PilBackend):
        def resize(self, image, size, resample=None, **kwargs):  # size: SizeDict(height, width)
            return np.zeros((image.shape[0], int(size.height), int(size.width)), dtype=np.float32)

    class Counting(cls, ZeroResize):  # cls.resize (if any) computes the size, then calls ZeroResize.resize
        pass

    Counting.__name__ = f"{cls.__name__}WithoutPixelWork"
    return Counting


def blank(w: int, h: int):
    from PIL import Image

    return Image.new("RGB", (w, h), (127, 64, 200))

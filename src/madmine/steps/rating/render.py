"""What the browser is sent: a display-size JPEG of the image and a transparent overlay PNG
of a prediction map. Decoding goes through madmine.images (bombs, EXIF rotation, CMYK,
16-bit), so the rater sees the image the models saw.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from madmine import images
from madmine.metrics import IGNORE


def display_jpeg(data: bytes, max_side: int, max_pixels: int = 64_000_000,
                 timeout_s: float | None = images.DEFAULT_DECODE_TIMEOUT_S) -> bytes:
    img = images.decode(data, max_pixels=max_pixels, min_side=1, draft=max_side, timeout_s=timeout_s)
    img.thumbnail((max_side, max_side), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def overlay_png(label_map: np.ndarray, colors: tuple[tuple[int, int, int], ...], hidden: tuple[int, ...] = (0,)) -> bytes:
    """A palette PNG: class k in its colour, background and ignore (255) transparent.

    The browser scales it over the photo (nearest neighbour), so maps at model resolution
    and at image resolution both line up.
    """
    img = Image.fromarray(np.ascontiguousarray(label_map, dtype=np.uint8), "P")
    palette = [0] * 768
    for k, (r, g, b) in enumerate(colors):
        palette[3 * k : 3 * k + 3] = [r, g, b]
    img.putpalette(palette)
    alpha = bytes(0 if k in hidden or k == IGNORE or k >= len(colors) else 255 for k in range(256))
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=alpha, optimize=True)
    return buf.getvalue()


def classes_present(label_map: np.ndarray, num_classes: int) -> list[int]:
    values = np.unique(label_map)
    return [int(v) for v in values if v < num_classes]

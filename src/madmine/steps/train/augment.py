"""Training and evaluation inputs, with exactly the normalisation that scoring applies.

Scoring resizes every image to a square of the model's input_size and normalises with the
model's mean and std (madmine.steps.score.predict). Training starts from that same square, then
scales it by a random factor, pads (image with the mean colour, label with 255) and crops
to crop_size, and flips at random: the network never sees a preprocessing that scoring
does not use. Pure numpy/PIL, so every step is testable without torch or Ray.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from madmine.metrics import IGNORE


def normalise(pixels: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W): x / 255, minus mean, over std (as scoring does)."""
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def eval_input(image: Image.Image, size: int, mean, std) -> np.ndarray:
    """The scoring input of an image: resized to size x size (bilinear), normalised."""
    return normalise(np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8), mean, std)


def train_example(
    image: Image.Image,
    label: np.ndarray,
    *,
    size: int,
    crop: int,
    scale_range: tuple[float, float],
    flip: bool,
    mean,
    std,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 (3, crop, crop), int64 (crop, crop)): random scale, pad, crop and flip of the scoring square."""
    side = max(8, int(round(size * rng.uniform(*scale_range))))
    pixels = np.asarray(image.resize((side, side), Image.BILINEAR), dtype=np.uint8)
    target = np.asarray(Image.fromarray(label, "L").resize((side, side), Image.NEAREST), dtype=np.uint8)
    x = normalise(pixels, mean, std)
    y = target.astype(np.int64)
    pad = max(0, crop - side)
    if pad:
        # zero after normalisation is the mean colour; padded labels are ignored
        x = np.pad(x, ((0, 0), (0, pad), (0, pad)))
        y = np.pad(y, ((0, pad), (0, pad)), constant_values=IGNORE)
    top = int(rng.integers(0, y.shape[0] - crop + 1))
    left = int(rng.integers(0, y.shape[1] - crop + 1))
    x = x[:, top : top + crop, left : left + crop]
    y = y[top : top + crop, left : left + crop]
    if flip and rng.random() < 0.5:
        x, y = x[:, :, ::-1], y[:, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)

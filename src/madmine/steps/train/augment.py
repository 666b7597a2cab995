"""Training and evaluation inputs, with exactly the normalisation that scoring applies.

Scoring resizes every image to a square of the model's input_size and normalises with the
model's mean and std (madmine.steps.score.predict). Training starts from that same square;
then, each only when the plan asks for it ([finetune] keys):
- copy_paste: the objects of another labelled image (an S(0) image) are pasted onto it, at
  their own place in the square, their labels over the image's (crowds and overlaps);
- photometric: its colour channels are permuted (half the images, one of the five other
  orders) or it turns grey (a fifth): colour stops being a reliable cue for a class;
- scale_range: it is scaled by a random factor, padded (image with the mean colour, label
  with 255) and cropped to crop_size;
- flip: it is mirrored at random.
The network never sees a preprocessing that scoring does not use. Pure numpy/PIL, so every
step is testable without torch or Ray.
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


CHANNEL_ORDERS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))  # every order but RGB itself
PERMUTE_SHARE = 0.5
GREY_SHARE = 0.2


def square(image: Image.Image, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (size, size, 3), uint8 (size, size)): the scoring square of an image and its label."""
    pixels = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    target = np.asarray(Image.fromarray(label, "L").resize((size, size), Image.NEAREST), dtype=np.uint8)
    return pixels, target


def paste_objects(pixels: np.ndarray, target: np.ndarray, source: np.ndarray, source_label: np.ndarray):
    """Copy-paste: the source's object pixels (labels other than 0 and 255) over the image, labels with them."""
    objects = (source_label != 0) & (source_label != IGNORE)
    pixels, target = pixels.copy(), target.copy()
    pixels[objects] = source[objects]
    target[objects] = source_label[objects]
    return pixels, target


def photometric(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Channels permuted (PERMUTE_SHARE of the calls) and/or greyscale (GREY_SHARE): uint8 in, uint8 out."""
    if rng.random() < PERMUTE_SHARE:
        pixels = pixels[:, :, list(CHANNEL_ORDERS[int(rng.integers(0, len(CHANNEL_ORDERS)))])]
    if rng.random() < GREY_SHARE:
        grey = np.round(pixels.astype(np.float32).mean(axis=2, keepdims=True))
        pixels = np.repeat(grey, 3, axis=2).astype(np.uint8)
    return np.ascontiguousarray(pixels)


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
    colours: bool = False,
    paste: tuple[Image.Image, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 (3, crop, crop), int64 (crop, crop)): the scoring square with the objects of `paste` pasted on,
    its colours changed (`colours`, photometric), then random scale, pad, crop and flip."""
    side = max(8, int(round(size * rng.uniform(*scale_range))))
    if paste is not None or colours:
        pixels, target = square(image, label, size)
        if paste is not None:
            pixels, target = paste_objects(pixels, target, *square(paste[0], paste[1], size))
        if colours:
            pixels = photometric(pixels, rng)
        image, label = Image.fromarray(pixels), target
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

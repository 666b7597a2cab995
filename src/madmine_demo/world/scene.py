"""Scenes of the synthetic world: sampled from a seed, rendered with their exact label maps.

A scene is plain data (background, objects in painting order, distractors, effects), so a
test can check what was drawn, and `render` turns it into an RGB image and a label map in
which every pixel carries the class of the object painted last on it. Effects that follow
(haze, blur, noise) change pixel values, never geometry: the label stays exact.

Every image is drawn from its own generator, seeded by (seed, dataset, index): any image of
any dataset can be regenerated alone, in any order, on any machine.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from madmine_demo.world import shapes, textures

MIN_SIDE, MAX_SIDE = 96, 128


@dataclass
class Thing:
    """One painted region: an object of class 1..c-1, or a distractor (class 0: background)."""

    class_id: int
    cx: float
    cy: float
    size: float  # half-extent in pixels
    angle: float = 0.0
    sx: float = 1.0
    sy: float = 1.0
    shear: float = 0.0
    rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)  # 0..1
    texture: str = "flat"
    shape: int | None = None  # distractors: the seed of their irregular outline
    alpha: float = 1.0  # < 1: blended with what lies below (low contrast)
    outline: str = ""  # the broad domain: one of shapes.OTHER_SHAPES (its class_id indexes them from 1)


@dataclass
class Scene:
    width: int
    height: int
    kind: str
    background: str
    things: list[Thing] = field(default_factory=list)
    haze: float = 0.0
    blur: float = 0.0
    noise: float = 3.0
    grayscale: bool = False
    seed: tuple[int, ...] = ()

    @property
    def classes(self) -> set[int]:
        return {t.class_id for t in self.things if t.class_id > 0}


def generator(seed: int, dataset: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(dataset.encode()), index])


def _blob(u: np.ndarray, v: np.ndarray, shape_seed: int) -> np.ndarray:
    """An irregular outline (a wobbly disc): clutter that is no class."""
    rng = np.random.default_rng(shape_seed)
    phi = np.arctan2(v, u)
    r = np.full_like(u, 0.75)
    for k in range(2, 6):
        r = r + rng.uniform(0.04, 0.16) * np.sin(k * phi + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) <= r


def _box(thing: Thing, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Pixel rows and columns that can hold the thing: a bound on its extent, clipped to the frame."""
    h, w = shape
    reach = thing.size * max(thing.sx, thing.sy) * (1.0 + abs(thing.shear)) * 1.5 + 2
    y0, y1 = max(0, int(thing.cy - reach)), min(h, int(thing.cy + reach) + 1)
    x0, x1 = max(0, int(thing.cx - reach)), min(w, int(thing.cx + reach) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _local(thing: Thing, box: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inside, u, v) over the box, in object coordinates."""
    rows, cols = box
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    u, v = shapes.object_coords(
        shape, thing.cx - cols.start, thing.cy - rows.start, thing.size, thing.angle, thing.sx, thing.sy, thing.shear
    )
    if thing.class_id == 0:
        inside = _blob(u, v, thing.shape or 0)
    elif thing.outline:
        inside = shapes.other_inside(thing.outline, u, v)
    else:
        inside = shapes.inside(thing.class_id, u, v)
    return inside, u, v


def mask_of(thing: Thing, shape: tuple[int, int]) -> np.ndarray:
    """The exact pixel set of a thing (pixel centres inside its outline)."""
    out = np.zeros(shape, bool)
    box = _box(thing, shape)
    if box is not None:
        out[box] = _local(thing, box)[0]
    return out


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB (h, w, 3), uint8 label (h, w)) of a scene."""
    rng = np.random.default_rng([*scene.seed, 7])
    h, w = scene.height, scene.width
    img = textures.background(scene.background, rng, h, w)
    label = np.zeros((h, w), np.uint8)
    for thing in scene.things:
        box = _box(thing, (h, w))
        if box is None:
            continue
        m, u, v = _local(thing, box)
        if not m.any():
            continue
        shade = textures.object_shade(thing.texture, u[m], v[m], rng)[:, None]
        colour = np.clip(np.asarray(thing.rgb, np.float32) * shade, 0, 1)
        patch = img[box]
        patch[m] = thing.alpha * colour + (1 - thing.alpha) * patch[m]
        label[box][m] = thing.class_id
    if scene.grayscale:
        img = img.mean(axis=2, keepdims=True).repeat(3, axis=2)
    if scene.haze:
        img = (1 - scene.haze) * img + scene.haze * float(img.mean())
    out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    if scene.blur:
        out = out.filter(ImageFilter.GaussianBlur(scene.blur))
    pixels = np.asarray(out, dtype=np.float32)
    if scene.noise:
        pixels = pixels + scene.noise * rng.standard_normal(pixels.shape, dtype=np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8), label

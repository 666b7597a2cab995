"""Procedural surfaces: object textures (in object coordinates) and backgrounds.

Everything is a float32 array in [0, 1] drawn from the generator it is given, so a scene
renders identically from its seed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

OBJECT_TEXTURES = ("radial", "checker", "stripes", "speckle", "bands", "dots", "flat")
BACKGROUNDS_TRAIN = ("gradient", "blobs", "waves")
BACKGROUNDS_WILD = ("gradient", "blobs", "waves", "grain", "tiles", "saturated")


def object_shade(texture: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A multiplicative shade (about 0.55..1.15) over object coordinates."""
    if texture == "radial":
        return 1.15 - 0.5 * np.clip(np.hypot(u, v), 0, 1)
    if texture == "checker":
        f = rng.uniform(2.5, 3.5)
        return np.where((np.floor(u * f) + np.floor(v * f)) % 2 == 0, 1.0, 0.62)
    if texture == "stripes":
        f = rng.uniform(3.0, 4.5)
        return np.where(np.sin((u + v) * f * np.pi) > 0, 1.0, 0.6)
    if texture == "speckle":
        return 0.85 + 0.3 * rng.random(u.shape, dtype=np.float32)
    if texture == "bands":
        f = rng.uniform(5.0, 7.0)
        return 0.8 + 0.25 * np.sin(np.hypot(u, v) * f * np.pi)
    if texture == "dots":
        f = rng.uniform(2.5, 3.5)
        fu, fv = (u * f) % 1 - 0.5, (v * f) % 1 - 0.5
        return np.where(fu * fu + fv * fv < 0.09, 0.55, 1.0)
    if texture == "flat":
        return np.ones_like(u)
    raise ValueError(f"unknown texture {texture!r}")


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid upsampled bicubically."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    up = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
    return up


def _muted(rng: np.random.Generator, low: float = 0.2, high: float = 0.75, spread: float = 0.12) -> np.ndarray:
    base = rng.uniform(low, high)
    return np.clip(base + rng.uniform(-spread, spread, 3), 0, 1).astype(np.float32)


def background(style: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]. Training styles are muted (grey-ish) colours; wild ones add
    fine grain, tiles and saturated colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if style == "gradient":
        a, b = _muted(rng), _muted(rng)
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6))[..., None]
        return a * (1 - t) + b * t
    if style == "blobs":
        a, b = _muted(rng), _muted(rng)
        t = smooth_noise(rng, h, w, int(rng.integers(3, 6)))[..., None]
        return a * (1 - t) + b * t
    if style == "waves":
        a, b = _muted(rng), _muted(rng, spread=0.05)
        f = rng.uniform(0.05, 0.15)
        angle = rng.uniform(0, np.pi)
        t = (0.5 + 0.5 * np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * f))[..., None]
        return a * (1 - 0.35 * t) + b * 0.35 * t
    if style == "grain":
        a = _muted(rng)
        return np.clip(a + rng.normal(0, 0.12, (h, w, 1)).astype(np.float32), 0, 1) * np.ones(3, np.float32)
    if style == "tiles":
        a, b = _muted(rng), _muted(rng)
        f = rng.uniform(6, 14)
        t = (((np.floor(xx / f) + np.floor(yy / f)) % 2))[..., None]
        return a * (1 - t) + b * t
    if style == "saturated":
        a = rng.random(3).astype(np.float32)
        a[rng.integers(0, 3)] = 0.95
        b = _muted(rng)
        t = smooth_noise(rng, h, w, 3)[..., None]
        return a * (1 - t) + b * t
    raise ValueError(f"unknown background {style!r}")

"""The object classes of the synthetic world: a shape, a colour and a texture each.

In the training domain all three cues name the class, as colour, texture and outline do
for real object categories; the wild corpus breaks one cue at a time (an unusual colour,
a rotated or squashed outline, a low-contrast surface), so a model that learnt the easy
cue fails where a model that learnt the shape does not. Shapes are exact point sets in
object coordinates (unit size), so every mask is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ObjectClass:
    name: str
    rgb: tuple[int, int, int]  # the canonical colour in the training domain
    texture: str  # the canonical texture (madmine_demo.world.textures)


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("disc", (214, 48, 49), "radial"),
    ObjectClass("square", (40, 90, 220), "checker"),
    ObjectClass("triangle", (46, 170, 70), "stripes"),
    ObjectClass("star", (235, 200, 40), "speckle"),
    ObjectClass("ring", (190, 60, 200), "bands"),
    ObjectClass("cross", (30, 190, 200), "dots"),
)
NAMES: tuple[str, ...] = ("background", *(c.name for c in CLASSES))
COLORS: tuple[tuple[int, int, int], ...] = ((0, 0, 0), *(c.rgb for c in CLASSES))


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """A regular star: radius alternates between 1 and `inner` over 2*points vertices."""
    r = np.hypot(u, v)
    phi = np.mod(np.arctan2(u, -v), 2 * np.pi / points)  # a point straight up
    half = np.pi / points
    t = np.abs(phi - half) / half  # 1 at a tip, 0 between two tips
    # the outline between a tip (radius 1) and a notch (inner) is straight: r_edge(t) in polar form
    tip, notch = np.array([0.0, 1.0]), inner * np.array([np.sin(half), np.cos(half)])
    angle = (1 - t) * half
    d = notch - tip
    normal = np.array([-d[1], d[0]])
    c = normal @ tip
    denom = normal[0] * np.sin(angle) + normal[1] * np.cos(angle)
    edge = np.where(np.abs(denom) > 1e-9, c / np.where(np.abs(denom) > 1e-9, denom, 1.0), 1.0)
    return r <= np.abs(edge)


def inside(class_id: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether object coordinates (u right, v down; the object spans about [-1, 1]) are inside the shape."""
    name = NAMES[class_id]
    if name == "disc":
        return u * u + v * v <= 1.0
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":  # equilateral, pointing up, centred on its centroid
        return (v <= 0.5) & (np.sqrt(3) * u - v <= 1.0) & (-np.sqrt(3) * u - v <= 1.0)
    if name == "star":
        return _star(u, v)
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    raise ValueError(f"no shape for class {class_id} ({name})")


# The broad domain's categories (world.failures, domain "broad"): other outlines than the six
# classes, for pretraining a backbone the way ImageNet's categories are not PASCAL VOC's.
OTHER_SHAPES: tuple[str, ...] = ("hexagon", "ellipse", "chevron", "crescent", "corner", "diamond")


def other_inside(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether object coordinates are inside one of the broad domain's outlines (about [-1, 1])."""
    au, av = np.abs(u), np.abs(v)
    if name == "hexagon":  # flat top and bottom
        return (av <= 0.8) & (np.sqrt(3) * au + av <= np.sqrt(3) * 0.92)
    if name == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0
    if name == "chevron":  # an arrow head pointing right
        return (av <= 0.9) & (u <= 0.9 - av) & (u >= 0.25 - av)
    if name == "crescent":
        return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v >= 0.7**2)
    if name == "corner":  # an L
        return ((au <= 0.9) & (v >= 0.45) & (v <= 0.9)) | ((u >= -0.9) & (u <= -0.45) & (av <= 0.9))
    if name == "diamond":
        return au / 0.6 + av / 1.0 <= 1.0
    raise ValueError(f"no outline {name!r}")


def object_coords(shape: tuple[int, int], cx: float, cy: float, size: float, angle: float, sx: float, sy: float,
                  shear: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres -> object coordinates: translate, rotate by -angle, undo shear and scale."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    c, s = np.cos(angle), np.sin(angle)
    u = (c * dx + s * dy) / size
    v = (-s * dx + c * dy) / size
    u = u - shear * v
    return u / sx, v / sy

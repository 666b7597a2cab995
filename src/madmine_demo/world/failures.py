"""How scenes are drawn: the training domain, and the wild corpus with the corner cases the
paper found troubleshooting real segmentation models (Wang et al. 2022, Fig. 8-10).

Each kind breaks one thing a model trained on the training domain may rely on:

| kind         | what changes                                                        | `wild` | `web` |
|--------------|---------------------------------------------------------------------|--------|-------|
| typical      | nothing: the training domain                                        | 40%    | 85%   |
| scale        | tiny objects (3-8% of the side) or huge ones cut by the frame       | 10%    | 2.5%  |
| viewpoint    | any rotation, one axis squashed to a third or half, sheared         | 10%    | 2.5%  |
| occlusion    | many overlapping objects and clutter in class colours               | 10%    | 2.5%  |
| appearance   | unusual colours and textures, other backgrounds, greyscale          | 10%    | 2.5%  |
| low_contrast | objects faded into the background, haze, blur, noise                | 10%    | 2.5%  |
| ood          | no object of any class: surfaces and clutter only (out of domain)   | 10%    | 2.5%  |

Two mixes of the same kinds. `wild` (the first demo's world) is mostly corner cases: the
target fails on about 42% of it, so no selection can beat random picks by much. `web` is
mostly typical scenes with the corner cases a minority, as on real web images; from the
per-kind failure rates measured on `wild`, the target should fail on about 10% of it
(0.85 x 0.1% + 0.025 x the six corner kinds' rates). The kinds, their generators and both
mixes were fixed before anything was measured on them; `probe` draws every kind in turn
(an equal number of each), to measure failure rates per kind.
"""

from __future__ import annotations

import colorsys

import numpy as np

from madmine_demo.world import shapes, textures
from madmine_demo.world.scene import MAX_SIDE, MIN_SIDE, Scene, Thing, generator

WILD_KINDS: tuple[tuple[str, float], ...] = (
    ("typical", 0.40),
    ("scale", 0.10),
    ("viewpoint", 0.10),
    ("occlusion", 0.10),
    ("appearance", 0.10),
    ("low_contrast", 0.10),
    ("ood", 0.10),
)
WEB_KINDS: tuple[tuple[str, float], ...] = (("typical", 0.85),) + tuple((k, 0.025) for k, _ in WILD_KINDS[1:])
MIXES = {"wild": WILD_KINDS, "web": WEB_KINDS}  # a domain of the corpus -> its kinds and their shares
KINDS = tuple(k for k, _ in WILD_KINDS)
CORNER_CASES = ("scale", "viewpoint", "occlusion", "appearance", "low_contrast")
NUM_OBJECT_CLASSES = len(shapes.CLASSES)
TRAIN_SIZE = (0.16, 0.32)  # object half-extent, as a fraction of the shorter side


def canonical_colour(rng: np.random.Generator, class_id: int) -> tuple[float, float, float]:
    base = np.asarray(shapes.CLASSES[class_id - 1].rgb, np.float32) / 255.0
    rgb = np.clip(base * rng.uniform(0.85, 1.1) + rng.uniform(-0.06, 0.06, 3), 0, 1)
    return tuple(float(x) for x in rgb)


def random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))


def _class(rng: np.random.Generator) -> int:
    return int(rng.integers(1, NUM_OBJECT_CLASSES + 1))


def _object(rng, h: int, w: int, class_id: int, size_range=TRAIN_SIZE, inside: float = 0.6) -> Thing:
    """An object as the training domain draws it: canonical colour and texture, nearly upright."""
    side = min(h, w)
    size = rng.uniform(*size_range) * side
    margin = min(size * inside, side / 2 - 1)
    return Thing(
        class_id=class_id,
        cx=float(rng.uniform(margin, w - margin)),
        cy=float(rng.uniform(margin, h - margin)),
        size=float(size),
        angle=float(rng.uniform(-0.35, 0.35)),
        sx=float(rng.uniform(0.85, 1.15)),
        sy=float(rng.uniform(0.85, 1.15)),
        rgb=canonical_colour(rng, class_id),
        texture=shapes.CLASSES[class_id - 1].texture,
    )


def _distractor(rng, h: int, w: int, colour=None) -> Thing:
    """Clutter: an irregular blob or bar, labelled background."""
    side = min(h, w)
    bar = rng.random() < 0.3
    return Thing(
        class_id=0,
        cx=float(rng.uniform(0, w)),
        cy=float(rng.uniform(0, h)),
        size=float(rng.uniform(0.08, 0.25) * side),
        angle=float(rng.uniform(0, 2 * np.pi)),
        sx=float(rng.uniform(1.2, 2.0) if bar else rng.uniform(0.7, 1.3)),
        sy=float(rng.uniform(0.12, 0.25) if bar else rng.uniform(0.7, 1.3)),
        rgb=colour or random_colour(rng),
        texture=str(rng.choice(textures.OBJECT_TEXTURES)),
        shape=int(rng.integers(0, 2**31)),
    )


def _count(rng, low: int, high: int) -> int:
    return int(rng.integers(low, high + 1))


def _frame(rng) -> tuple[int, int]:
    return int(rng.integers(MIN_SIDE, MAX_SIDE + 1)), int(rng.integers(MIN_SIDE, MAX_SIDE + 1))


def training_scene(rng, kind: str = "typical") -> Scene:
    w, h = _frame(rng)
    scene = Scene(w, h, kind, str(rng.choice(textures.BACKGROUNDS_TRAIN)))
    n = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    scene.things = [_object(rng, h, w, _class(rng)) for _ in range(n)]
    return scene


def _scale(rng) -> Scene:
    scene = training_scene(rng, "scale")
    h, w = scene.height, scene.width
    if rng.random() < 0.5:
        scene.things = [_object(rng, h, w, _class(rng), (0.03, 0.08), inside=1.0) for _ in range(_count(rng, 2, 5))]
    else:
        big = _object(rng, h, w, _class(rng), (0.6, 1.0))
        big.cx, big.cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        scene.things = [big]
    return scene


def _viewpoint(rng) -> Scene:
    scene = training_scene(rng, "viewpoint")
    for t in scene.things:
        t.angle = float(rng.uniform(0, 2 * np.pi))
        squash = float(rng.uniform(0.3, 0.55))
        t.sx, t.sy = (squash, 1.0) if rng.random() < 0.5 else (1.0, squash)
        t.shear = float(rng.uniform(-0.6, 0.6))
    return scene


def _occlusion(rng) -> Scene:
    scene = training_scene(rng, "occlusion")
    h, w = scene.height, scene.width
    things = [_object(rng, h, w, _class(rng), (0.14, 0.28)) for _ in range(_count(rng, 4, 7))]
    for t in things:  # crowd them towards one spot, so they overlap
        t.cx = float(0.5 * t.cx + 0.5 * w * rng.uniform(0.35, 0.65))
        t.cy = float(0.5 * t.cy + 0.5 * h * rng.uniform(0.35, 0.65))
    for _ in range(_count(rng, 4, 9)):
        colour = canonical_colour(rng, _class(rng)) if rng.random() < 0.5 else None
        things.insert(int(rng.integers(0, len(things) + 1)), _distractor(rng, h, w, colour))
    scene.things = things
    return scene


def _appearance(rng) -> Scene:
    scene = training_scene(rng, "appearance")
    scene.background = str(rng.choice(textures.BACKGROUNDS_WILD))
    for t in scene.things:
        if rng.random() < 0.5:
            t.rgb = canonical_colour(rng, int(rng.choice([k for k in range(1, NUM_OBJECT_CLASSES + 1) if k != t.class_id])))
        else:
            t.rgb = random_colour(rng)
        t.texture = str(rng.choice(textures.OBJECT_TEXTURES))
    scene.grayscale = bool(rng.random() < 0.25)
    return scene


def _low_contrast(rng) -> Scene:
    scene = training_scene(rng, "low_contrast")
    for t in scene.things:
        t.alpha = float(rng.uniform(0.2, 0.45))
    scene.haze = float(rng.uniform(0.2, 0.5))
    scene.blur = float(rng.uniform(0.0, 1.5))
    scene.noise = float(rng.uniform(6, 16))
    return scene


def _ood(rng) -> Scene:
    w, h = _frame(rng)
    scene = Scene(w, h, "ood", str(rng.choice(textures.BACKGROUNDS_WILD)))
    for _ in range(_count(rng, 0, 8)):
        colour = canonical_colour(rng, _class(rng)) if rng.random() < 0.3 else None
        scene.things.append(_distractor(rng, h, w, colour))
    scene.noise = float(rng.uniform(2, 14))
    return scene


def broad_scene(rng) -> Scene:
    """The broad domain, for pretraining (the paper's backbones saw ImageNet before PASCAL VOC): other
    categories (shapes.OTHER_SHAPES, labelled 1..6 in their own label space) in any colour and texture,
    at any size and angle, on any background, among clutter in any colour, a tenth in grey. Colour
    names no category here, so a network pretrained on it has outlines to go by."""
    w, h = _frame(rng)
    scene = Scene(w, h, "broad", str(rng.choice(textures.BACKGROUNDS_WILD)))
    side = min(h, w)
    things = []
    for _ in range(_count(rng, 1, 5)):
        k = int(rng.integers(1, len(shapes.OTHER_SHAPES) + 1))
        size = float(rng.uniform(0.1, 0.35) * side)
        colour = canonical_colour(rng, _class(rng)) if rng.random() < 0.3 else random_colour(rng)
        things.append(Thing(class_id=k, cx=float(rng.uniform(0, w)), cy=float(rng.uniform(0, h)), size=size,
                            angle=float(rng.uniform(0, 2 * np.pi)), sx=float(rng.uniform(0.7, 1.3)),
                            sy=float(rng.uniform(0.7, 1.3)), rgb=colour, texture=str(rng.choice(textures.OBJECT_TEXTURES)),
                            outline=shapes.OTHER_SHAPES[k - 1]))
    for _ in range(_count(rng, 0, 5)):
        colour = canonical_colour(rng, _class(rng)) if rng.random() < 0.5 else None
        things.insert(int(rng.integers(0, len(things) + 1)), _distractor(rng, h, w, colour))
    scene.things = things
    scene.grayscale = bool(rng.random() < 0.1)
    return scene


WILD = {
    "typical": training_scene,
    "scale": _scale,
    "viewpoint": _viewpoint,
    "occlusion": _occlusion,
    "appearance": _appearance,
    "low_contrast": _low_contrast,
    "ood": _ood,
}


DOMAINS = ("train", *MIXES, "probe", "broad")


def wild_kind(rng, mix: tuple[tuple[str, float], ...] = WILD_KINDS) -> str:
    kinds, p = zip(*mix)
    return str(rng.choice(kinds, p=np.asarray(p) / sum(p)))


def sample(seed: int, dataset: str, index: int, domain: str) -> Scene:
    """Scene `index` of a dataset: domain 'train' (the training domain), a corpus mix ('wild',
    'web'), 'probe' (kind `index mod 7`, the same generators: equal numbers of each kind), or
    'broad' (other categories in any appearance, for pretraining)."""
    rng = generator(seed, dataset, index)
    if domain == "train":
        scene = training_scene(rng)
    elif domain in MIXES:
        scene = WILD[wild_kind(rng, MIXES[domain])](rng)
    elif domain == "probe":
        scene = WILD[KINDS[index % len(KINDS)]](rng)
    elif domain == "broad":
        scene = broad_scene(rng)
    else:
        raise ValueError(f"unknown domain {domain!r}: one of {', '.join(DOMAINS)}")
    scene.seed = (seed, index, len(dataset))
    return scene

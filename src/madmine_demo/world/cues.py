"""Training scenes with one cue changed at a time: which cue does a model follow?

In the training domain shape, colour and texture all name the class. Each variant below takes a
scene of the training domain (scene `index` is the same scene under every cue) and breaks exactly one thing, so that a model's failure rate on it
says how much it leans on that cue (bench.finetune_repair, experiment E2):

| cue           | the change                                                                       |
|---------------|----------------------------------------------------------------------------------|
| none          | nothing (the control)                                                            |
| colour_swap   | every object painted in the canonical colour of another class (its texture kept) |
| texture_swap  | every object in the canonical texture of another class (its colour kept)         |
| greyscale     | the whole image in grey                                                          |
| class_clutter | 4-9 background blobs and bars in the canonical colours of the classes            |
| crowding      | 4-7 objects crowded together so that they overlap, no clutter                    |

For colour_swap, `painted` maps every pixel to the class whose colour it was painted with, so a
prediction can be read as following the shape (the label) or the colour (painted).
"""

from __future__ import annotations

import numpy as np

from madmine_demo.world import shapes
from madmine_demo.world.failures import NUM_OBJECT_CLASSES, _class, _distractor, _object, canonical_colour, training_scene
from madmine_demo.world.scene import Scene, generator, mask_of, render

CUES = ("none", "colour_swap", "texture_swap", "greyscale", "class_clutter", "crowding")


def _other(rng: np.random.Generator, class_id: int) -> int:
    return int(rng.choice([k for k in range(1, NUM_OBJECT_CLASSES + 1) if k != class_id]))


def cue_scene(seed: int, index: int, cue: str) -> tuple[Scene, dict[int, int]]:
    """Scene `index` of the training domain with `cue` changed; returns it and {thing index: painted class}."""
    if cue not in CUES:
        raise ValueError(f"unknown cue {cue!r}: one of {', '.join(CUES)}")
    scene = training_scene(generator(seed, "cues", index))  # the same scene under every cue
    rng = generator(seed, f"cue-{cue}", index)
    painted = {i: t.class_id for i, t in enumerate(scene.things)}
    h, w = scene.height, scene.width
    if cue == "colour_swap":
        for i, t in enumerate(scene.things):
            painted[i] = _other(rng, t.class_id)
            t.rgb = canonical_colour(rng, painted[i])
    elif cue == "texture_swap":
        for t in scene.things:
            t.texture = shapes.CLASSES[_other(rng, t.class_id) - 1].texture
    elif cue == "greyscale":
        scene.grayscale = True
    elif cue == "class_clutter":
        for _ in range(int(rng.integers(4, 10))):
            clutter = _distractor(rng, h, w, canonical_colour(rng, _class(rng)))
            scene.things.insert(int(rng.integers(0, len(scene.things) + 1)), clutter)
        painted = {i: t.class_id for i, t in enumerate(scene.things)}
    elif cue == "crowding":
        things = [_object(rng, h, w, _class(rng), (0.14, 0.28)) for _ in range(int(rng.integers(4, 8)))]
        for t in things:
            t.cx = float(0.5 * t.cx + 0.5 * w * rng.uniform(0.35, 0.65))
            t.cy = float(0.5 * t.cy + 0.5 * h * rng.uniform(0.35, 0.65))
        scene.things = things
        painted = {i: t.class_id for i, t in enumerate(things)}
    scene.seed = (seed, index, len(cue))
    return scene, painted


def render_cue(seed: int, index: int, cue: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB image, label, painted): `painted` holds, per pixel, the class whose colour was painted there
    (0 where no object is), in painting order as the label is."""
    scene, colour_of = cue_scene(seed, index, cue)
    image, label = render(scene)
    painted = np.zeros_like(label)
    for i, thing in enumerate(scene.things):
        painted[mask_of(thing, label.shape)] = colour_of[i]
    return image, label, painted

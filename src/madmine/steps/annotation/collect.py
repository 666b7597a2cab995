"""Checks every annotation an import finds before anything is written: class names must be
the config's (or background / the ignore label), images must be known, masks must have the
image's size, and an image may appear once. All problems are reported together.
"""

from __future__ import annotations

import posixpath

import numpy as np

from madmine.metrics import IGNORE
from madmine.steps.annotation import ignore_name

MAX_SHOWN = 30


class Collector:
    def __init__(self, classes: tuple[str, ...], sizes: dict[str, tuple[int, int]], scope: str = "the workspace"):
        self.classes = classes
        self.scope = scope
        self.ignore = ignore_name(classes)
        self.sizes = sizes
        self._id_lengths = sorted({len(k) for k in sizes})
        self.masks: dict[str, np.ndarray] = {}
        self.problems: list[str] = []
        self.rounds: set[int] = set()  # the rounds the tool's files say they belong to (Label Studio tasks do)
        self.unpainted: list[tuple[str, str]] = []  # (image, why): a submitted annotation with no region to paint

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def class_id(self, name: str, where: str) -> int | None:
        if name in self.classes:
            return self.classes.index(name)
        if name == self.ignore:
            return IGNORE
        self.problem(f"{where}: unknown class name {name!r}; known: {', '.join(self.classes)} and {self.ignore!r}")
        return None

    def matches(self, ref: str) -> str | None:
        """The image id a file name, URL or id refers to; tools may prefix uploads ('1a2b3c4d-<name>')."""
        stem = posixpath.splitext(posixpath.basename(str(ref).replace("\\", "/").split("?d=")[-1]))[0]
        if stem in self.sizes:
            return stem
        for length in self._id_lengths:
            tail = stem[-length:]
            if len(stem) > length and stem[-length - 1] in "-_" and tail in self.sizes:
                return tail
        return None

    def image_id(self, ref: str, where: str) -> str | None:
        """An image id from a file name or id, or a problem naming it."""
        found = self.matches(ref)
        if found is not None:
            return found
        self.problem(f"{where}: image {ref!r} is not in {self.scope} (missing image: not exported, not ingested, or renamed)")
        return None

    def size(self, image_id: str) -> tuple[int, int]:
        """(height, width) as displayed."""
        return self.sizes[image_id]

    def check_size(self, image_id: str, height: int, width: int, where: str) -> bool:
        expected = self.sizes[image_id]
        if (height, width) != expected:
            self.problem(
                f"{where}: annotation is {width}x{height} but image {image_id} is {expected[1]}x{expected[0]} (wrong size)"
            )
            return False
        return True

    def add(self, image_id: str, mask: np.ndarray, where: str) -> None:
        if image_id in self.masks:
            self.problem(f"{where}: a second annotation of image {image_id}; keep one per image")
            return
        if self.check_size(image_id, *mask.shape, where):
            self.masks[image_id] = mask.astype(np.uint8)

    def summary(self) -> str:
        shown = self.problems[:MAX_SHOWN]
        more = len(self.problems) - len(shown)
        return "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")

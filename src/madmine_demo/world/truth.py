"""What the world knows about every image it made: the exact label map and the kind of scene.

The simulated people and the demo's measurements look images up here by image_id (the
manifest's content hash) through the file stem of their uri, as the world named them.
"""

from __future__ import annotations

import posixpath

import numpy as np
from PIL import Image

from madmine import metrics, tables
from madmine.images import resize_nearest
from madmine.workspace import Workspace
from madmine_demo.world.datasets import Dataset


class Truth:
    """stem -> (label file, kind) over one or more datasets, and image_id -> stem via a manifest."""

    def __init__(self, datasets: list[Dataset], num_classes: int):
        self.num_classes = num_classes
        self._label: dict[str, str] = {}
        self._kind: dict[str, str] = {}
        for ds in datasets:
            for stem, kind in ds.kinds().items():
                self._label[stem] = str(ds.label(stem))
                self._kind[stem] = kind
        self._stem: dict[str, str] = {}

    def add_manifest(self, ws: Workspace) -> None:
        table = tables.MANIFEST.read(ws)
        if table is None:
            return
        for image_id, uri in zip(table.column("image_id").to_pylist(), table.column("uri").to_pylist()):
            stem = posixpath.splitext(posixpath.basename(uri))[0]
            if stem in self._label:
                self._stem[image_id] = stem

    def stem(self, image_id: str) -> str:
        try:
            return self._stem[image_id]
        except KeyError:
            raise KeyError(f"image {image_id} was not made by the synthetic world (or its manifest was not added)") from None

    def knows(self, image_id: str) -> bool:
        return image_id in self._stem

    def kind(self, image_id: str) -> str:
        return self._kind[self.stem(image_id)]

    def mask(self, image_id: str) -> np.ndarray:
        with Image.open(self._label[self.stem(image_id)]) as img:
            return np.asarray(img, dtype=np.uint8)

    def image_iou(self, image_id: str, prediction: np.ndarray) -> float:
        """The per-image mIoU of a prediction against the truth, at the label's resolution
        (metrics.image_miou: classes in the prediction or the label)."""
        label = self.mask(image_id)
        return metrics.image_miou(resize_nearest(prediction, label.shape), label, self.num_classes)

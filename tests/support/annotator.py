"""The simulated annotator of the tests: opens a COCO export (blank or pre-filled), draws each
image's true mask from scratch, and hands the file back to `madmine annotate import`, the path
real labels take. What the export started from never reaches the labels."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from madmine.steps.annotation.coco import ANNOTATIONS, encode


def draw_coco(folder: Path, true_mask: Callable[[str], np.ndarray]) -> list[str]:
    """Replace every annotation of folder/annotations.json by the true masks; returns the image ids drawn."""
    path = Path(folder) / ANNOTATIONS
    doc = json.loads(path.read_text())
    annotations, drawn = [], []
    categories = {c["name"]: c["id"] for c in doc["categories"]}
    for image in doc["images"]:
        mask = true_mask(image["image_id"])
        assert mask.shape == (image["height"], image["width"]), (image, mask.shape)
        values = [int(v) for v in np.unique(mask) if v != 0]
        if not values:  # an image with no object still needs a finished annotation: all background
            if "background" not in categories:
                doc["categories"].append({"id": 0, "name": "background", "supercategory": ""})
                categories["background"] = 0
            values = [0]
        for k in values:
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": k,
                                "segmentation": encode(mask == k), "iscrowd": 1})
        drawn.append(image["image_id"])
    doc["annotations"] = annotations
    path.write_text(json.dumps(doc))
    return drawn


def label_export(ws, config, folder: Path, true_mask: Callable[[str], np.ndarray]) -> list[str]:
    """Draw the true masks into a COCO export and import it (every image must get its label)."""
    from madmine.steps.annotation.exchange import import_

    drawn = draw_coco(folder, true_mask)
    table, unfinished = import_(ws, config, "coco", Path(folder), require_all=True)
    assert unfinished == 0 and sorted(table.column("image_id").to_pylist()) == sorted(drawn)
    return drawn

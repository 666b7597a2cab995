"""The simulated annotator: opens a COCO export, draws the true mask over the pre-annotation.

An export (`madmine annotate export --format coco`, or a competition's export) holds every
image with the target's prediction as its starting mask; a person corrects it in the tool
and exports COCO again. Here the correction is exact: each image's annotations are replaced
by one RLE per class of the world's own label map, and the file is handed back to
`madmine annotate import`, the path real labels take.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from madmine.steps.annotation import coco
from madmine.steps.annotation.exchange import ImportParams, run_import
from madmine.steps.context import StepContext
from madmine_demo.world.truth import Truth


def correct_export(folder: Path, truth: Truth) -> int:
    """Rewrite folder/annotations.json with the true masks; returns how many images it labelled."""
    path = Path(folder) / coco.ANNOTATIONS
    doc = json.loads(path.read_text())
    annotations = []
    for image in doc["images"]:
        image_id = image.get("image_id") or Path(image["file_name"]).stem
        mask = truth.mask(image_id)
        if mask.shape != (image["height"], image["width"]):
            raise ValueError(f"{image['file_name']}: the export says {image['width']}x{image['height']}, "
                             f"the world's label is {mask.shape[1]}x{mask.shape[0]}")
        for value in np.unique(mask).tolist():
            if value == 0:
                continue  # background is what no annotation covers
            rle = coco.encode(mask == value)
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": int(value),
                                "segmentation": rle, "area": int((mask == value).sum()), "iscrowd": 1,
                                "bbox": _bbox(mask == value)})
        if not (mask > 0).any():  # an empty image still needs one finished annotation: all background
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": _background_id(doc),
                                "segmentation": coco.encode(mask == 0), "area": int(mask.size), "iscrowd": 1,
                                "bbox": [0.0, 0.0, float(mask.shape[1]), float(mask.shape[0])]})
    doc["annotations"] = annotations
    path.write_text(json.dumps(doc))
    return len(doc["images"])


def _bbox(binary: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(binary)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _background_id(doc: dict) -> int:
    """The id of a 'background' category, added when the export has none (madmine maps categories by name)."""
    for cat in doc["categories"]:
        if cat["name"] == "background":
            return int(cat["id"])
    doc["categories"].append({"id": 0, "name": "background", "supercategory": ""})
    return 0


def label_and_import(ws, config, folder: Path, truth: Truth) -> int:
    """Correct a COCO export with the true masks and bring it in with `annotate import`; returns labels imported."""
    correct_export(folder, truth)
    table, unfinished = run_import(StepContext.of(config), ImportParams("coco", Path(folder), require_all=True))
    if unfinished:
        raise RuntimeError(f"{unfinished} image(s) of {folder} were left without a label")
    return table.num_rows

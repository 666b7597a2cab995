"""COCO: one annotations.json with an RLE mask (pycocotools) per class present in an image.

Categories keep madmine's class ids (1..c-1; background is what no annotation covers) and the
ignore label takes id 255. Import maps categories by name, so a tool that renumbers them is
fine; it accepts RLE (compressed or not) and polygons, painted in order (later wins).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util
from rich.progress import track

from madmine.config import Config
from madmine.metrics import IGNORE
from madmine.steps.annotation import ignore_name
from madmine.steps.annotation.bundle import AnnotationError, ExportItem
from madmine.steps.annotation.collect import Collector

ANNOTATIONS = "annotations.json"


def categories(cfg: Config) -> list[dict]:
    cats = [{"id": k, "name": name, "supercategory": ""} for k, name in enumerate(cfg.classes) if k > 0]
    return cats + [{"id": IGNORE, "name": ignore_name(cfg.classes), "supercategory": ""}]


def encode(binary: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def export(items: list[ExportItem], meta: dict, out: Path, cfg: Config) -> list[Path]:
    images, annotations = [], []
    valid = {c["id"] for c in categories(cfg)}
    for n, item in enumerate(track(items, description="encode RLE"), start=1):
        images.append({"id": n, "file_name": item.file, "width": item.width, "height": item.height, "image_id": item.image_id})
        for value in np.unique(item.mask).tolist():
            if value not in valid:
                continue
            rle = encode(item.mask == value)
            compressed = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n,
                    "category_id": value,
                    "segmentation": rle,
                    "area": int(mask_util.area(compressed)),
                    "bbox": [float(v) for v in mask_util.toBbox(compressed)],
                    "iscrowd": 1,
                }
            )
    doc = {
        "info": {"description": f"madmine round {meta['round']} set {meta['set']}: {meta['target']}@{meta['target_version']}"},
        "images": images,
        "annotations": annotations,
        "categories": categories(cfg),
    }
    (out / ANNOTATIONS).write_text(json.dumps(doc))
    return [out / ANNOTATIONS]


def _file(path: Path) -> Path:
    if path.is_file():
        return path
    found = [p for p in sorted(path.rglob("*.json")) if p.name != "madmine-export.json"]
    if len(found) != 1:
        raise AnnotationError(f"{path}: expected one COCO JSON file, found {[p.name for p in found]}; pass the file itself")
    return found[0]


def decode(segmentation, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed or compressed RLE -> boolean (h, w) mask."""
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    if list(rle["size"]) != [height, width]:
        raise ValueError(f"mask is {rle['size'][1]}x{rle['size'][0]}, image entry says {width}x{height} (wrong size)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' __array__ predates NumPy 2
        return mask_util.decode(rle).astype(bool)


def read(path: Path, collector: Collector) -> int:
    file = _file(path)
    try:
        doc = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{file}: not JSON ({exc})") from exc
    if not all(key in doc for key in ("images", "annotations", "categories")):
        raise AnnotationError(f"{file}: not a COCO instances file (needs images, annotations, categories)")
    cats = {c["id"]: collector.class_id(c["name"], f"{file.name} category {c['id']}") for c in doc["categories"]}
    by_image: dict = {}
    for ann in doc["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for orphan in sorted(set(by_image) - {image["id"] for image in doc["images"]}, key=str):
        collector.problem(f"{file.name}: annotations refer to image id {orphan!r}, which is not in 'images' (missing image)")
    unfinished = 0
    for image in track(doc["images"], description="decode masks"):
        where = f"{file.name} image {image.get('file_name', image['id'])}"
        anns = by_image.get(image["id"], [])
        if not anns:
            unfinished += 1
            continue
        image_id = collector.image_id(image.get("image_id") or image["file_name"], where)
        if image_id is None or not collector.check_size(image_id, image["height"], image["width"], where):
            continue
        mask = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        ok = True
        for ann in anns:
            class_id = cats.get(ann["category_id"])
            if ann["category_id"] not in cats:
                collector.problem(f"{where}: annotation {ann.get('id')} has category {ann['category_id']}, not in categories")
            try:
                painted = decode(ann["segmentation"], image["height"], image["width"])
            except (KeyError, ValueError, TypeError) as exc:
                collector.problem(f"{where}: annotation {ann.get('id')}: {exc}")
                ok = False
                continue
            if class_id is None:
                ok = False
                continue
            mask[painted] = class_id
        if ok:
            collector.add(image_id, mask, where)
    return unfinished

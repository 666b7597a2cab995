"""COCO: one annotations.json with an RLE mask (pycocotools) per class present in an image.

Categories keep madmine's class ids (1..c-1; background is what no annotation covers) and the
ignore label takes id 255. Import maps categories by name, so a tool that renumbers them is
fine; it accepts RLE (compressed or not) and polygons, painted in order (later wins).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util
from rich.progress import track

from madmine.config import Config
from madmine.metrics import IGNORE
from madmine.steps.annotation import ignore_name
from madmine.steps.annotation.bundle import AnnotationError, ExportItem, read_json
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
        if item.mask is None:  # a blank mask: nothing drawn yet
            continue
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
        "info": {"description": f"madmine round {meta['round']} set {meta['set']}: "
                 + (f"pre-filled with {meta['prefill']}" if meta.get("prefill") else "blank masks")},
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


def _string_counts(text: str) -> list[int]:
    """pycocotools' compressed RLE string -> run lengths (its rleFrString, with every check it lacks)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            if p >= len(text):
                raise ValueError("compressed RLE ends inside a run length")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError("compressed RLE holds a character outside '0'..'o'")
            if k > 12:
                raise ValueError("compressed RLE holds a run length beyond 64 bits")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _rle_mask(counts, height: int, width: int) -> np.ndarray:
    """Run lengths (background first, column-major, as COCO stores them) -> boolean (h, w) mask."""
    if isinstance(counts, str):
        counts = _string_counts(counts)
    if not isinstance(counts, list) or not all(type(c) is int for c in counts):
        raise ValueError("RLE counts must be a string or a list of whole numbers")
    if any(c < 0 for c in counts):
        raise ValueError("RLE holds a negative run length")
    if sum(counts) != height * width:
        raise ValueError(f"RLE covers {sum(counts)} pixels, the image has {height * width} (wrong size)")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape((height, width), order="F")


def _polygons(segmentation: list, height: int, width: int) -> np.ndarray:
    polygons = []
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise ValueError("a polygon is a flat list of at least 3 x, y points")
        if not all(type(v) in (int, float) and math.isfinite(v) for v in polygon):
            raise ValueError("a polygon point is not a finite number")
        # a point far outside the image paints the same pixels as one just past its border
        polygons.append([min(max(float(v), -1.0), (width if k % 2 == 0 else height) + 1.0) for k, v in enumerate(polygon)])
    if not polygons:
        raise ValueError("an empty list of polygons")
    rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' __array__ predates NumPy 2
        return mask_util.decode(rle).astype(bool)


def decode(segmentation, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed or compressed RLE -> boolean (h, w) mask; ValueError for anything else.

    RLE is decoded here rather than by pycocotools, whose decoder trusts the run lengths
    (a sum beyond h x w writes past its buffer); polygons are checked and clipped first.
    """
    if isinstance(segmentation, list):
        return _polygons(segmentation, height, width)
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise ValueError("a segmentation is a list of polygons or an RLE object {size, counts}")
    size = segmentation.get("size", [height, width])
    if not isinstance(size, list) or len(size) != 2 or [v for v in size] != [height, width]:
        raise ValueError(f"mask is {size!r:.40} (height, width), image entry says {width}x{height} (wrong size)")
    return _rle_mask(segmentation["counts"], height, width)


def read(path: Path, collector: Collector) -> int:
    file = _file(path)
    doc = read_json(file, "a COCO instances file")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(key), list) for key in ("images", "annotations", "categories")):
        raise AnnotationError(f"{file}: not a COCO instances file (needs images, annotations, categories)")
    cats: dict = {}
    for c in doc["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), (int, str)) or not isinstance(c.get("name"), str):
            collector.problem(f"{file.name}: a category without a whole-number id and a name ({str(c)[:80]})")
            continue
        cats[c["id"]] = collector.class_id(c["name"], f"{file.name} category {c['id']}")
    by_image: dict = {}
    for ann in doc["annotations"]:
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), (int, str)):
            collector.problem(f"{file.name}: an annotation without an image_id ({str(ann)[:80]})")
            continue
        by_image.setdefault(ann["image_id"], []).append(ann)
    ids = {image.get("id") for image in doc["images"] if isinstance(image, dict) and isinstance(image.get("id"), (int, str))}
    for orphan in sorted(set(by_image) - ids, key=str):
        collector.problem(f"{file.name}: annotations refer to image id {orphan!r}, which is not in 'images' (missing image)")
    unfinished = 0
    for n, image in enumerate(track(doc["images"], description="decode masks")):
        where = f"{file.name} image {image.get('file_name', image.get('id')) if isinstance(image, dict) else n}"
        try:
            unfinished += _read_image(image, by_image, cats, where, collector)
        except Exception as exc:  # noqa: BLE001 - one malformed entry is one problem, never a crash
            collector.problem(f"{where}: unreadable entry ({type(exc).__name__}: {str(exc)[:200]})")
    return unfinished


def _read_image(image: dict, by_image: dict, cats: dict, where: str, collector: Collector) -> int:
    if not isinstance(image, dict) or not isinstance(image.get("id"), (int, str)):
        raise ValueError("an image entry needs an id")
    anns = by_image.get(image["id"], [])
    if not anns:
        return 1
    image_id = collector.image_id(str(image.get("image_id") or image.get("file_name", "")), where)
    if image_id is None:
        return 0
    height, width = image.get("height"), image.get("width")
    if type(height) is not int or type(width) is not int:
        raise ValueError("height and width must be whole numbers")
    if not collector.check_size(image_id, height, width, where):
        return 0
    mask = np.zeros((height, width), dtype=np.uint8)
    ok = True
    for ann in anns:
        class_id = cats.get(ann.get("category_id"))
        if ann.get("category_id") not in cats:
            collector.problem(f"{where}: annotation {ann.get('id')} has category {ann.get('category_id')}, not in categories")
        try:
            painted = decode(ann["segmentation"], height, width)
        except (KeyError, ValueError, TypeError) as exc:
            collector.problem(f"{where}: annotation {ann.get('id')}: {str(exc)[:200]}")
            ok = False
            continue
        if class_id is None:
            ok = False
            continue
        mask[painted] = class_id
    if ok:
        collector.add(image_id, mask, where)
    return 0

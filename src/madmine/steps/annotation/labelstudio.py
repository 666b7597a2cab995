"""Label Studio: tasks with the target's prediction as brush pre-annotations, a labelling
config to paste into the project, and an importer for Label Studio's JSON export.

Import takes, per task, the newest annotation that was not cancelled; brush layers and
polygons are painted in order (a later region wins where two overlap), unpainted pixels are
background. Tasks without a finished annotation are left for a later import.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image, ImageDraw

from madmine.config import Config
from madmine.metrics import IGNORE
from madmine.steps.annotation import IGNORE_COLOR, ignore_name, lsbrush
from madmine.steps.annotation.bundle import AnnotationError, ExportItem, read_json
from madmine.steps.annotation.collect import Collector

FROM_NAME = "label"
TO_NAME = "image"
TASKS = "tasks.json"
DEFAULT_PREFIX = "/data/local-files/?d=images/"


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def labeling_config(cfg: Config) -> str:
    labels = [(name, cfg.colors[k]) for k, name in enumerate(cfg.classes) if k > 0]
    labels.append((ignore_name(cfg.classes), IGNORE_COLOR))
    lines = "\n".join(f"    <Label value={quoteattr(n)} background={quoteattr(_hex(c))}/>" for n, c in labels)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{lines}\n  </BrushLabels>\n'
        "</View>\n"
    )


def _results(item: ExportItem, cfg: Config) -> list[dict]:
    results = []
    for value in np.unique(item.mask):
        value = int(value)
        if value == 0 or (value >= cfg.num_classes and value != IGNORE):
            continue
        name = ignore_name(cfg.classes) if value == IGNORE else cfg.classes[value]
        results.append(
            {
                "id": uuid.uuid4().hex[:10],
                "type": "brushlabels",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "original_width": item.width,
                "original_height": item.height,
                "image_rotation": 0,
                "value": {"format": "rle", "rle": lsbrush.encode_mask(item.mask == value), "brushlabels": [name]},
            }
        )
    return results


def export(items: list[ExportItem], meta: dict, out: Path, cfg: Config, image_prefix: str = DEFAULT_PREFIX) -> list[Path]:
    model_version = f"{meta['target']}@{meta['target_version']}"
    tasks = [
        {
            "data": {"image": image_prefix + item.file, "image_id": item.image_id},
            "predictions": [{"model_version": model_version, "result": _results(item, cfg)}],
        }
        for item in items
    ]
    (out / TASKS).write_text(json.dumps(tasks))
    (out / "labeling-config.xml").write_text(labeling_config(cfg))
    return [out / TASKS, out / "labeling-config.xml"]


def _export_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = [p for p in sorted(path.glob("*.json")) if p.name not in (TASKS, "madmine-export.json")]
    if len(found) != 1:
        raise AnnotationError(
            f"{path}: expected one Label Studio JSON export (Export -> JSON) in the folder, found {[p.name for p in found]}; "
            "pass the file itself"
        )
    return found[0]


def _finished(task: dict) -> dict | None:
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    return max(enumerate(done), key=lambda ia: (ia[1].get("updated_at") or ia[1].get("created_at") or "", ia[0]))[1]


def _paint(result: dict, height: int, width: int, where: str) -> np.ndarray:
    value = result.get("value") or {}
    kind = result.get("type", "").lower()
    if kind == "brushlabels":
        return lsbrush.decode_mask(value["rle"], height, width)
    points = [(float(x) * width / 100.0, float(y) * height / 100.0) for x, y in value.get("points", [])]
    if len(points) < 3:
        raise ValueError(f"{where}: a polygon needs 3 points")
    if not all(math.isfinite(v) for point in points for v in point):
        raise ValueError(f"{where}: a polygon point is not a finite number")
    # a point far outside the image paints the same pixels as one on its border
    points = [(min(max(x, -1.0), width + 1.0), min(max(y, -1.0), height + 1.0)) for x, y in points]
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def read(path: Path, collector: Collector) -> int:
    """Decode the export into the collector; returns how many tasks had no finished annotation."""
    file = _export_file(path)
    tasks = read_json(file, "Label Studio's 'JSON' export")
    if not isinstance(tasks, list):
        raise AnnotationError(f"{file}: expected a list of tasks (Label Studio's 'JSON' export)")
    unfinished = 0
    for n, task in enumerate(tasks):
        where = f"{file.name} task {task.get('id', n) if isinstance(task, dict) else n}"
        try:
            unfinished += _read_task(task, where, collector)
        except Exception as exc:  # noqa: BLE001 - one malformed task is one problem, never a crash
            collector.problem(f"{where}: unreadable task ({type(exc).__name__}: {str(exc)[:200]})")
    return unfinished


def _read_task(task: dict, where: str, collector: Collector) -> int:
    """Paint one task's annotation into the collector; 1 when it has no finished annotation."""
    if not isinstance(task, dict):
        raise ValueError("a task must be a JSON object")
    data = task.get("data") or {}
    annotation = _finished(task)
    if annotation is None:
        return 1
    image_id = collector.image_id(str(data.get("image_id") or data.get("image", "")), where)
    if image_id is None:
        return 0
    height, width = collector.size(image_id)
    mask = np.zeros((height, width), dtype=np.uint8)
    ok = True
    for result in annotation.get("result", []):
        kind = str(result.get("type", "")).lower()
        if kind not in ("brushlabels", "polygonlabels"):
            continue
        names = (result.get("value") or {}).get(kind) or []
        rh, rw = result.get("original_height", height), result.get("original_width", width)
        if not collector.check_size(image_id, rh, rw, where):
            ok = False
            continue
        if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
            collector.problem(f"{where}: a region with labels {names!r:.100}; give each region exactly one label")
            ok = False
            continue
        class_id = collector.class_id(names[0], where)
        try:
            painted = _paint(result, height, width, where)
        except (KeyError, ValueError, TypeError) as exc:
            collector.problem(f"{where}: unreadable region ({str(exc)[:200]})")
            ok = False
            continue
        if class_id is None:
            ok = False
            continue
        mask[painted] = class_id
    if ok:
        collector.add(image_id, mask, where)
    return 0

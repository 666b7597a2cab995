"""Label Studio: tasks with a starting mask as brush pre-annotations (or none), a labelling
config for the project, a README with the exact steps, and an importer for Label Studio's
JSON export. `lsproject` does the same through the API (push and pull).

Every task carries, next to the image, `image_id` and where it came from (`madmine_round`,
`madmine_set`, `madmine_export`), so an import can tell a task of another export, and knows
the round even when madmine-export.json was not kept.

Import takes, per task, the newest annotation that was not cancelled; brush layers and
polygons are painted in order (a later region wins where two overlap), unpainted pixels are
background. An annotation with no brush or polygon region at all (rectangles only, or
submitted empty) is never read as an all-background mask: it is named and left out. A brush layer's pixel is painted where its alpha is >= 128: Label Studio's brush
draws soft edges (alpha 1..254), and the middle of the ramp is where the stroke's edge is
drawn on screen. Tasks without a finished annotation are left for a later import.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image, ImageDraw

from madmine.config import Config
from madmine.metrics import IGNORE
from madmine.steps.annotation import IGNORE_COLOR, ignore_name, lsbrush
from madmine.steps.annotation.bundle import MANIFEST_NAME, AnnotationError, ExportItem, parse_json, read_bytes
from madmine.steps.annotation.collect import Collector

log = logging.getLogger(__name__)
FROM_NAME = "label"
TO_NAME = "image"
TASKS = "tasks.json"
CONFIG_FILE = "labeling-config.xml"
README = "README.md"
LOCAL_FILES = "/data/local-files/?d="
DEFAULT_PREFIX = None  # None: LOCAL_FILES + "<export folder name>/images/" (document root = the folder's parent)
JSON_MIN_KEYS = {"annotation_id", "annotator", "lead_time"}
PAINTED = ("brushlabels", "polygonlabels")  # the region types an import paints; others (rectangles, ...) are not masks


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


def new_export_id(meta: dict) -> str:
    """The export's identity, written to madmine-export.json and into every task."""
    return meta.setdefault("export_id", uuid.uuid4().hex[:12])


def task(item: ExportItem, meta: dict, cfg: Config, image_url: str, prefill: bool = True) -> dict:
    """One Label Studio task: the image, where it came from, and (prefill, when the item has a
    starting mask) that mask as a prediction."""
    data = {
        "image": image_url,
        "image_id": item.image_id,
        "madmine_round": meta.get("round"),
        "madmine_set": meta.get("set"),
        "madmine_export": meta.get("export_id"),
    }
    out = {"data": data}
    if prefill and item.mask is not None:
        by = meta.get("prefill") or f"{meta['target']}@{meta['target_version']}"
        out["predictions"] = [{"model_version": by, "result": _results(item, cfg)}]
    return out


def local_files_prefix(folder: Path, document_root: Path) -> str:
    """The URL prefix under which Label Studio's local-files storage serves `folder`."""
    folder, document_root = Path(os.path.abspath(folder)), Path(os.path.abspath(document_root))
    if folder == document_root or document_root not in folder.parents:
        raise AnnotationError(
            f"{folder} is not inside the document root {document_root}; Label Studio serves local files only "
            "below its LOCAL_FILES_DOCUMENT_ROOT (pick a document root above the folder)"
        )
    return LOCAL_FILES + quote(folder.relative_to(document_root).as_posix()) + "/"


def export(items: list[ExportItem], meta: dict, out: Path, cfg: Config, image_prefix: str | None = DEFAULT_PREFIX,
           document_root: Path | None = None) -> list[Path]:
    """tasks.json, labeling-config.xml and README.md into `out` (its images/ are written by the caller).

    Images are served by a local-files storage below `document_root` (default: the parent of
    `out`, so that every export folder beside this one is served by the same server without
    a restart); `image_prefix` replaces that URL prefix when the images are served elsewhere.
    """
    export_id = new_export_id(meta)  # also written to madmine-export.json by the caller
    root = Path(os.path.abspath(document_root or out.parent))
    prefix = image_prefix if image_prefix is not None else local_files_prefix(out / "images", root)
    tasks = [task(item, meta, cfg, prefix + item.file) for item in items]
    (out / TASKS).write_text(json.dumps(tasks))
    (out / CONFIG_FILE).write_text(labeling_config(cfg))
    (out / README).write_text(readme(out, root, meta, len(items), image_prefix is None, export_id))
    return [out / TASKS, out / CONFIG_FILE, out / README]


def readme(out: Path, root: Path, meta: dict, count: int, local_files: bool, export_id: str) -> str:
    """The steps from this folder to imported masks, with this folder's own paths."""
    out = Path(os.path.abspath(out))
    what = f"round {meta.get('round')}, set {meta.get('set')!r}" if meta.get("round") is not None else f"set {meta.get('set')!r}"
    serve = (
        f"""1. Start Label Studio so that it serves files below `{root}` (once; every export folder in
   `{root}` then works side by side, with no restart):

   ```sh
   LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \\
   LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} \\
   label-studio start
   ```

   A server already running with exactly this document root needs no restart. For one with
   another root above this folder, export again into a new folder with
   `madmine annotate export ... --document-root THAT_ROOT`: the image URLs are relative to the root.
"""
        if local_files
        else "1. Start Label Studio. The images are served from the URL prefix given at export time.\n"
    )
    storage = (
        f"""3. *Settings → Cloud Storage → Add Source Storage*: storage type **Local files**,
   absolute local path `{out / 'images'}`, then *Add Storage*. Do **not** press *Sync*: the tasks come from `tasks.json` (with
   the pre-annotations); a sync would add every image a second time, without them. Without
   this storage every image is a 404: Label Studio serves a local file only through a
   storage whose path holds it.
"""
        if local_files
        else "3. (No storage: the images are served from elsewhere.)\n"
    )
    start = (f"Each image comes with the prediction of `{meta['prefill']}` as a pre-annotation (a brush layer per class);\n"
             "paint over what is wrong." if meta.get("prefill") else
             "Each image starts blank: draw every object (a pre-filled mask would pull the labels toward the model\n"
             "being measured).")
    return f"""# Label these {count} images in Label Studio

madmine export `{export_id}`: {what}, target `{meta.get('target')}@{meta.get('target_version')}`.
{start}
The label `{ignore_name(tuple(meta.get('classes') or ()))}` marks pixels nobody can label.

{serve}
2. *Create Project* (any name). *Labeling Setup → Custom template → Code*: replace the
   XML with the contents of `{CONFIG_FILE}`, then *Save*.

{storage}
4. *Import*: upload `{TASKS}` from this folder. The project shows {count} tasks.

5. Label: open a task, correct the brush layers, *Submit* (or *Update*). *Skip* leaves the
   image for later.

6. *Export* → **JSON** (not JSON-MIN, not CSV: they drop the brush masks) → save the file
   **into this folder**, next to `{MANIFEST_NAME}` (it tells madmine the round and the image sizes).

7. Import the masks:

   ```sh
   madmine annotate import --format labelstudio {out}/project-<id>-at-<time>.json
   ```

   Everything is checked first (class names, sizes, unknown images); nothing is written
   unless all of it is right. Unfinished tasks are counted and can be imported later:
   export again and import the new file.

With a server madmine can reach, `madmine annotate push --to labelstudio` and
`madmine annotate pull --from labelstudio` do steps 2-7 without files (docs/labelstudio.md).
"""


# ---- import ---------------------------------------------------------------------------------
def _export_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = [p for p in sorted(path.glob("*.json")) if p.name not in (TASKS, MANIFEST_NAME)]
    others = [p.name for p in sorted(path.glob("*")) if p.suffix.lower() in (".csv", ".tsv", ".zip")]
    if len(found) != 1:
        hint = f" (found {others}: export as JSON instead)" if others and not found else ""
        raise AnnotationError(
            f"{path}: expected one Label Studio JSON export (Export -> JSON) in the folder, found {[p.name for p in found]}"
            f"{hint}; pass the file itself"
        )
    return found[0]


def _not_json_export(file: Path, text: str) -> str | None:
    """What a file that is not Label Studio's JSON export is, when it can be told."""
    suffix = file.suffix.lower()
    head = text.lstrip()[:2000]
    if suffix in (".csv", ".tsv") or (head and head[0] not in "[{" and ("annotation_id" in head or "\t" in head or "," in head)):
        kind = "TSV" if suffix == ".tsv" or "\t" in head.split("\n", 1)[0] else "CSV"
        return f"this is Label Studio's {kind} export, which drops the brush masks"
    if suffix == ".zip" or text.startswith("PK\x03\x04"):
        return "this is a zip (Label Studio's COCO, YOLO or brush-PNG export?)"
    return None


def _kind_of(tasks) -> str | None:
    if isinstance(tasks, dict):
        if {"images", "annotations", "categories"} <= set(tasks):
            return "this is a COCO file (import it with --format coco, or export the project as JSON)"
        return "this is one JSON object, not a list of tasks"
    if not isinstance(tasks, list):
        return "this is not a list of tasks"
    dicts = [t for t in tasks if isinstance(t, dict)]
    if len(dicts) != len(tasks):
        return "this list holds something other than tasks"
    if dicts and not any("data" in t or "annotations" in t for t in dicts) and any(JSON_MIN_KEYS & set(t) for t in dicts):
        return "this is Label Studio's JSON-MIN export, which keeps no brush masks"
    return None


def load_export(path: Path) -> tuple[str, list[dict]]:
    """(the file's name, its tasks) from a file or folder; clear errors for the wrong export."""
    file = _export_file(path)
    raw = read_bytes(file)  # the untrusted-bytes boundary: a regular file, within the size limit
    text = raw.decode("utf-8", errors="replace")
    what = _not_json_export(file, text)
    if what is None:
        tasks = parse_json(raw, file, "Label Studio's 'JSON' export")
        what = _kind_of(tasks)
    if what:
        raise AnnotationError(f"{file}: {what}; in Label Studio use Export -> JSON and import that file")
    return file.name, tasks


def finished(task: dict) -> dict | None:
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


def _origin(data: dict) -> tuple | None:
    if not data.get("madmine_export"):
        return None
    return data.get("madmine_export"), data.get("madmine_round"), data.get("madmine_set")


def check_origin(name: str, tasks: list[dict], meta: dict | None, sizes: dict) -> None:
    """Refuse another export's tasks: by the export id every task carries, else by its images."""
    if not meta or not tasks:
        return
    origins = {o for o in (_origin(t.get("data") or {}) for t in tasks) if o}
    ours = meta.get("export_id")
    foreign = sorted((o for o in origins if ours and o[0] != ours), key=str)
    if foreign:
        e, r, s = foreign[0]
        raise AnnotationError(
            f"{name} is another project's export: its tasks come from madmine export {e} (round {r}, set {s!r}), "
            f"but {MANIFEST_NAME} beside it is export {ours} (round {meta.get('round')}, set {meta.get('set')!r}); "
            "import it from its own export folder, or pass its path there"
        )
    collector = Collector((), sizes)
    refs = [(t.get("data") or {}) for t in tasks]
    if not origins and not any(collector.matches(d.get("image_id") or d.get("image", "")) for d in refs):
        raise AnnotationError(
            f"{name} is another project's export: none of its {len(tasks)} tasks shows an image of {MANIFEST_NAME} "
            f"beside it (round {meta.get('round')}, set {meta.get('set')!r})"
        )


def read_tasks(name: str, tasks: list[dict], collector: Collector, skip=None) -> list[dict]:
    """Decode tasks into the collector; returns the tasks with no finished annotation.

    `skip(task, annotation)` may leave out annotations imported before (pull).
    """
    unfinished = []
    for n, task in enumerate(tasks):
        where = f"{name} task {task.get('id', n) if isinstance(task, dict) else n}"
        try:
            if _read_task(task, where, collector, skip):
                unfinished.append(task)
        except Exception as exc:  # noqa: BLE001 - one malformed task is one problem, never a crash
            collector.problem(f"{where}: unreadable task ({type(exc).__name__}: {str(exc)[:200]})")
    return unfinished


def _read_task(task: dict, where: str, collector: Collector, skip) -> bool:
    """Paint one task's annotation into the collector; True when it has no finished annotation."""
    if not isinstance(task, dict):
        raise ValueError("a task must be a JSON object")
    data = task.get("data") or {}
    if data.get("madmine_round") is not None:
        collector.rounds.add(int(data["madmine_round"]))
    annotation = finished(task)
    if annotation is None:
        return True
    if skip is not None and skip(task, annotation):
        return False
    image_id = collector.image_id(str(data.get("image_id") or data.get("image", "")), where)
    if image_id is None:
        return False
    height, width = collector.size(image_id)
    mask = np.zeros((height, width), dtype=np.uint8)
    results = annotation.get("result") or []
    regions = [r for r in results if str(r.get("type", "")).lower() in PAINTED]
    if not regions:  # all background is never assumed: the annotator may have drawn with another tool, or nothing
        others = sorted({str(r.get("type", "?")) for r in results})
        collector.unpainted.append((image_id, f"{where}: only {', '.join(others)} regions" if others
                                    else f"{where}: submitted with no region"))
        return True
    ok = True
    for result in regions:
        kind = str(result.get("type", "")).lower()
        names = (result.get("value") or {}).get(kind) or []
        rh, rw = result.get("original_height", height), result.get("original_width", width)
        if not collector.check_size(image_id, rh, rw, where):
            ok = False
            continue
        if len(names) != 1:
            collector.problem(f"{where}: a region with labels {names}; give each region exactly one label")
            ok = False
            continue
        class_id = collector.class_id(names[0], where)
        try:
            painted = _paint(result, height, width, where)
        except KeyError as exc:
            collector.problem(f"{where}: a {kind} region without its {exc.args[0]!r} field")
            ok = False
            continue
        except (ValueError, TypeError) as exc:
            collector.problem(f"{where}: unreadable region ({exc})")
            ok = False
            continue
        if class_id is None:
            ok = False
            continue
        mask[painted] = class_id
    if ok:
        collector.add(image_id, mask, where)
    return False


def read(path: Path, collector: Collector, meta: dict | None = None) -> int:
    """Decode the export file into the collector; returns how many tasks had no finished annotation
    (those submitted with no brush or polygon region included, named in a warning)."""
    name, tasks = load_export(path)
    check_origin(name, tasks, meta, collector.sizes)
    unfinished = len(read_tasks(name, tasks, collector))
    if collector.unpainted:
        log.warning("%d annotation(s) hold no brush or polygon region, so nothing was imported for them (paint them "
                    "with the brush, submit, and import again): %s", len(collector.unpainted),
                    "; ".join(f"image {i} ({why})" for i, why in collector.unpainted[:20]))
    return unfinished


"""What every export holds: the images to label (as displayed: EXIF rotation applied), a
starting mask when one is asked for, plus madmine-export.json so an import knows the round, the
sizes and the class list that the files were made for.

Sets: `s` = S of a round and strategy (tables/selected/round-<R>-<strategy>.parquet, written
by `madmine rate select`), `test` = the rows of round R in tables/testsets/*.parquet (the
paper's T(R+1); written by the evaluation step).

Pre-fill: an annotator who corrects a model's prediction drifts toward it, so a test set whose
masks start from the target's prediction measures the target too kindly (and a competition's,
the pre-filling model). Test sets are exported blank by default; `prefill` names a model whose
prediction starts every mask (documented as a bias). S is exported with the round's target's
prediction by default: its masks train, they do not measure, and correcting is faster than
drawing.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track

from madmine import images, tables
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.steps.rating.roundset import RoundError, load_round, read_image
from madmine.untrusted import DEFAULT_MAX_BYTES, ImageError, read_local
from madmine.workspace import Workspace

MANIFEST_NAME = "madmine-export.json"
SET_TABLES = {"s": "selected", "test": "testsets", "sample": "sample"}
DEFAULT_PREFILL = "@default"  # the round's target for S, blank for test sets and the corpus sample
BLANK = ("none", "blank", "")


class AnnotationError(MadmineError):
    """An export or import that cannot be done as asked; nothing was written."""


@dataclass
class ExportItem:
    image_id: str
    file: str
    data: bytes
    width: int
    height: int
    mask: np.ndarray | None  # the starting mask; None: blank (nothing drawn yet)


def prefill_model(cfg: Config, which: str, prefill: str | None) -> str | None:
    """The model whose prediction starts every mask, or None for blank masks."""
    if prefill == DEFAULT_PREFILL:
        return cfg.target.name if which == "s" else None
    if prefill is None or prefill.strip().lower() in BLANK:
        return None
    return prefill


def set_ids(ws: Workspace, round_: int, which: str, strategy: str = tables.MAD) -> list[str]:
    """The image ids of S (tables/selected/round-<R>-<strategy>.parquet), of the round's test set (rows
    of tables/testsets/*.parquet whose round is R) or of the corpus sample (tables/sample)."""
    if which not in SET_TABLES:
        raise AnnotationError(f"--set must be 's', 'test' or 'sample', got {which!r}")
    name = SET_TABLES[which]
    reader = {"s": lambda: tables.SELECTED.read(ws, round=round_, strategy=strategy), "test": lambda: tables.TESTSETS.read(ws),
              "sample": lambda: tables.SAMPLE.read(ws)}
    table = reader[which]()
    if table is not None and "image_id" not in table.column_names:
        raise AnnotationError(f"{ws.path('tables', name)} has no image_id column")
    rows = [] if table is None else table.to_pylist()
    ids = [r["image_id"] for r in rows if r.get("round") is None or int(r["round"]) == round_]
    if not ids:
        hint = {"s": "run `madmine rate select` first", "test": "build the test set first",
                "sample": "run `madmine sample --size N` first"}[which]
        raise AnnotationError(f"no {which!r} set for round {round_} in {ws.path('tables', name)}; {hint}")
    return list(dict.fromkeys(ids))


def _displayed(data: bytes, max_pixels: int) -> tuple[bytes, str, Image.Image]:
    """The original bytes when a browser shows them as decoded; else a PNG of the decoded image."""
    img = images.decode(data, max_pixels=max_pixels, min_side=1)
    try:
        with Image.open(io.BytesIO(data)) as raw:
            orientation = raw.getexif().get(0x0112, 1)
            if raw.format in ("JPEG", "PNG") and raw.mode in ("RGB", "L") and orientation in (0, 1):
                return data, ".jpg" if raw.format == "JPEG" else ".png", img
    except Exception:  # noqa: BLE001 - odd metadata: export the decoded pixels instead of the original bytes
        pass
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue(), ".png", img


def _fit(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask, "L").resize((width, height), Image.NEAREST))


def _prefill_maps(ws: Workspace, cfg: Config, rs, model: str, items: list[tuple[str, str]]):
    """image_id -> the starting mask from `model`: the round's target version for the config's
    target name, else any model version (NAME, NAME@VERSION, NAME@STRATEGY) as evaluation finds it."""
    if model == rs.target:
        return (lambda image_id: rs.load_map(rs.target, image_id)), f"{rs.target}@{rs.versions[rs.target]}"
    from madmine.errors import EvaluationError
    from madmine.steps.evaluation.predictions import ModelMaps, find_ref, model_refs

    try:
        ref = find_ref(model_refs(cfg, ws), model)
        maps = ModelMaps(cfg, ws, ref).maps(items)
    except EvaluationError as exc:
        raise AnnotationError(f"--prefill {model}: {exc}") from exc
    return maps.__getitem__, ref.label


def gather(ws: Workspace, cfg: Config, round_: int, which: str, strategy: str = "mad",
           prefill: str | None = DEFAULT_PREFILL) -> tuple[list[ExportItem], dict]:
    """Read and check everything first, so a missing image or map fails before any file is written.
    `prefill`: a model whose prediction starts the masks, None (or 'none') for blank masks,
    DEFAULT_PREFILL for the round's target on S and blank masks on test sets."""
    rs = load_round(ws, cfg, round_, strategy if which == "s" else tables.MAD)
    ids = set_ids(ws, round_, which, strategy)
    manifest = tables.MANIFEST.read(ws)
    uris = dict(rs.uris)
    if manifest is not None:
        for row in manifest.select(["image_id", "uri"]).to_pylist():
            uris.setdefault(row["image_id"], row["uri"])
    version = rs.versions[rs.target]
    model = prefill_model(cfg, which, prefill)
    items, problems = [], []
    present = [i for i in ids if i in uris]
    problems += [f"{i}: not in the manifest or the round's candidates" for i in ids if i not in uris]
    start, prefilled_by = (None, None) if model is None else _prefill_maps(ws, cfg, rs, model, [(i, uris[i]) for i in present])
    for image_id in track(present, description=f"gather {len(present)} images"):
        try:
            data, ext, img = _displayed(read_image(uris[image_id], cfg.storage_options, cfg.scoring.max_bytes),
                                        cfg.scoring.max_pixels)
            mask = None if start is None else _fit(start(image_id), *img.size)
        except (RoundError, images.ImageError) as exc:
            problems.append(f"{image_id}: {exc}")
            continue
        items.append(ExportItem(image_id, f"{image_id}{ext}", data, img.size[0], img.size[1], mask))
    if problems:
        raise AnnotationError(f"{len(problems)} image(s) cannot be exported:\n  " + "\n  ".join(problems[:20]))
    meta = {
        "round": round_,
        "set": which,
        "strategy": strategy if which == "s" else None,
        "prefill": prefilled_by,  # the model version whose prediction starts the masks; None: blank
        "target": rs.target,
        "target_version": version,
        "classes": list(cfg.classes),
        "created_at": datetime.now(UTC).isoformat(),
        "export_id": uuid.uuid4().hex[:12],
        "images": [{"image_id": i.image_id, "file": i.file, "width": i.width, "height": i.height} for i in items],
    }
    return items, meta


def write_images(items: list[ExportItem], out: Path) -> None:
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for item in track(items, description="write images"):
        (folder / item.file).write_bytes(item.data)


def write_manifest(out: Path, meta: dict, fmt: str) -> None:
    (out / MANIFEST_NAME).write_text(json.dumps({**meta, "format": fmt}, indent=1))


def read_bytes(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """A file of an import, through the untrusted-bytes boundary (a regular file up to max_bytes)."""
    try:
        return read_local(str(path), max_bytes)
    except ImageError as exc:
        raise AnnotationError(f"{path}: {exc.reason} ({exc.detail})") from None


def read_json(path: Path, what: str = "JSON", max_bytes: int = DEFAULT_MAX_BYTES):
    """A JSON file of an import; anything but UTF-8 JSON is one AnnotationError naming the file."""
    return parse_json(read_bytes(path, max_bytes), path, what)


def parse_json(data: bytes, path: Path, what: str = "JSON"):
    """The JSON of a file's bytes; anything but UTF-8 JSON is one AnnotationError naming the file."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); export as {what}") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply to be {what}") from None
    except ValueError as exc:
        raise AnnotationError(f"{path}: not JSON ({exc}); export as {what}") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_manifest(path: Path) -> dict | None:
    """madmine-export.json beside (or inside) an import path, if the user kept it."""
    for folder in ([path] if path.is_dir() else []) + [path.parent, path.parent.parent]:
        candidate = folder / MANIFEST_NAME
        if candidate.is_file():
            meta = read_json(candidate, MANIFEST_NAME)
            if not isinstance(meta, dict) or not isinstance(meta.get("images", []), list):
                raise AnnotationError(f"{candidate}: not a {MANIFEST_NAME} written by `madmine annotate export`")
            return meta
    return None

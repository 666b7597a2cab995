"""`madmine annotate export|import` as functions: pick the tool's module, check everything,
then write."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from madmine.config import Config
from madmine.steps.annotation import FORMATS, coco, cvat, labelstudio
from madmine.steps.annotation.bundle import AnnotationError, gather, read_manifest, write_images, write_manifest
from madmine.steps.annotation.collect import Collector
from madmine.steps.annotation.labels import commit, known_sizes
from madmine.workspace import Workspace

READERS = {"labelstudio": labelstudio.read, "cvat": cvat.read, "coco": coco.read}


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def export(ws: Workspace, cfg: Config, fmt: str, out: Path, round_: int, which: str = "s",
           strategy: str = "mad", image_prefix: str = labelstudio.DEFAULT_PREFIX) -> tuple[int, list[Path]]:
    """Returns (images exported, the files a person opens in the tool)."""
    _check_format(fmt)
    if out.exists() and any(out.iterdir()):
        raise AnnotationError(f"{out} is not empty; export into a new folder so no older files mix in")
    items, meta = gather(ws, cfg, round_, which, strategy)
    if not items:
        raise AnnotationError(f"the {which!r} set of round {round_} is empty; nothing to export")
    out.mkdir(parents=True, exist_ok=True)
    write_images(items, out)
    if fmt == "labelstudio":
        files = labelstudio.export(items, meta, out, cfg, image_prefix)
    elif fmt == "cvat":
        files = cvat.export(items, meta, out, cfg)
    else:
        files = coco.export(items, meta, out, cfg)
    write_manifest(out, meta, fmt)
    return len(items), files


def import_(ws: Workspace, cfg: Config, fmt: str, path: Path, round_: int | None = None,
            require_all: bool = False) -> tuple[pa.Table, int]:
    """Returns (the rows appended to `labels`, how many images had no finished annotation)."""
    _check_format(fmt)
    if not path.exists():
        raise AnnotationError(f"{path} does not exist")
    meta = read_manifest(path)
    scope = "the export's madmine-export.json" if meta else "the workspace manifest"
    collector = Collector(cfg.classes, known_sizes(ws, meta), scope)
    if meta and tuple(meta.get("classes", cfg.classes)) != cfg.classes:
        collector.problem(f"the export was made for classes {meta['classes']}, the config has {list(cfg.classes)}")
    try:
        unfinished = READERS[fmt](path, collector)
    except AnnotationError:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary for imported masks: one clear error, nothing written
        raise AnnotationError(
            f"nothing imported: {path} cannot be read as a {fmt} export ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    if require_all and meta:
        missing = sorted({i["image_id"] for i in meta["images"]} - set(collector.masks))
        for image_id in missing:
            collector.problem(f"image {image_id} of the export has no finished annotation (missing image)")
    if round_ is None and meta:
        round_ = meta.get("round")
    return commit(ws, collector, fmt, round_), unfinished

"""`madmine annotate export|import` as functions: pick the tool's module, check everything,
then write."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from madmine import tables
from madmine.config import Config
from madmine.steps.annotation import FORMATS, coco, cvat, labelstudio
from madmine.steps.annotation.bundle import (
    DEFAULT_PREFILL,
    MANIFEST_NAME,
    AnnotationError,
    gather,
    read_manifest,
    write_images,
    write_manifest,
)
from madmine.steps.annotation.collect import Collector
from madmine.steps.annotation.labels import commit, known_sizes
from madmine.steps.context import StepContext
from madmine.workspace import Workspace

READERS = {"labelstudio": labelstudio.read, "cvat": cvat.read, "coco": coco.read}


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


@dataclass(frozen=True)
class ExportParams:
    """One export: a round's set ("s" or "test") in a tool's format, into a new folder."""

    fmt: str
    out: Path
    round: int
    which: str = "s"
    strategy: str = tables.MAD
    image_prefix: str | None = labelstudio.DEFAULT_PREFIX  # Label Studio: where else the images are served
    document_root: Path | None = None  # Label Studio: the server's LOCAL_FILES_DOCUMENT_ROOT
    prefill: str | None = DEFAULT_PREFILL  # the model whose prediction starts every mask; None: blank


@dataclass(frozen=True)
class ImportParams:
    fmt: str
    path: Path
    round: int | None = None  # default: the export's record
    require_all: bool = False  # fail unless every exported image has a finished annotation


def run_export(ctx: StepContext, params: ExportParams) -> tuple[int, list[Path]]:
    """The annotation step, outward: the set's images and a task file for the tool."""
    return export(ctx.ws, ctx.config, params.fmt, params.out, params.round, params.which, params.strategy,
                  params.image_prefix, params.document_root, params.prefill)


def run_import(ctx: StepContext, params: ImportParams) -> tuple[pa.Table, int]:
    """The annotation step, inward: finished annotations -> labels (all or nothing)."""
    return import_(ctx.ws, ctx.config, params.fmt, params.path, params.round, params.require_all)


def export(ws: Workspace, cfg: Config, fmt: str, out: Path, round_: int, which: str = "s",
           strategy: str = "mad", image_prefix: str | None = labelstudio.DEFAULT_PREFIX,
           document_root: Path | None = None, prefill: str | None = DEFAULT_PREFILL) -> tuple[int, list[Path]]:
    """Returns (images exported, the files a person opens in the tool).

    `prefill`: the model whose prediction starts every mask, or None for blank masks; by default
    the round's target for S and blank for test sets (a pre-filled test mask biases Table 1).

    Label Studio: images are served by a local-files storage below `document_root` (default:
    the parent of `out`), unless `image_prefix` says where else they are.
    """
    _check_format(fmt)
    if out.exists() and any(out.iterdir()):
        raise AnnotationError(f"{out} is not empty; export into a new folder so no older files mix in")
    if fmt == "labelstudio" and image_prefix is None:
        labelstudio.local_files_prefix(out / "images", document_root or out.parent)  # refuse before any work
    items, meta = gather(ws, cfg, round_, which, strategy, prefill)
    if not items:
        raise AnnotationError(f"the {which!r} set of round {round_} is empty; nothing to export")
    out.mkdir(parents=True, exist_ok=True)
    write_images(items, out)
    if fmt == "labelstudio":
        files = labelstudio.export(items, meta, out, cfg, image_prefix, document_root)
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
        if fmt == "labelstudio":
            unfinished = labelstudio.read(path, collector, meta)
        else:
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
            collector.problem(f"image {image_id} of the export has no finished annotation (unlabelled; --require-all)")
    return commit(ws, collector, fmt, label_round(round_, meta, collector)), unfinished


def label_round(round_: int | None, meta: dict | None, collector: Collector) -> int | None:
    """--round, else the export's record, else the one round the tasks name; None when unknown."""
    if round_ is not None:
        return round_
    if meta and meta.get("round") is not None:
        return int(meta["round"])
    if len(collector.rounds) > 1:
        collector.problem(f"the annotations come from rounds {sorted(collector.rounds)}; import each round's export on its own")
    return next(iter(collector.rounds)) if len(collector.rounds) == 1 else None


def unknown_round_warning(path) -> str:
    return (
        f"the round of these labels is unknown ({MANIFEST_NAME} is not beside {path} and its tasks name no round): "
        "they are stored with round = NULL, which `rate status` and fine-tuning do not count as this round's masks; "
        "import again with --round R"
    )

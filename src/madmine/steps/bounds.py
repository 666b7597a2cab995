"""`madmine bounds LABELS_DIR`: per-class size bounds [p_k, q_k] from labelled images.

The bounds keep selection away from regions too small or too large to be typical of a
class (step 2 of the method, docs/paper.md). Pixels are counted with metrics.class_pixels; the
quantiles are taken by DuckDB (sql/bounds.sql) so that the numbers are the ones a user
gets from the same SQL in the duckdb CLI.

The bounds come from the labelled training set S(0). A label folder often holds more (VOC's
SegmentationClass/ holds train and val): `--list FILE` names the split, one file stem per line
(VOC's ImageSets/Segmentation/train.txt), and only those labels count.
"""

from __future__ import annotations

import io
import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from madmine import duck, metrics, tables
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.steps.context import StepContext
from madmine.untrusted import ImageError, guarded
from madmine.workspace import Workspace, filesystem, split_uri

log = logging.getLogger(__name__)

_SINGLE_CHANNEL = ("P", "L", "I", "I;16", "I;16L", "I;16B", "1")


@dataclass
class BoundsResult:
    table: pa.Table
    path: str
    labels: int
    missing: list[str]  # object classes no labelled image contains: they form no group
    listed: int | None = None  # stems in the split list, when one was given


def list_label_files(labels_uri: str, storage_options: dict | None = None) -> tuple[object, list[str]]:
    """(filesystem, sorted PNG paths) under a local folder or an s3:// prefix."""
    protocol, root = split_uri(labels_uri)
    fs = filesystem(labels_uri, storage_options)
    if not fs.exists(root) or not fs.isdir(root):
        raise MadmineError(f"labels folder {labels_uri!r} does not exist: pass the folder of PNG label maps")
    files = sorted(p for p in fs.find(root) if p.lower().endswith(".png"))
    if not files:
        raise MadmineError(
            f"no PNG label maps under {labels_uri!r}: bounds need labelled images "
            "(PNG of class indices per pixel, 255 = ignore)"
        )
    return fs, files


def read_split(list_uri: str, storage_options: dict | None = None) -> list[str]:
    """The stems of a split list: the first word of every line that is not blank or a # comment."""
    protocol, path = split_uri(list_uri)
    fs = filesystem(list_uri, storage_options)
    if not fs.exists(path) or fs.isdir(path):
        raise MadmineError(f"split list {list_uri!r} does not exist: pass a text file of file stems, one per line "
                           "(e.g. VOC's ImageSets/Segmentation/train.txt)")
    if fs.size(path) > 64 << 20:
        raise MadmineError(f"split list {list_uri!r} is over 64 MiB; a list of stems is far smaller")
    try:
        text = fs.cat_file(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MadmineError(f"split list {list_uri!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    stems = [line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not stems:
        raise MadmineError(f"split list {list_uri!r} names no file")
    return list(dict.fromkeys(stems))


def filter_split(files: list[str], stems: list[str], labels_uri: str, list_uri: str) -> list[str]:
    """The label files whose stem the split lists; every listed stem must have one."""
    by_stem: dict[str, list[str]] = {}
    for path in files:
        by_stem.setdefault(posixpath.splitext(posixpath.basename(path))[0], []).append(path)
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise MadmineError(
            f"{len(missing)} of the {len(stems)} stems of {list_uri} have no label PNG under {labels_uri} "
            f"(e.g. {', '.join(missing[:3])}): pass the labels folder of that split"
        )
    twice = [s for s in stems if len(by_stem[s]) > 1]
    if twice:
        raise MadmineError(f"several label PNGs share the stem {twice[0]!r} under {labels_uri}: {', '.join(by_stem[twice[0]])}")
    return sorted(by_stem[s][0] for s in stems)


def _load(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def decode_label(data: bytes, name: str, num_classes: int) -> np.ndarray:
    """A label map of class indices; refuses RGB masks and out-of-range classes by name."""
    try:
        img = guarded(_load, data, what="label decode")
    except ImageError as exc:
        raise MadmineError(f"label map {name}: not a readable PNG ({exc})") from exc
    if img.mode not in _SINGLE_CHANNEL:
        raise MadmineError(
            f"label map {name} is a {img.mode} image: labels must be single-channel PNGs of class "
            "indices (palette or grayscale), 255 = ignore"
        )
    label = np.asarray(img).astype(np.int64)
    bad = np.unique(label[(label >= num_classes) & (label != metrics.IGNORE)])
    if bad.size:
        raise MadmineError(
            f"label map {name} holds class ids {bad[:5].tolist()} but [classes] names lists {num_classes} "
            f"classes (ids 0..{num_classes - 1}, 255 = ignore): fix the labels or the class list"
        )
    return label


def count_labels(fs, files: list[str], num_classes: int, workers: int = 4) -> pa.Table:
    """label_counts (image_id, height, width, class_pixels) of every label map, with progress."""

    def one(path: str) -> tuple[str, int, int, list[int]]:
        label = decode_label(fs.cat_file(path), path, num_classes)
        height, width = label.shape[:2]
        stem = posixpath.splitext(posixpath.basename(path))[0]
        return stem, height, width, metrics.class_pixels(label, num_classes).tolist()

    rows = []
    columns = (TextColumn("bounds: reading labels"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress, ThreadPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task("labels", total=len(files))
        for row in pool.map(one, files):
            rows.append(row)
            progress.advance(task)
    image_id, height, width, pixels = zip(*rows)
    return pa.table(
        {
            "image_id": list(image_id),
            "height": pa.array(height, pa.int32()),
            "width": pa.array(width, pa.int32()),
            "class_pixels": pa.array(pixels, pa.list_(pa.int64())),
        }
    )


def compute_bounds(label_counts: pa.Table, classes: tuple[str, ...], quantiles: tuple[float, float], labels_uri: str) -> pa.Table:
    """Run sql/bounds.sql over label counts; one row per class, NULL bounds where unseen."""
    con = duckdb.connect()
    con.register("label_counts", label_counts)
    duck.set_variables(
        con,
        p_quantile=float(quantiles[0]),
        q_quantile=float(quantiles[1]),
        class_names=list(classes),
        labels_uri=labels_uri,
    )
    return duck.run_file(con, "bounds").to_arrow_table()


@dataclass(frozen=True)
class BoundsParams:
    labels: str  # folder or s3:// prefix of S(0)'s label PNGs
    workers: int = 4
    split: str | None = None  # a list of file stems: only those labels count


def run(ctx: StepContext, params: BoundsParams) -> BoundsResult:
    """The bounds step: quartiles of each class's area fraction over S(0) -> tables/bounds."""
    return run_bounds(ctx.config, params.labels, workers=params.workers, split=params.split)


def run_bounds(config: Config, labels_uri: str, workers: int = 4, split: str | None = None) -> BoundsResult:
    """Compute and write tables/bounds/bounds.parquet; warn about classes never labelled.
    `split`: a list of file stems (S(0)'s split); only those labels count."""
    fs, files = list_label_files(labels_uri, config.storage_options)
    stems = None
    if split is not None:
        stems = read_split(split, config.storage_options)
        files = filter_split(files, stems, labels_uri, split)
    counts = count_labels(fs, files, config.num_classes, workers)
    table = compute_bounds(counts, config.classes, config.selection.quantiles, labels_uri)
    ws = Workspace.from_config(config)
    path = tables.BOUNDS.write(ws, table)
    rows = table.to_pylist()
    missing = [r["class_name"] for r in rows if r["class_id"] >= 1 and r["n_images"] == 0]
    if missing:
        log.warning(
            "no labelled image contains %s: these classes get no size bounds and form no group in "
            "selection; add labelled examples of them and re-run `madmine bounds`",
            ", ".join(missing),
        )
    return BoundsResult(table=table, path=ws.url(path), labels=len(files), missing=missing,
                        listed=None if stems is None else len(stems))


def check_classes(con, classes: tuple[str, ...]) -> None:
    """The bounds table (a DuckDB view on `con`) was computed for the config's classes, in order."""
    rows = con.execute("SELECT class_id, class_name FROM bounds ORDER BY class_id").fetchall()
    names = tuple(name for _, name in rows)
    if names != tuple(classes) or [cid for cid, _ in rows] != list(range(len(classes))):
        raise MadmineError(
            f"the bounds table was computed for classes {list(names)} but the config lists {list(classes)}: "
            "re-run `madmine bounds LABELS_DIR`"
        )

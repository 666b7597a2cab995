"""The examples of fine-tuning: S of every round up to R, S(0) and T(0) as (image, label) pairs.

Every pair is decoded once before any Ray work starts, so that a missing image, a mask of
another size than its image or a label value outside the classes fails in seconds, with the
list of offending files, instead of killing a training job an hour in.

S comes from the workspace: the S of one strategy (MAD's tables/selected/round-<r>-mad.parquet,
or a baseline's round-<r>-<strategy>.parquet: image ids and URIs) and the newest row of the
`labels` table per image. S(0) and T(0) are folders (or s3:// prefixes):
every label PNG names its image by file stem (labels/x123.png -> images/x123.jpg); images
without a label are ignored, so one image folder can serve both sets.
"""

from __future__ import annotations

import hashlib
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.progress import track

from madmine import tables
from madmine.errors import MadmineError
from madmine.images import IMAGE_EXTENSIONS, ImageError, decode, decode_map_png
from madmine.metrics import IGNORE
from madmine.workspace import Workspace, filesystem, read_uri, split_uri

MAX_LISTED = 12


class DataError(MadmineError):
    """The training or validation data cannot be used; nothing was trained."""


@dataclass(frozen=True)
class Pair:
    """One labelled image: URIs of the image and of its class-index PNG (255 = ignore)."""

    image: str
    label: str
    key: str  # image_id for S, the file stem for folders
    source: str  # "S(round r)", "S(0)" or "T(0)": where a problem is reported


@dataclass(frozen=True)
class TrainingData:
    s: tuple[Pair, ...]
    s0: tuple[Pair, ...]
    t0: tuple[Pair, ...]
    rounds: tuple[int, ...]  # the rounds whose S is included

    def counts(self) -> str:
        return f"S {len(self.s)} images (rounds {list(self.rounds)}), S(0) {len(self.s0)}, T(0) {len(self.t0)}"


# ---- S from the workspace ------------------------------------------------------------------
def s_rounds(ws: Workspace, round_: int, selection: str = tables.MAD) -> list[int]:
    """Rounds <= R that have an S table of the strategy."""
    return [r for r in tables.SELECTED.rounds(ws, strategy=selection) if r <= round_]


def _newest_labels(ws: Workspace) -> dict[str, str]:
    """image_id -> mask_uri of its newest label (an image labelled again counts once)."""
    rows: list[dict] = []
    for path in tables.LABELS.files(ws):
        rows.extend(ws.read_parquet([path]).select(["image_id", "mask_uri", "created_at"]).to_pylist())
    rows.sort(key=lambda r: str(r["created_at"]))
    return {r["image_id"]: r["mask_uri"] for r in rows}


def _manifest_uris(ws: Workspace) -> dict[str, str]:
    table = tables.MANIFEST.read(ws)
    if table is None:
        return {}
    return dict(zip(table.column("image_id").to_pylist(), table.column("uri").to_pylist()))


def collect_s(ws: Workspace, round_: int, selection: str = tables.MAD,
              base: tuple[str, int] | None = None) -> tuple[tuple[Pair, ...], tuple[int, ...]]:
    """S(..R) of one strategy: every selected image of rounds <= R with its pixel label; an image counts once.
    With `base` (strategy, round), the version fine-tuned on another chain: that chain's S of rounds up to its
    round, then this strategy's of the rounds after it."""
    rounds = s_rounds(ws, round_, selection)
    parts = [(selection, r) for r in rounds]
    if base is not None and base[0] != selection:
        parts = [(base[0], r) for r in s_rounds(ws, base[1], base[0])] + [(selection, r) for r in rounds if r > base[1]]
    if round_ not in rounds:
        how = "" if selection == tables.MAD else f" --strategy {selection}"
        raise DataError(
            f"round {round_} has no S of {selection} ({ws.url(tables.SELECTED.path(ws, round=round_, strategy=selection))}): "
            f"run `madmine rate select --round {round_}{how}` and import its pixel labels first"
        )
    labels = _newest_labels(ws)
    manifest: dict[str, str] | None = None
    pairs: dict[str, Pair] = {}
    unlabelled: dict[int, list[str]] = {}
    for strategy, r in parts:
        rows = tables.SELECTED.read_file(ws, round=r, strategy=strategy).to_pylist()
        for row in rows:
            image_id = row["image_id"]
            if image_id in pairs:
                continue
            if image_id not in labels:
                unlabelled.setdefault(r, []).append(image_id)
                continue
            uri = row.get("uri")
            if not uri:
                manifest = _manifest_uris(ws) if manifest is None else manifest
                uri = manifest.get(image_id)
            if not uri:
                raise DataError(f"S(round {r}) image {image_id} has no uri and is not in the manifest")
            pairs[image_id] = Pair(uri, labels[image_id], image_id, f"S(round {r}, {strategy})")
    if unlabelled:
        parts = [
            f"round {r}: {len(ids)} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
            for r, ids in unlabelled.items()
        ]
        raise DataError(
            "images of S have no pixel labels: " + "; ".join(parts) + ". Export them with "
            "`madmine annotate export --round R`, label them and `madmine annotate import` the result"
        )
    if not pairs:
        raise DataError(f"S is empty: the S tables of rounds {rounds} select no image; nothing to learn from")
    return tuple(pairs.values()), tuple(r for _, r in parts)


# ---- S(0) and T(0) from folders --------------------------------------------------------------
def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


def _listing(uri: str, storage_options: dict, suffixes: tuple[str, ...], what: str) -> dict[str, list[str]]:
    """stem -> full URIs of the files under a folder with one of the suffixes."""
    protocol, root = split_uri(uri)
    fs = filesystem(uri, storage_options)
    if not fs.isdir(root):
        raise DataError(f"{what} folder {uri!r} does not exist or is not a folder")
    out: dict[str, list[str]] = {}
    for path in sorted(fs.find(root)):
        if path.lower().endswith(suffixes) and not posixpath.basename(path).startswith("."):
            out.setdefault(_stem(path), []).append(path if protocol == "file" else f"{protocol}://{path}")
    return out


def folder_pairs(images: str, labels: str, storage_options: dict, name: str, key: str) -> tuple[Pair, ...]:
    """Pairs of a labelled set given as an image folder and a label folder matched by stem."""
    if not images or not labels:
        raise DataError(
            f'{name} is not configured: set [finetune] {key}_images = "folder/" and {key}_labels = "folder/" '
            "(label PNGs of class ids, 255 = ignore, named like their images)"
        )
    image_files = _listing(images, storage_options, IMAGE_EXTENSIONS, f"[finetune] {key}_images")
    label_files = _listing(labels, storage_options, (".png",), f"[finetune] {key}_labels")
    if not label_files:
        raise DataError(f"{name} is empty: no label PNG under {labels!r}")
    problems = []
    pairs = []
    for stem, label_uris in sorted(label_files.items()):
        found = image_files.get(stem, [])
        if len(label_uris) > 1 or len(found) > 1:
            problems.append(f"{name} {stem}: several files share the stem ({', '.join(label_uris + found)})")
        elif not found:
            problems.append(f"{name} label {label_uris[0]}: missing image {stem}.* under {images}")
        else:
            pairs.append(Pair(found[0], label_uris[0], stem, name))
    _raise(problems, f"{name} cannot be used")
    return tuple(pairs)


def collect(config, ws: Workspace, round_: int, selection: str = tables.MAD,
            base: tuple[str, int] | None = None) -> TrainingData:
    """Gather S(..R) of a strategy (on `base`'s chain, see collect_s), S(0) and T(0); raises DataError before
    anything is read twice."""
    s, rounds = collect_s(ws, round_, selection, base)
    f = config.finetune
    s0 = folder_pairs(f.s0_images, f.s0_labels, config.storage_options, "S(0)", "s0")
    t0 = folder_pairs(f.t0_images, f.t0_labels, config.storage_options, "T(0)", "t0")
    overlap = sorted({p.image for p in t0} & {p.image for p in (*s, *s0)})
    if overlap:
        raise DataError(
            f"{len(overlap)} T(0) images are also training images (e.g. {overlap[0]}); T(0) must be held out"
        )
    return TrainingData(s=s, s0=s0, t0=t0, rounds=rounds)


# ---- decoding every pair once -------------------------------------------------------------
def check_pair(pair: Pair, num_classes: int, storage_options: dict, max_pixels: int = 64_000_000):
    """One line saying what is wrong with which file, or (usable) the sha256 of the pair's bytes."""
    digest = hashlib.sha256()
    try:
        data = read_uri(pair.image, storage_options)
        digest.update(data)
        image = decode(data, max_pixels=max_pixels, min_side=1)
    except FileNotFoundError:
        return f"{pair.source} {pair.key}: missing image {pair.image}"
    except (ImageError, OSError) as exc:
        return f"{pair.source} {pair.key}: image {pair.image} cannot be decoded ({exc})"
    try:
        data = read_uri(pair.label, storage_options)
        digest.update(data)
        mask = decode_map_png(data)[0]
    except FileNotFoundError:
        return f"{pair.source} {pair.key}: missing label {pair.label}"
    except (ImageError, OSError, ValueError) as exc:
        return f"{pair.source} {pair.key}: label {pair.label} is not a class-index PNG ({exc})"
    if mask.shape != (image.height, image.width):
        return (
            f"{pair.source} {pair.key}: label {pair.label} is {mask.shape[1]}x{mask.shape[0]} "
            f"but its image is {image.width}x{image.height} (width x height)"
        )
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != IGNORE)]
    if bad.size:
        return (
            f"{pair.source} {pair.key}: label {pair.label} holds values {bad.tolist()[:5]} outside the "
            f"{num_classes} classes (0..{num_classes - 1}) and 255 (ignore)"
        )
    return digest


def _raise(problems: list[str], headline: str) -> None:
    if not problems:
        return
    shown = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    raise DataError(f"{headline}: {len(problems)} problem(s); nothing was trained\n  {shown}{more}")


def check(
    data: TrainingData, num_classes: int, storage_options: dict, show_progress: bool = True, workers: int = 8
) -> str:
    """Decode every image and label once; raise DataError listing every unusable pair.

    Returns a digest of every byte read: a re-run resumes only when the data is the same.
    """
    pairs = [*data.s, *data.s0, *data.t0]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: check_pair(p, num_classes, storage_options), pairs)
        if show_progress:
            description = f"check {len(pairs)} labelled images"
            results = track(results, total=len(pairs), description=description, console=Console(stderr=True))
        results = list(results)
    _raise([r for r in results if isinstance(r, str)], "the fine-tuning data is not usable")
    return hashlib.sha256("".join(r.hexdigest() for r in results).encode()).hexdigest()[:16]

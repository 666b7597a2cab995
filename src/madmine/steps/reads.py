"""The shared read API: what the steps wrote, read back by the others (selection, rating, test
sets, evaluation, the report). A round's candidates M(R), its votes, every S(j), the test sets,
the pixel labels, the models table, the manifest's URIs, fine-tuning curves, and the labelled
sets S(0) and T(0) of the config. Missing tables read as empty, so every measurement works at
any point of a round and says what it is waiting for.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from madmine import tables
from madmine.errors import EvaluationError
from madmine.images import ImageError, decode_map_png
from madmine.metrics import IGNORE
from madmine.names import HELD_OUT
from madmine.steps.ingest import image_id_of
from madmine.steps.rating import store
from madmine.steps.train.data import DataError, folder_pairs
from madmine.workspace import Workspace, filesystem, read_uri, split_uri


def candidates(ws: Workspace, round_: int, strategy: str = "mad") -> pa.Table | None:
    """The candidates table of a round (tables/candidates/round-<R>-<strategy>.parquet)."""
    path = tables.CANDIDATES.path(ws, round=round_, strategy=strategy)
    if not ws.exists(path):
        return None
    table = ws.read_parquet([path])
    if "round" in table.column_names:
        rows = [r == round_ or r is None for r in table.column("round").to_pylist()]
        table = table.filter(pa.array(rows))
    return table


def votes(ws: Workspace, round_: int) -> dict[tuple[str, str], dict]:
    """(image_id, rater) -> latest vote {score: 1..5 or None = out of domain}.

    The vote events are the source of truth; the materialised ratings table stands in when
    a workspace holds only the table (imported from elsewhere, or built by hand)."""
    events = store.load_events(ws, round_)
    if events:
        return store.latest(events)
    path = tables.RATINGS.path(ws, round=round_)
    if not ws.exists(path):
        return {}
    rows = ws.read_parquet([path]).to_pylist()
    rows.sort(key=lambda r: (str(r.get("created_at")), r["image_id"], r["rater"]))
    return {(r["image_id"], r["rater"]): {"score": r["score"], "created_at": str(r.get("created_at"))} for r in rows}


def _round_rows(ws: Workspace, table: str) -> list[dict]:
    """Every row of a table's parts, read part by part (parts written by different tools may
    differ in integer widths, which a concatenation refuses)."""
    rows: list[dict] = []
    for path in tables.table(table).files(ws):
        rows.extend(ws.read_parquet([path]).to_pylist())
    return rows


def selected_ids(ws: Workspace, strategy: str | None = None, up_to: int | None = None) -> dict[str, int]:
    """image_id -> round, over every S(j) of one strategy (every strategy when None), of rounds
    <= up_to (all when None): tables/selected/round-<j>-<strategy>.parquet."""
    parts = []
    for path in tables.SELECTED.files(ws, strategy=strategy):
        round_ = (tables.SELECTED.keys_of(path) or {}).get("round", "")
        if round_.isdigit() and (up_to is None or int(round_) <= up_to):
            parts.append((int(round_), path))
    out: dict[str, int] = {}
    for round_, path in sorted(parts):
        for row in ws.read_parquet([path]).select(["image_id"]).to_pylist():
            out.setdefault(row["image_id"], round_)
    return out


def selected_exists(ws: Workspace, round_: int, strategy: str = tables.MAD) -> bool:
    return ws.exists(tables.SELECTED.path(ws, round=round_, strategy=strategy))


def testsets(ws: Workspace) -> dict[int, list[dict]]:
    """round -> the rows of T(round), in their drawn order (position, else file order)."""
    out: dict[int, list[dict]] = {}
    for row in _round_rows(ws, "testsets"):
        out.setdefault(int(row["round"]), []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: (r.get("position") is None, r.get("position") or 0))
    return dict(sorted(out.items()))


def labels(ws: Workspace) -> dict[str, dict]:
    """image_id -> its newest row of the labels table (a re-labelled image counts once)."""
    rows = _round_rows(ws, "labels")
    rows.sort(key=lambda r: str(r.get("created_at")))
    return {r["image_id"]: r for r in rows}


def load_label(ws: Workspace, row: dict, num_classes: int) -> np.ndarray:
    """A label mask (uint8 class ids, 255 = ignore), checked against the class list."""
    protocol, path = split_uri(row["mask_uri"])
    fs = ws.fs if protocol == ws.protocol else filesystem(row["mask_uri"], ws.storage_options)
    try:
        data = fs.cat_file(path)
        mask = decode_map_png(data)[0]
    except (FileNotFoundError, ImageError, OSError) as exc:
        raise EvaluationError(f"label of image {row['image_id']} cannot be read from {row['mask_uri']}: {exc}") from exc
    bad = (mask >= num_classes) & (mask != IGNORE)
    if bad.any():
        raise EvaluationError(
            f"label of image {row['image_id']} ({row['mask_uri']}) holds class ids {sorted(set(mask[bad].tolist()))[:5]}; "
            f"ids must be < {num_classes} or 255"
        )
    return mask


def models_table(ws: Workspace) -> list[dict]:
    """Rows of the models table (fine-tuned versions), oldest first; empty before fine-tuning."""
    rows = _round_rows(ws, "models")
    return sorted(rows, key=lambda r: (str(r.get("created_at")), r["model"], r["model_version"]))


def uris(ws: Workspace) -> dict[str, str]:
    """image_id -> uri from the manifest."""
    table = tables.MANIFEST.read(ws)
    if table is None:
        return {}
    return dict(zip(table.column("image_id").to_pylist(), table.column("uri").to_pylist()))


def finetune_curves(ws: Workspace, round_: int, selection: str = tables.MAD) -> pa.Table | None:
    path = tables.FINETUNE_CURVES.path(ws, round=round_, selection=selection)
    return ws.read_parquet([path]) if ws.exists(path) else None


def repair_rows(ws: Workspace) -> list[dict]:
    """Every row of the repair table (fine-tuning's parts and evaluation's), oldest version first."""
    rows = _round_rows(ws, "repair")
    return sorted(rows, key=lambda r: (r.get("model_round") is None, r.get("model_round") or 0, r["model_version"],
                                       r["source"], str(r["set"])))


def s0_image_ids(config) -> set[str]:
    """Content hashes (ingest's image ids) of the labelled training set S(0) ([finetune] s0_images and
    s0_labels): images every version of the target learned from. Empty when S(0) is not configured."""
    f = getattr(config, "finetune", None)
    if f is None or not f.s0_images or not f.s0_labels:
        return set()
    try:
        pairs = folder_pairs(f.s0_images, f.s0_labels, config.storage_options, "S(0)", "s0")
    except DataError as exc:
        raise EvaluationError(str(exc)) from exc
    return {image_id_of(read_uri(pair.image, config.storage_options)) for pair in pairs}


def held_out(config) -> list[dict]:
    """T(0) as fine-tuning reads it ([finetune] t0_images and t0_labels, matched by file stem),
    as test-set rows with the label's URI; image ids are content hashes, as ingest makes them.
    Empty when the folders are not configured."""
    f = getattr(config, "finetune", None)
    if f is None or not f.t0_images or not f.t0_labels:
        return []
    try:
        pairs = folder_pairs(f.t0_images, f.t0_labels, config.storage_options, "T(0)", "t0")
    except DataError as exc:
        raise EvaluationError(str(exc)) from exc
    rows = []
    for position, pair in enumerate(pairs, start=1):
        image_id = image_id_of(read_uri(pair.image, config.storage_options))
        rows.append({"round": HELD_OUT, "image_id": image_id, "uri": pair.image, "position": position,
                     "label_uri": pair.label})
    return rows

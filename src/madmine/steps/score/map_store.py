"""The map store: every model version's prediction maps, packed one object per (model,
version, pack), written by scoring and read by every step that shows or measures a
prediction (evaluation, rating app, report, annotate export, compete).

A pack is a Parquet file, cache/maps/<model>/<version>/<pack>.parquet, one row per image
sorted by image_id: image_id, height, width, map (the class ids, row-major uint8 bytes),
mean_entropy, mean_msp. Scoring writes one pack per shard (pack = shard id), so a shard
costs one PUT per model however many images it holds, and a re-score reads a competitor's
shard back in one GET. Zstandard on raw class ids is as small as PNG and several times
cheaper to encode; small row groups let a reader that wants a few images fetch only their
row groups (ranged reads), found by the row groups' image_id statistics.

The store is a cache: a missing or damaged pack is recomputed by whoever needs it.
"""

from __future__ import annotations

import io
import posixpath
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from madmine.images import ImageError
from madmine.workspace import Workspace

ROW_GROUP = 16  # maps per row group: a reader of one map fetches at most 16
SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("map", pa.binary()),
        ("mean_entropy", pa.float64()),
        ("mean_msp", pa.float64()),
    ]
)


@dataclass(frozen=True)
class StoredMap:
    """One image's prediction: the class-id map and the target's uncertainty (NaN for others)."""

    map: np.ndarray
    mean_entropy: float = float("nan")
    mean_msp: float = float("nan")


def encode_pack(entries: dict[str, StoredMap]) -> bytes:
    """A pack's Parquet bytes, rows sorted by image_id (the same entries give the same bytes)."""
    ids = sorted(entries)
    maps = [np.ascontiguousarray(entries[i].map, dtype=np.uint8) for i in ids]
    table = pa.table(
        {
            "image_id": ids,
            "height": [m.shape[0] for m in maps],
            "width": [m.shape[1] for m in maps],
            "map": [m.tobytes() for m in maps],
            "mean_entropy": [float(entries[i].mean_entropy) for i in ids],
            "mean_msp": [float(entries[i].mean_msp) for i in ids],
        },
        schema=SCHEMA,
    )
    buf = io.BytesIO()
    pq.write_table(
        table, buf, compression="zstd", compression_level=1, row_group_size=ROW_GROUP, write_statistics=["image_id"]
    )
    return buf.getvalue()


def _entries(table: pa.Table) -> dict[str, StoredMap]:
    out = {}
    cols = table.to_pydict()
    for image_id, h, w, raw, ent, msp in zip(
        cols["image_id"], cols["height"], cols["width"], cols["map"], cols["mean_entropy"], cols["mean_msp"]
    ):
        if h * w != len(raw):
            raise ImageError("damaged map", f"{image_id}: {len(raw)} bytes for {h}x{w}")
        out[image_id] = StoredMap(np.frombuffer(raw, dtype=np.uint8).reshape(h, w), ent, msp)
    return out


class MapStore:
    """Prediction maps of any (model, version) in one workspace, pack by pack."""

    def __init__(self, ws: Workspace, cached_packs: int = 8):
        self.ws = ws
        self._footers: OrderedDict[str, pq.FileMetaData] = OrderedDict()
        self._cached_packs = cached_packs

    def folder(self, model: str, version: str) -> str:
        return self.ws.path("cache", "maps", model, version)

    def path(self, model: str, version: str, pack: str) -> str:
        return posixpath.join(self.folder(model, version), f"{pack}.parquet")

    def packs(self, model: str, version: str) -> set[str]:
        """The packs stored for a version (one listing)."""
        names = self.ws.listdir(self.folder(model, version))
        return {n[: -len(".parquet")] for n in names if n.endswith(".parquet") and not n.startswith(".tmp-")}

    # ---- writing ---------------------------------------------------------------------------
    def write_pack(self, model: str, version: str, pack: str, entries: dict[str, StoredMap]) -> None:
        """Store a pack whole (one PUT); it replaces a pack of the same name."""
        path = self.path(model, version, pack)
        self.ws.put_bytes(path, encode_pack(entries))
        self._footers.pop(path, None)

    def add(self, model: str, version: str, pack: str, entries: dict[str, StoredMap]) -> None:
        """Add entries to a pack (read, merge, write): for the few maps a reader computes itself."""
        merged = self.read_pack(model, version, pack) or {}
        merged.update(entries)
        self.write_pack(model, version, pack, merged)

    # ---- reading ---------------------------------------------------------------------------
    def read_pack(self, model: str, version: str, pack: str) -> dict[str, StoredMap] | None:
        """Every map of a pack (one GET); None when the pack is missing or unreadable."""
        try:
            data = self.ws.get_bytes(self.path(model, version, pack))
            return _entries(pq.read_table(io.BytesIO(data)))
        except (FileNotFoundError, OSError, ValueError, pa.ArrowException, ImageError):
            return None

    def _footer(self, path: str) -> pq.FileMetaData:
        if path not in self._footers:
            with self.ws.fs.open(path, "rb") as fh:
                self._footers[path] = pq.ParquetFile(fh).metadata
            while len(self._footers) > 256:
                self._footers.popitem(last=False)
        return self._footers[path]

    def get_many(self, model: str, version: str, wanted: dict[str, str]) -> dict[str, StoredMap]:
        """{image_id: map} for wanted = {image_id: pack}; images not stored are left out.

        Reads only the row groups that hold the wanted images (their image_id statistics
        say which), so showing a few candidates costs a few small ranged reads per pack.
        """
        by_pack: dict[str, list[str]] = {}
        for image_id, pack in wanted.items():
            by_pack.setdefault(pack, []).append(image_id)
        out: dict[str, StoredMap] = {}
        for pack, ids in by_pack.items():
            path = self.path(model, version, pack)
            try:
                meta = self._footer(path)
                groups = sorted(
                    {g for g in range(meta.num_row_groups) for i in ids if _holds(meta.row_group(g), i)}
                )
                if not groups:
                    continue
                with self.ws.fs.open(path, "rb") as fh:
                    table = pq.ParquetFile(fh).read_row_groups(groups)
                found = _entries(table)
            except (FileNotFoundError, OSError, ValueError, pa.ArrowException, ImageError):
                continue
            out.update({i: found[i] for i in ids if i in found})
        return out

    def get(self, model: str, version: str, image_id: str, pack: str) -> StoredMap | None:
        return self.get_many(model, version, {image_id: pack}).get(image_id)

    def find(self, model: str, version: str, image_ids, max_packs: int = 64) -> dict[str, StoredMap]:
        """Maps of images whose pack is not known, looked for in every pack of the version: for
        versions with few packs (maps a reader computed); a scored corpus's shards are found
        through shards_of instead. Returns {} when the version has more than `max_packs` packs."""
        packs = self.packs(model, version)
        if len(packs) > max_packs:
            return {}
        wanted, out = set(image_ids), {}
        for pack in sorted(packs):
            rest = wanted - set(out)
            if not rest:
                break
            out.update(self.get_many(model, version, {i: pack for i in rest}))
        return out


def _holds(row_group: pq.RowGroupMetaData, image_id: str) -> bool:
    stats = row_group.column(0).statistics
    if stats is None or not stats.has_min_max:
        return True
    return stats.min <= image_id <= stats.max

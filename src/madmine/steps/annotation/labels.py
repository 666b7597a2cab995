"""Committing imported pixel labels: label PNGs (class ids, 255 = ignore) at
labels/<image_id>.png, then one part of the `labels` table
(tables/labels/<source>-<time>-<id>.parquet). The table part is written last, so a crash
leaves at worst unreferenced PNGs that the next import overwrites; when an image is
labelled again, the newest row wins.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pyarrow as pa
from rich.progress import track

from madmine import tables
from madmine.images import encode_map_png
from madmine.steps.annotation.bundle import AnnotationError
from madmine.steps.annotation.collect import Collector
from madmine.workspace import Workspace


def label_path(ws: Workspace, image_id: str) -> str:
    return ws.path("labels", f"{image_id}.png")


def known_sizes(ws: Workspace, meta: dict | None) -> dict[str, tuple[int, int]]:
    """(height, width) per image: the export's own record when there is one, else the manifest."""
    if meta and meta.get("images"):
        try:
            sizes = {str(i["image_id"]): (int(i["height"]), int(i["width"])) for i in meta["images"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationError(f"madmine-export.json: an image entry without image_id, height and width ({exc})") from None
        if any(not (0 < h <= 1 << 16 and 0 < w <= 1 << 16) for h, w in sizes.values()):
            raise AnnotationError("madmine-export.json: an image size outside 1..65536 pixels")
        return sizes
    manifest = tables.MANIFEST.read(ws)
    if manifest is None:
        return {}
    columns = manifest.select(["image_id", "width", "height"]).to_pydict()
    return {i: (int(h), int(w)) for i, w, h in zip(columns["image_id"], columns["width"], columns["height"])}


def commit(ws: Workspace, collector: Collector, source: str, round_: int | None) -> pa.Table:
    """Write every mask and the table part, or nothing at all when any problem was found."""
    if collector.problems:
        raise AnnotationError(
            f"nothing imported: {len(collector.problems)} problem(s) in the {source} annotations:\n  {collector.summary()}"
        )
    if not collector.masks:
        empty = ""
        if collector.unpainted:
            empty = (f" ({len(collector.unpainted)} submitted annotation(s) hold no brush or polygon region: "
                     + "; ".join(f"image {i}, {why}" for i, why in collector.unpainted[:5]) + ")")
        raise AnnotationError(f"nothing imported: the {source} export holds no finished annotation{empty}")
    now = datetime.now(UTC)
    rows = []
    for image_id, mask in track(sorted(collector.masks.items()), description=f"store {len(collector.masks)} labels"):
        path = label_path(ws, image_id)
        ws.put_bytes(path, encode_map_png(mask))
        rows.append({"image_id": image_id, "mask_uri": ws.url(path), "source": source, "round": round_, "created_at": now})
    table = pa.Table.from_pylist(rows, schema=tables.LABELS.schema)
    tables.LABELS.write(ws, table, part=f"{source}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")
    return table

"""Ratings, stored so that a crash never loses one that a rater saw accepted.

Each vote is one small JSON event, written whole (atomic rename locally, a single PUT on
object stores) before the server answers: rating/events/round-<R>/<rater>/<time>-<id>.json.
Events are never rewritten; the latest per (round, image, rater) wins, so changing one's
mind is just another event. The `ratings` table (tables/ratings/round-<R>.parquet) is
materialised from the events whenever status, select or a server shutdown asks for it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pyarrow as pa

from madmine import tables
from madmine.workspace import Workspace

ACR = {1: "bad", 2: "poor", 3: "fair", 4: "good", 5: "excellent"}


def events_dir(ws: Workspace, round_: int, rater: str | None = None) -> str:
    parts = ["rating", "events", f"round-{round_}"] + ([rater] if rater else [])
    return ws.path(*parts)


def record(ws: Workspace, round_: int, image_id: str, rater: str, score: int | None) -> dict:
    """Commit one vote (score 1..5, None = out of domain); returns the event."""
    now = datetime.now(UTC)
    event_id = uuid.uuid4().hex
    event = {
        "round": round_,
        "image_id": image_id,
        "rater": rater,
        "score": score,
        "created_at": now.isoformat(),
        "event_id": event_id,
    }
    name = f"{now:%Y%m%dT%H%M%S%fZ}-{event_id[:12]}.json"
    ws.put_bytes(ws.path(events_dir(ws, round_, rater), name), json.dumps(event).encode())
    return event


def load_events(ws: Workspace, round_: int, rater: str | None = None) -> list[dict]:
    """Every committed event of a round (optionally one rater's), oldest first."""
    pattern = ws.path(events_dir(ws, round_, rater), "*.json") if rater else ws.path(events_dir(ws, round_), "*", "*.json")
    paths = ws.glob(pattern)
    if not paths:
        return []
    blobs = ws.fs.cat(paths)
    events = [json.loads(blobs[p]) for p in paths]
    return sorted(events, key=lambda e: (e["created_at"], e["event_id"]))


def latest(events: list[dict]) -> dict[tuple[str, str], dict]:
    """(image_id, rater) -> the rater's last word on the image."""
    out: dict[tuple[str, str], dict] = {}
    for event in events:
        out[(event["image_id"], event["rater"])] = event
    return out


def to_table(events: list[dict]) -> pa.Table:
    rows = sorted(latest(events).values(), key=lambda e: (e["image_id"], e["rater"]))
    return pa.table(
        {
            "round": [e["round"] for e in rows],
            "image_id": [e["image_id"] for e in rows],
            "rater": [e["rater"] for e in rows],
            "score": [e["score"] for e in rows],
            "created_at": [datetime.fromisoformat(e["created_at"]) for e in rows],
        },
        schema=tables.RATINGS.schema,
    )


def materialise(ws: Workspace, round_: int) -> pa.Table:
    """Rewrite the round's `ratings` table from its events (whole file, atomically)."""
    table = to_table(load_events(ws, round_))
    ws.write_parquet(tables.RATINGS.path(ws, round=round_), table)
    return table

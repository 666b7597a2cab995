"""Ratings, stored so that a crash never loses one that a rater saw accepted.

Each vote is one small JSON event, written whole (atomic rename locally, a single PUT on
object stores) before the server answers: rating/events/round-<R>/<rater>/<time>-<id>.json.
Events are never rewritten; the latest per (round, image, rater) wins, so changing one's
mind is just another event. The `ratings` table (tables/ratings/round-<R>.parquet) is
materialised from the events whenever status, select or a server shutdown asks for it.

An event file that cannot be read as an event (empty, garbled, wrong fields; a FIFO, a device,
a symlink to one, or a file over MAX_EVENT_BYTES, none of which is ever read) is skipped and
reported in `problems`, never fatal to the other events or raters.

Besides rounds (an int), a named set of images is rated the same way: a MAD competition's
images (`compete-<id>`, where raters' out-of-domain votes veto images before labelling) keep
their events in rating/events/<name>/, with the name in the events' "round" field. Named sets
have no ratings table; their events are read directly.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import uuid
from datetime import UTC, datetime

import pyarrow as pa

from madmine import objectstore, tables
from madmine.steps.rating.tokens import Problem, read_storage, small_json, valid_name
from madmine.untrusted import ImageError
from madmine.workspace import Workspace

log = logging.getLogger(__name__)
MAX_EVENT_BYTES = 16 << 10
FIELDS = ("round", "image_id", "rater", "score", "created_at", "event_id")

ACR = {1: "bad", 2: "poor", 3: "fair", 4: "good", 5: "excellent"}
SET_NAME = re.compile(r"compete-[A-Za-z0-9_.-]{1,200}")


def set_folder(key: int | str) -> str:
    """round-<R> for a round; the name itself for a named set (compete-<id>)."""
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ValueError(f"a rating set is a round number or a name, got {key!r}")
    if isinstance(key, int):
        return f"round-{key}"
    if not SET_NAME.fullmatch(key):
        raise ValueError(f"a named rating set looks like compete-<id> (letters, digits, . _ -), got {key[:80]!r}")
    return key


def events_dir(ws: Workspace, round_: int | str, rater: str | None = None) -> str:
    parts = ["rating", "events", set_folder(round_)] + ([rater] if rater else [])
    return ws.path(*parts)


def record(ws: Workspace, round_: int | str, image_id: str, rater: str, score: int | None) -> dict:
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
    ws.put_bytes(posixpath.join(events_dir(ws, round_, rater), event_name(event)), json.dumps(event).encode())
    return event


def event_name(event: dict) -> str:
    """The file name of an event: its time, then its id (so names sort by time)."""
    return f"{datetime.fromisoformat(event['created_at']):%Y%m%dT%H%M%S%fZ}-{event['event_id'][:12]}.json"


def parse_event(data: bytes, round_: int, rater: str) -> dict:
    """One event file's JSON, checked field by field; ValueError says what is wrong."""
    event = small_json(data, MAX_EVENT_BYTES, "an event is under 300")
    if not isinstance(event, dict) or any(key not in event for key in FIELDS):
        raise ValueError(f"not an event (needs {', '.join(FIELDS)})")
    if event["round"] != round_ or type(event["round"]) is not type(round_):
        raise ValueError(f"its round is {str(event['round'])[:20]!r}, not {round_}")
    if event["rater"] != rater:
        raise ValueError(f"its rater is {str(event['rater'])[:40]!r}, not the folder's {rater!r}")
    if not isinstance(event["image_id"], str) or not 0 < len(event["image_id"]) <= 128:
        raise ValueError("no image_id")
    score = event["score"]
    if score is not None and (type(score) is not int or not 1 <= score <= 5):
        raise ValueError(f"score {str(score)[:20]} is neither 1..5 nor null (out of domain)")
    if not isinstance(event["event_id"], str) or not event["event_id"]:
        raise ValueError("no event_id")
    try:
        stamp = datetime.fromisoformat(event["created_at"])
    except (TypeError, ValueError):
        raise ValueError("created_at is not an ISO time") from None
    if stamp.tzinfo is None:
        raise ValueError("created_at has no time zone")
    return event


def _event_paths(ws: Workspace, round_: int, rater: str | None) -> list[tuple[str, str]]:
    """(path, rater) of every event file of a round (or of one rater)."""
    raters = [rater] if rater else ws.listdir(events_dir(ws, round_))
    out = []
    for name in raters:
        folder = events_dir(ws, round_, name)
        out += [(posixpath.join(folder, f), name) for f in ws.listdir(folder) if not f.startswith(".tmp-")]
    return out


def read_events(ws: Workspace, paths: list[tuple[str, str]], round_: int, problems: list | None = None) -> list[dict]:
    """The events in `paths` ((path, rater) pairs); unreadable files go to `problems`."""
    events = []
    readable = [(p, r) for p, r in paths if p.endswith(".json") and valid_name(r)]
    for path, rater in paths:
        if (path, rater) not in readable and problems is not None:
            problems.append(Problem(path, "not <rater>/<time>-<id>.json"))
    blobs = read_storage(ws, [p for p, _ in readable], MAX_EVENT_BYTES)
    for path, rater in readable:
        blob = blobs.get(path)
        down = objectstore.unavailable(blob) if isinstance(blob, BaseException) else None
        if down is not None:  # the store, not the event, failed: a ratings table without it would lose a vote
            raise down from blob
        try:
            if not isinstance(blob, bytes):
                raise ValueError(str(blob) if isinstance(blob, ImageError) else "unreadable")
            events.append(parse_event(blob, round_, rater))
        except ValueError as exc:
            if problems is not None:
                problems.append(Problem(path, str(exc)))
            else:
                log.warning("skipping %s: %s", path, exc)
    return events


def load_events(ws: Workspace, round_: int, rater: str | None = None, problems: list | None = None) -> list[dict]:
    """Every committed event of a round (optionally one rater's), oldest first.

    Files that are not events are skipped; pass a list as `problems` to learn which and why.
    """
    return chronological(read_events(ws, _event_paths(ws, round_, rater), round_, problems))


def chronological(events: list[dict]) -> list[dict]:
    return sorted(events, key=lambda e: (datetime.fromisoformat(e["created_at"]), e["event_id"]))


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


def materialise(ws: Workspace, round_: int | str, events: list[dict] | None = None) -> pa.Table:
    """Rewrite the round's `ratings` table from its events (whole file, atomically).

    Pass the events a caller already read so that what it computes and the table it writes
    come from one snapshot (a vote committed in between counts in neither)."""
    if not isinstance(round_, int):  # named sets have no ratings table: their events are read directly
        return tables.RATINGS.empty()
    table = to_table(load_events(ws, round_) if events is None else events)
    ws.write_parquet(tables.RATINGS.path(ws, round=round_), table)
    return table

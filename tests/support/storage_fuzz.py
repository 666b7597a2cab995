"""Hostile files for the rating storage (rating/raters/ and rating/events/): what a careless
script, a full disk or an attacker with write access to the workspace can leave there.

`plant(kind, path, ...)` makes one file of a kind; `KINDS` are the hostile ones. What each
must become is known without madmine: a valid file is read, every hostile one is skipped
and reported, none is ever opened in a way that blocks or reads without bound.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# kinds that are never a record or an event, whatever their name
KINDS = ("garbage", "empty", "fifo", "dev_zero", "dev_urandom", "dev_null", "folder", "loop", "dangling", "huge",
         "outside")


def plant(kind: str, path: Path, *, valid: bytes = b"", garbage: bytes = b"\x00\xff{", outside: Path | None = None,
          huge_bytes: int = 1 << 20) -> None:
    """Create `path` as a file of `kind` ("valid" writes `valid`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "valid":
        path.write_bytes(valid)
    elif kind == "garbage":
        path.write_bytes(garbage if garbage.strip() else b"\x00" + garbage)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "dev_urandom":
        path.symlink_to("/dev/urandom")
    elif kind == "dev_null":
        path.symlink_to("/dev/null")
    elif kind == "folder":
        path.mkdir()
        (path / "inside.json").write_bytes(valid or b"{}")
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "dangling":
        path.symlink_to(path.with_name("missing-target"))
    elif kind == "huge":  # a well-formed JSON object far over any storage file's limit
        path.write_bytes(b'{"pad": "' + b" " * huge_bytes + b'"}')
    elif kind == "outside":  # a symlink to a valid-looking file outside the workspace: read, but checked
        target = (outside or path.parent) / f"outside-{path.name}"
        target.write_bytes(garbage)
        path.symlink_to(target)
    else:
        raise ValueError(kind)


def event_bytes(round_: int, image_id: str, rater: str, score: int | None, stamp: str, event_id: str) -> bytes:
    return json.dumps({"round": round_, "image_id": image_id, "rater": rater, "score": score,
                       "created_at": stamp, "event_id": event_id}).encode()


def unblock(paths) -> None:
    """Open every FIFO among `paths` for writing once, so that a reader stuck on one (a regression)
    returns and the test ends."""
    for path in paths:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

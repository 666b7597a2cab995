"""Where each rater is: their own order of the round's images and their own votes.

Each rater gets a fixed shuffle of M (seeded by round and name), so order effects average out
over raters and a reload resumes at the same place: the first image they have not rated.
Nothing here ever holds another rater's scores.

A rater's votes are re-read from the workspace on every request (one listing of their
folder, then only the event files not seen yet), so that two servers on one workspace, or a
server and a script, always show the same progress.
"""

from __future__ import annotations

import hashlib
import posixpath
import random
import threading

from madmine.steps.rating import store
from madmine.steps.rating.roundset import RoundSet
from madmine.workspace import Workspace


class RaterSession:
    def __init__(self, order: list[str]):
        self.order = order
        self.position = {image_id: k for k, image_id in enumerate(order)}
        self.scores: dict[str, int | None] = {}
        self.events: list[dict] = []
        self.seen: set[str] = set()  # event file names already read
        self.lock = threading.Lock()

    @property
    def done(self) -> int:
        return sum(1 for i in self.order if i in self.scores)

    def first_unrated(self, start: int = 0) -> int:
        """The first unrated index at or after `start`, wrapping around; len(order) when all are rated."""
        n = len(self.order)
        for step in range(n):
            k = (start + step) % n
            if self.order[k] not in self.scores:
                return k
        return n

    def add(self, events: list[dict]) -> None:
        self.events = store.chronological(self.events + events)
        self.scores = {e["image_id"]: e["score"] for e in self.events if e["image_id"] in self.position}


class Sessions:
    def __init__(self, ws: Workspace, rs: RoundSet):
        self.ws = ws
        self.rs = rs
        self._sessions: dict[str, RaterSession] = {}
        self._lock = threading.Lock()

    def order(self, rater: str) -> list[str]:
        seed = int.from_bytes(hashlib.sha256(f"{self.rs.round}:{rater}".encode()).digest()[:8], "big")
        order = list(self.rs.image_ids)
        random.Random(seed).shuffle(order)
        return order

    def _refresh(self, rater: str, session: RaterSession) -> None:
        """Read the rater's event files this process has not seen (another server may have written them)."""
        folder = store.events_dir(self.ws, self.rs.round, rater)
        new = [n for n in self.ws.listdir(folder) if n.endswith(".json") and not n.startswith(".tmp-") and n not in session.seen]
        if new:
            session.add(store.read_events(self.ws, [(posixpath.join(folder, n), rater) for n in new], self.rs.round, []))
            session.seen.update(new)

    def get(self, rater: str) -> RaterSession:
        with self._lock:
            session = self._sessions.get(rater)
            if session is None:
                session = self._sessions[rater] = RaterSession(self.order(rater))
        with session.lock:
            self._refresh(rater, session)
        return session

    def vote(self, rater: str, image_id: str, score: int | None) -> tuple[RaterSession, int]:
        """Commit the vote, then move on: returns the session and the index to show next."""
        session = self.get(rater)
        with session.lock:
            event = store.record(self.ws, self.rs.round, image_id, rater, score)
            session.add([event])
            session.seen.add(store.event_name(event))
            return session, session.first_unrated(session.position[image_id] + 1)

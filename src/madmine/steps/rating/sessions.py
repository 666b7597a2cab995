"""Where each rater is: their own order of the round's images and their own votes.

Each rater gets a fixed shuffle of M (seeded by round and name), so order effects average out
over raters and a reload resumes at the same place: the first image they have not rated.
Nothing here ever holds another rater's scores.
"""

from __future__ import annotations

import hashlib
import random
import threading

from madmine.steps.rating import store
from madmine.steps.rating.roundset import RoundSet
from madmine.workspace import Workspace


class RaterSession:
    def __init__(self, order: list[str], scores: dict[str, int | None]):
        self.order = order
        self.position = {image_id: k for k, image_id in enumerate(order)}
        self.scores = scores
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

    def get(self, rater: str) -> RaterSession:
        with self._lock:
            session = self._sessions.get(rater)
            if session is None:
                events = store.load_events(self.ws, self.rs.round, rater)
                scores = {e["image_id"]: e["score"] for e in events if e["image_id"] in self.rs}
                session = self._sessions[rater] = RaterSession(self.order(rater), scores)
            return session

    def vote(self, rater: str, image_id: str, score: int | None) -> tuple[RaterSession, int]:
        """Commit the vote, then move on: returns the session and the index to show next."""
        session = self.get(rater)
        with session.lock:
            store.record(self.ws, self.rs.round, image_id, rater, score)
            session.scores[image_id] = score
            return session, session.first_unrated(session.position[image_id] + 1)

"""The map store: every model version's prediction maps, written by scoring and read by every
step that shows or measures a prediction (evaluation, rating app, report, annotate export,
compete).

A map is a class-index array plus its text (the target's mean entropy and max-softmax), kept
as a compressed PNG under cache/maps/<model>/<version>/. It is a cache: a missing or damaged
entry is recomputed by whoever needs it.
"""

from __future__ import annotations

import numpy as np

from madmine.images import ImageError, decode_map_png, encode_map_png
from madmine.workspace import Workspace


class MapStore:
    """Prediction maps of any (model, version) in one workspace."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def path(self, model: str, version: str, image_id: str) -> str:
        return self.ws.path("cache", "maps", model, version, image_id[:2], f"{image_id}.png")

    def get(self, model: str, version: str, image_id: str) -> tuple[np.ndarray, dict[str, str]] | None:
        """(map, text) or None when the map is not stored (or unreadable: it is recomputed)."""
        try:
            return decode_map_png(self.ws.get_bytes(self.path(model, version, image_id)))
        except (FileNotFoundError, ImageError, OSError, ValueError):
            return None

    def get_map(self, model: str, version: str, image_id: str) -> np.ndarray | None:
        found = self.get(model, version, image_id)
        return None if found is None else found[0]

    def put(self, model: str, version: str, image_id: str, label_map: np.ndarray, text: dict[str, str] | None = None) -> None:
        self.ws.put_bytes(self.path(model, version, image_id), encode_map_png(label_map, text))

    def has(self, model: str, version: str, image_id: str) -> bool:
        return self.ws.exists(self.path(model, version, image_id))

    def remove(self, model: str, version: str, image_id: str) -> None:
        self.ws.remove(self.path(model, version, image_id))

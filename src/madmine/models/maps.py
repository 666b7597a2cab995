"""Precomputed predictions: a folder of PNG class maps, one per image, matched by file stem.

Map files come from elsewhere: they are read and decoded through the untrusted-bytes
boundary (madmine.untrusted), so a missing, oversized, special or corrupt file is that
image's ImageError and never stops a run.
"""

from __future__ import annotations

import posixpath

import numpy as np

from madmine.images import ImageError, decode_map_png
from madmine.metrics import IGNORE
from madmine.untrusted import DEFAULT_DECODE_TIMEOUT_S, DEFAULT_MAX_BYTES, read_bytes
from madmine.workspace import filesystem, split_uri


def uri_stem(uri: str) -> str:
    """`a/b/x123.jpg` -> `x123` (the key a maps folder is matched by)."""
    return posixpath.splitext(posixpath.basename(split_uri(uri)[1]))[0]


class MapsFolder:
    """Reads the map of an image from `maps_dir/<stem>.png`, validating its class ids.

    With `lut` (a class map's table, model class id -> config id or 255) the PNGs hold the
    model's own class ids, which must be < len(lut), and come back mapped to config ids.
    """

    def __init__(self, maps_dir: str, num_classes: int, storage_options: dict | None = None, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
                 max_pixels: int = 64_000_000, lut: np.ndarray | None = None):
        self.protocol, self.root = split_uri(maps_dir)
        self.root = self.root.rstrip("/")
        self.fs = filesystem(maps_dir, storage_options)
        self.storage_options = storage_options
        self.lut = None if lut is None else np.asarray(lut, dtype=np.uint8)
        self.num_classes = num_classes if lut is None else len(lut)
        self.max_bytes, self.timeout_s, self.max_pixels = max_bytes, timeout_s, max_pixels

    def path_for(self, uri: str) -> str:
        return posixpath.join(self.root, f"{uri_stem(uri)}.png")

    def load(self, uri: str) -> np.ndarray:
        path = self.path_for(uri)
        try:
            data = read_bytes(path if self.protocol == "file" else f"{self.protocol}://{path}", self.storage_options,
                              max_bytes=self.max_bytes)
        except ImageError as exc:
            if exc.reason == "file not found":
                raise ImageError("no precomputed map", f"expected {path} for {uri}") from exc
            raise ImageError(f"map {exc.reason}", exc.detail) from exc
        try:
            label_map, _ = decode_map_png(data, max_pixels=self.max_pixels, timeout_s=self.timeout_s)
        except ImageError as exc:
            raise ImageError(exc.reason, f"{path}: {exc.detail}") from exc
        bad = (label_map >= self.num_classes) & (label_map != IGNORE)
        if bad.any():
            values = sorted(set(np.unique(label_map[bad]).tolist()))[:5]
            raise ImageError(
                "map has unknown class ids",
                f"{path} holds {values}; ids must be < {self.num_classes} or 255",
            )
        if self.lut is not None:
            mapped = np.full(256, IGNORE, dtype=np.uint8)
            mapped[: len(self.lut)] = self.lut[:256]
            mapped[IGNORE] = IGNORE
            label_map = mapped[label_map]
        return label_map

    def listing_fingerprint(self) -> list[tuple[str, int]]:
        entries = self.fs.find(self.root, detail=True)
        return sorted((posixpath.basename(p), int(info.get("size") or 0)) for p, info in entries.items())

"""Precomputed predictions: a folder of PNG class maps, one per image, matched by file stem."""

from __future__ import annotations

import posixpath

import numpy as np

from madmine.images import ImageError, decode_map_png
from madmine.metrics import IGNORE
from madmine.workspace import filesystem, split_uri


def uri_stem(uri: str) -> str:
    """`a/b/x123.jpg` -> `x123` (the key a maps folder is matched by)."""
    return posixpath.splitext(posixpath.basename(split_uri(uri)[1]))[0]


class MapsFolder:
    """Reads the map of an image from `maps_dir/<stem>.png`, validating its class ids."""

    def __init__(self, maps_dir: str, num_classes: int, storage_options: dict | None = None):
        self.protocol, self.root = split_uri(maps_dir)
        self.root = self.root.rstrip("/")
        self.fs = filesystem(maps_dir, storage_options)
        self.num_classes = num_classes

    def path_for(self, uri: str) -> str:
        return posixpath.join(self.root, f"{uri_stem(uri)}.png")

    def load(self, uri: str) -> np.ndarray:
        path = self.path_for(uri)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError as exc:
            raise ImageError("no precomputed map", f"expected {path} for {uri}") from exc
        label_map, _ = decode_map_png(data)
        bad = (label_map >= self.num_classes) & (label_map != IGNORE)
        if bad.any():
            values = sorted(set(np.unique(label_map[bad]).tolist()))[:5]
            raise ImageError(
                "map has unknown class ids",
                f"{path} holds {values}; ids must be < {self.num_classes} or 255",
            )
        return label_map

    def listing_fingerprint(self) -> list[tuple[str, int]]:
        entries = self.fs.find(self.root, detail=True)
        return sorted((posixpath.basename(p), int(info.get("size") or 0)) for p, info in entries.items())

"""Stage: fetch bytes and decode them safely into each distinct model input size."""

from __future__ import annotations

import time

import numpy as np

from madmine.images import ImageError, decode, resize_uint8
from madmine.untrusted import Limits, guarded_map, read_bytes


def pixels_column(size: int) -> str:
    return f"pixels_{size}"


def _decode_one(uri: str, sizes: tuple[int, ...], storage_options: dict, limits: Limits,
                draft: int) -> tuple[dict[str, np.ndarray], list[float]]:
    """One image -> ({size: uint8 (size, size, 3)}, seconds of fetch, decode, resize), or ImageError.

    The bytes come through the untrusted boundary's read_bytes (a regular file or object, up to
    max_bytes). Runs inside guarded_map, which holds the time limit, so the decoder runs in
    this thread."""
    started = time.perf_counter()
    data = read_bytes(uri, storage_options, max_bytes=limits.max_bytes)
    fetched = time.perf_counter()
    img = decode(data, max_pixels=limits.max_pixels, min_side=limits.min_side, draft=draft, timeout_s=None)
    decoded = time.perf_counter()
    out = {size: resize_uint8(img, size) for size in sizes}
    return out, [fetched - started, decoded - fetched, time.perf_counter() - decoded]


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    sizes: tuple[int, ...],
    storage_options: dict | None = None,
    limits: Limits = Limits(),
    threads: int = 4,
) -> dict[str, np.ndarray]:
    """image_id, uri, shard -> the same plus error/stage/detail and one uint8 array per size.

    Fetching, decoding and resizing release the GIL, so images of a batch go through `threads`
    of the untrusted boundary's guard threads (guarded_map), each image within
    `limits.decode_timeout_s`. A failed image keeps its row (error set, pixels zero) so that every
    image of a shard is accounted for.
    """
    uris = [str(u) for u in batch["uri"]]
    n = len(uris)
    errors, details = [""] * n, [""] * n
    pixels = {size: np.zeros((n, size, size, 3), dtype=np.uint8) for size in sizes}
    draft = max(sizes) if sizes else 64

    def one(uri: str):
        return _decode_one(uri, sizes, storage_options or {}, limits, draft)

    laps = np.zeros((n, 3))
    for i, result in enumerate(guarded_map(one, uris, threads=threads, timeout_s=limits.decode_timeout_s)):
        if isinstance(result, ImageError):
            errors[i], details[i] = result.reason, result.detail
            continue
        arrays, laps[i] = result
        for size in sizes:
            pixels[size][i] = arrays[size]
    out = {
        "image_id": np.asarray(batch["image_id"], dtype=object),
        "uri": np.asarray(uris, dtype=object),
        "shard": np.asarray(batch["shard"], dtype=object),
        "error": np.asarray(errors, dtype=object),
        "stage": np.asarray(["decode" if e else "" for e in errors], dtype=object),
        "detail": np.asarray(details, dtype=object),
    }
    for size, arr in pixels.items():
        out[pixels_column(size)] = arr
    out["t_fetch"], out["t_decode"], out["t_resize"] = laps[:, 0], laps[:, 1], laps[:, 2]  # seconds, per image
    return out

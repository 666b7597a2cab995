"""Stage: fetch bytes and decode them safely into each distinct model input size."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from madmine.images import ImageError, decode, resize_uint8
from madmine.untrusted import DEFAULT_DECODE_TIMEOUT_S, DEFAULT_MAX_BYTES, read_bytes


def pixels_column(size: int) -> str:
    return f"pixels_{size}"


def _fetch(uri: str, storage_options: dict, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes | ImageError:
    """The bytes through the untrusted-bytes boundary: a regular file or object up to max_bytes."""
    try:
        return read_bytes(uri, storage_options, max_bytes=max_bytes)
    except ImageError as exc:
        return exc


def _decode_one(uri: str, sizes: tuple[int, ...], storage_options: dict, max_pixels: int, min_side: int, draft: int,
                max_bytes: int, timeout_s: float | None):
    """One image -> ({size: uint8 (size, size, 3)} or (reason, detail), seconds of fetch, decode, resize)."""
    clock = [time.perf_counter()]

    def lap() -> None:
        clock.append(time.perf_counter())

    try:
        data = _fetch(uri, storage_options, max_bytes)
        lap()
        if isinstance(data, ImageError):
            raise data
        img = decode(data, max_pixels=max_pixels, min_side=min_side, draft=draft, timeout_s=timeout_s)
        lap()
        out = {size: resize_uint8(img, size) for size in sizes}
    except ImageError as exc:
        out = (exc.reason, exc.detail)
    except Exception as exc:  # a decoder bug must not kill the batch: record it
        out = ("decode failed", f"{type(exc).__name__}: {exc}")
    lap()
    laps = [b - a for a, b in zip(clock, clock[1:])] + [0.0, 0.0]
    return out, laps[:3]


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    sizes: tuple[int, ...],
    storage_options: dict | None = None,
    max_pixels: int = 64_000_000,
    min_side: int = 8,
    threads: int = 4,
    pool: ThreadPoolExecutor | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
) -> dict[str, np.ndarray]:
    """image_id, uri, shard -> the same plus error/stage/detail and one uint8 array per size.

    Fetching, decoding and resizing release the GIL, so images of a batch go through a thread
    pool (`pool`, or one made for the call). A failed image keeps its row (error set, pixels
    zero) so that every image of a shard is accounted for.
    """
    uris = [str(u) for u in batch["uri"]]
    n = len(uris)
    errors, details = [""] * n, [""] * n
    pixels = {size: np.zeros((n, size, size, 3), dtype=np.uint8) for size in sizes}
    draft = max(sizes) if sizes else 64

    def one(uri: str):
        return _decode_one(uri, sizes, storage_options or {}, max_pixels, min_side, draft, max_bytes, decode_timeout_s)

    if pool is None:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, n))) as own:
            results = list(own.map(one, uris))
    else:
        results = list(pool.map(one, uris))
    laps = np.zeros((n, 3))
    for i, (result, seconds) in enumerate(results):
        laps[i] = seconds
        if isinstance(result, tuple):
            errors[i], details[i] = result
            continue
        for size in sizes:
            pixels[size][i] = result[size]
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

"""Stage: fetch bytes and decode them safely into each distinct model input size."""

from __future__ import annotations

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


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    sizes: tuple[int, ...],
    storage_options: dict | None = None,
    max_pixels: int = 64_000_000,
    min_side: int = 8,
    fetch_threads: int = 4,
    max_bytes: int = DEFAULT_MAX_BYTES,
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
) -> dict[str, np.ndarray]:
    """image_id, uri, shard -> the same plus error/stage/detail and one uint8 array per size.

    A failed image keeps its row (error set, pixels zero) so that the driver can account
    for every image of a shard.
    """
    uris = [str(u) for u in batch["uri"]]
    n = len(uris)
    errors, details = [""] * n, [""] * n
    pixels = {size: np.zeros((n, size, size, 3), dtype=np.uint8) for size in sizes}
    draft = max(sizes) if sizes else 64
    with ThreadPoolExecutor(max_workers=max(1, min(fetch_threads, n))) as pool:
        fetched = list(pool.map(lambda u: _fetch(u, storage_options or {}, max_bytes), uris))
    for i, data in enumerate(fetched):
        try:
            if isinstance(data, ImageError):
                raise data
            img = decode(data, max_pixels=max_pixels, min_side=min_side, draft=draft, timeout_s=decode_timeout_s)
            for size in sizes:
                pixels[size][i] = resize_uint8(img, size)
        except ImageError as exc:
            errors[i], details[i] = exc.reason, exc.detail
        except Exception as exc:  # a decoder bug must not kill the batch: record it
            errors[i], details[i] = "decode failed", f"{type(exc).__name__}: {exc}"
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
    return out

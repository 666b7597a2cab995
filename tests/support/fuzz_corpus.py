"""Hostile image bytes for the boundary's tests: a seeded generator of mutated images."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def corrupt_idat_png(seed: int = 0) -> bytes:
    """A PNG with a valid header and a damaged IDAT whose CRC is right (so only decoding finds it)."""
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((40, 50, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    for k in range(at + 10, at + 4 + length - 4, 7):
        data[k] ^= 0x55
    crc = zlib.crc32(bytes(data[at : at + 4 + length])) & 0xFFFFFFFF
    data[at + 4 + length : at + 8 + length] = struct.pack(">I", crc)
    return bytes(data)

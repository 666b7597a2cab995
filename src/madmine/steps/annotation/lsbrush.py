"""Label Studio's brush RLE (the rle-pack bit format of thi-ng/umbrella), encoded the way
label_studio_sdk.converter.brush.encode_rle does it, byte for byte.

The SDK itself pulls OpenCV, NLTK, Faker and a code generator into an install that needs
none of them; this module is the same format in ~80 lines, and the tests check it against
the SDK's own encoder and decoder.

Layout: 32 bits value count, 5 bits word size - 1, 4 x 4 bits run-length field sizes - 1,
then chunks: 1 bit (1 = repeat, 0 = literal), 2 bits field-size index, the count - 1, then
one word (repeat) or count words (literal). Brush layers are RGBA images with every channel
equal: 255 where painted, 0 elsewhere.
"""

from __future__ import annotations

import numpy as np

WORD = 8
SIZES = (3, 4, 8, 16)
MAX_RUN = 1 << 16


def _chunks(length: int, value: int) -> list[str]:
    v = f"{value:08b}"
    if length == 1:
        return ["0" + "00" + "000" + v]
    if length <= 8:
        return ["1" + "00" + f"{length - 1:03b}" + v]
    if length <= 16:
        return ["1" + "01" + f"{length - 1:04b}" + v]
    if length <= 256:
        return ["1" + "10" + f"{length - 1:08b}" + v]
    out = []
    while length > MAX_RUN:
        out.append("1" + "11" + f"{MAX_RUN - 1:016b}" + v)
        length -= MAX_RUN
    out.append("1" + "11" + f"{length - 1:016b}" + v)
    return out


def encode(values: np.ndarray) -> list[int]:
    """A flat uint8 array -> RLE byte list (Label Studio's `rle` field)."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    n = values.size
    header = f"{n:032b}" + f"{WORD - 1:05b}" + "".join(f"{s - 1:04b}" for s in SIZES)
    parts = [header]
    if n:
        ends = np.append(np.flatnonzero(values[1:] != values[:-1]), n - 1)
        lengths = np.diff(np.append(-1, ends))
        for length, value in zip(lengths.tolist(), values[ends].tolist()):
            parts.extend(_chunks(length, value))
    bits = "".join(parts)
    bits += "0" * (8 - len(bits) % 8)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


def decode(rle: list[int], expected: int | None = None) -> np.ndarray:
    """RLE byte list -> flat uint8 array; ValueError on a malformed stream.

    `expected` is the number of values the caller needs: a stream that declares another
    count is refused before anything is allocated (the 32-bit count is the sender's word).
    """
    if not isinstance(rle, (list, tuple)) or not all(type(b) is int and 0 <= b <= 255 for b in rle):
        raise ValueError("brush RLE must be a list of byte values 0..255")
    bits = "".join(f"{b:08b}" for b in bytes(rle))
    pos = 0

    def read(width: int) -> int:
        nonlocal pos
        if pos + width > len(bits):
            raise ValueError("brush RLE ends early")
        pos += width
        return int(bits[pos - width : pos], 2)

    n = read(32)
    if expected is not None and n != expected:
        raise ValueError(f"brush RLE holds {n} values; {expected} expected")
    if n > len(bits) * (1 << 16):  # no chunk spans more than 2**16 values: this stream cannot hold n
        raise ValueError(f"brush RLE declares {n} values but is {len(rle)} bytes long")
    word = read(5) + 1
    if word > 8:
        raise ValueError(f"brush RLE words of {word} bits; Label Studio writes 8")
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(n, dtype=np.uint8)
    i = 0
    while i < n:
        repeat = read(1)
        j = min(n, i + 1 + read(sizes[read(2)]))
        if repeat:
            out[i:j] = read(word)
        else:
            for k in range(i, j):
                out[k] = read(word)
        i = j
    return out


def encode_mask(mask: np.ndarray) -> list[int]:
    """A boolean (h, w) mask -> the RLE of its RGBA brush layer."""
    layer = np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8)
    return encode(np.repeat(layer.ravel(), 4))


def decode_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    """The RLE of an RGBA brush layer -> boolean (h, w) mask (painted where alpha >= 128)."""
    try:
        flat = decode(rle, expected=height * width * 4)
    except ValueError as exc:
        if "expected" not in str(exc):
            raise
        raise ValueError(f"{exc}: a {width}x{height} RGBA layer needs {height * width * 4}") from None
    return flat.reshape(height, width, 4)[:, :, 3] >= 128

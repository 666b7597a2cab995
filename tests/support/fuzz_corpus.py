"""Hostile image bytes for the boundary's tests: a seeded generator of mutated images.

`seeds()` gives a small valid file of every format Pillow opens: what Pillow can write is
written by Pillow (several modes and options where they change the decoder's path); the
formats Pillow only reads get a minimal file built here by hand. `cases(seed)` mutates them
the ways hostile and broken files differ from good ones:

- bit flips (a few random bits, anywhere);
- truncation at every structural boundary the format has (PNG chunks, JPEG markers, GIF
  blocks, BMP headers, TIFF IFD entries, RIFF chunks; a ladder of offsets for the others);
- patched dimensions (0, 1, 65535, 2**31 - 1 and negative where the field is signed; CRCs
  fixed so that only the size is wrong);
- patched chunk and segment lengths (0, off by one, huge), with and without a fixed CRC;
- appended garbage, and a second image appended;
- polyglots: one format's magic on another's body, a ZIP after a PNG, HTML in a JPEG
  comment, a PDF header before a JPEG, a GIF that is also a script.

Everything is a pure function of the seed: the same seed gives the same bytes.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

Image.init()

DIMENSIONS = (0, 1, 65535, 2**31 - 1)


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


# ---- seeds: a small valid file of every format ---------------------------------------------
def _picture(width: int = 20, height: int = 14) -> Image.Image:
    rng = np.random.default_rng(1)
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    pixels[3:9, 4:12] = rng.integers(0, 256, 3, dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


# (format, mode, save options): each a different path through a decoder
WRITTEN = [
    ("PNG", "RGB", {}),
    ("PNG", "L", {}),
    ("PNG", "P", {"transparency": 0}),
    ("PNG", "RGBA", {}),
    ("PNG", "1", {}),
    ("PNG", "I;16", {}),
    ("PNG", "RGB", {"exif": "orientation"}),
    ("PNG", "RGB", {"save_all": True, "append_images": "frame"}),  # APNG
    ("JPEG", "RGB", {"quality": 90}),
    ("JPEG", "RGB", {"progressive": True, "exif": "orientation"}),
    ("JPEG", "L", {}),
    ("JPEG", "CMYK", {}),
    ("MPO", "RGB", {"save_all": True, "append_images": "frame"}),
    ("GIF", "P", {"transparency": 0}),
    ("GIF", "P", {"save_all": True, "append_images": "frame", "duration": 50}),
    ("BMP", "RGB", {}),
    ("BMP", "P", {}),
    ("BMP", "1", {}),
    ("BMP", "RGBA", {}),
    ("DIB", "RGB", {}),
    ("TIFF", "RGB", {}),
    ("TIFF", "RGB", {"compression": "tiff_lzw"}),
    ("TIFF", "RGB", {"compression": "tiff_adobe_deflate"}),
    ("TIFF", "RGB", {"compression": "jpeg"}),
    ("TIFF", "L", {"compression": "packbits"}),
    ("TIFF", "1", {"compression": "group4"}),
    ("TIFF", "I;16", {}),
    ("TIFF", "F", {}),
    ("TIFF", "CMYK", {}),
    ("TIFF", "RGB", {"save_all": True, "append_images": "frame"}),
    ("WEBP", "RGB", {"quality": 80}),
    ("WEBP", "RGBA", {"lossless": True}),
    ("WEBP", "RGB", {"save_all": True, "append_images": "frame", "duration": 50}),
    ("AVIF", "RGB", {}),
    ("BLP", "P", {}),
    ("DDS", "RGB", {}),
    ("ICNS", "RGBA", {}),
    ("ICO", "RGBA", {}),
    ("IM", "RGB", {}),
    ("JPEG2000", "RGB", {}),
    ("MSP", "1", {}),
    ("PCX", "RGB", {}),
    ("PPM", "RGB", {}),
    ("PPM", "I;16", {}),
    ("QOI", "RGB", {}),
    ("SGI", "RGB", {}),
    ("SPIDER", "F", {}),
    ("TGA", "RGB", {"compression": "tga_rle"}),
    ("XBM", "1", {}),
    ("EPS", "RGB", {}),  # Pillow opens it by handing it to Ghostscript: madmine must not
]


def _convert(img: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    return img.convert(mode)


def _written(fmt: str, mode: str, options: dict) -> bytes | None:
    img = _convert(_picture(), mode)
    options = dict(options)
    if options.get("exif") == "orientation":
        exif = Image.Exif()
        exif[0x0112] = 6
        options["exif"] = exif.tobytes()
    if options.get("append_images") == "frame":
        options["append_images"] = [_convert(_picture().transpose(Image.Transpose.FLIP_LEFT_RIGHT), mode)]
    if fmt == "ICNS":
        img = img.resize((16, 16))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.save(buf, fmt, **options)
    except (OSError, KeyError, ValueError):  # a codec this Pillow was built without
        return None
    return buf.getvalue()


def _pcx() -> bytes:
    buf = io.BytesIO()
    _picture().save(buf, "PCX")
    return buf.getvalue()


def _ico_bytes() -> bytes:
    buf = io.BytesIO()
    _picture(16, 16).convert("RGBA").save(buf, "ICO", sizes=[(16, 16)], bitmap_format="bmp")
    return buf.getvalue()


def _header_text(lines: list[str]) -> bytes:
    return b"".join(line.ljust(80).encode() for line in lines)


def _crafted() -> dict[str, bytes]:
    """Minimal files of the formats Pillow reads but does not write."""
    w, h = 8, 6
    rgb = bytes(range(w * h * 3 % 256)) * 3
    rgb = (rgb * 10)[: w * h * 3]
    out: dict[str, bytes] = {}
    out["PSD"] = (
        b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3) + struct.pack(">I", 0) * 3 + struct.pack(">H", 0) + rgb
    )
    out["SUN"] = struct.pack(">8I", 0x59A66A95, w, h, 24, len(rgb), 1, 0, 0) + rgb
    out["XPM"] = (
        b'/* XPM */\nstatic char *x[] = {\n"4 2 2 1",\n"a c #ff0000",\n"b c #0000ff",\n"abab",\n"baba"};\n'
    )
    out["FITS"] = _header_text(["SIMPLE  =                    T", "BITPIX  =                    8",
                                "NAXIS   =                    2", f"NAXIS1  =                    {w}",
                                f"NAXIS2  =                    {h}", "END"]).ljust(2880, b" ") + bytes(w * h).ljust(2880, b"\0")
    ico = bytearray(_ico_bytes())
    ico[2:4] = struct.pack("<H", 2)  # the same directory with type 2: a cursor
    out["CUR"] = bytes(ico)
    pcx = _pcx()
    out["DCX"] = struct.pack("<II", 0x3ADE68B1, 12) + struct.pack("<I", 0) + pcx
    out["GBR"] = struct.pack(">IIIIII", 28 + 5, 2, w, h, 1, 0x47494D50) + struct.pack(">I", 0) + b"brsh\0" + bytes(w * h)
    pixar = bytearray(512)
    pixar[:4] = b"\200\350\000\000"
    pixar[416:418], pixar[418:420] = struct.pack("<H", h), struct.pack("<H", w)
    pixar[424:428] = struct.pack("<HH", 14, 2)
    out["PIXAR"] = bytes(pixar) + rgb
    area = [0] * 64
    area[1], area[8], area[9], area[10], area[13], area[14], area[33] = 4, h, w, 1, 0, 0, 256
    out["MCIDAS"] = b"\x00\x00\x00\x00" + struct.pack("!64i", *area)[4:] + bytes(w * h)
    out["FTEX"] = b"FTEX" + struct.pack("<i2i2i2i", 1, w, h, 1, 1, 1, 32) + struct.pack("<i", len(rgb)) + rgb
    out["XVTHUMB"] = b"P7 332\n#XVVERSION:Version 2.28\n#END_OF_COMMENTS\n" + f"{w} {h} 255\n".encode() + bytes(w * h)
    out["IMT"] = f"width {w}\nheight {h}\npixel n8\n".encode() + b"\x0c" + bytes(w * h)
    out["MPEG"] = b"\x00\x00\x01\xb3" + bytes([w >> 4, ((w & 15) << 4) | (h >> 8), h & 255]) + bytes(64)
    out["BUFR"] = b"BUFR" + bytes(64)
    out["GRIB"] = b"GRIB" + bytes(3) + b"\x01" + bytes(60)
    out["HDF5"] = b"\x89HDF\r\n\x1a\n" + bytes(64)
    out["WMF"] = struct.pack("<IHhhhhHIH", 0x9AC6CDD7, 0, 0, 0, w * 100, h * 100, 1440, 0, 0) + b"\x01\x00\t\x00" + bytes(60)
    iptc = b"\x1c\x03\x3c\x00\x02\x01\x00"  # one layer, no component: L
    iptc += b"\x1c\x03\x14\x00\x02" + struct.pack(">H", w) + b"\x1c\x03\x1e\x00\x02" + struct.pack(">H", h)
    iptc += b"\x1c\x03\x78\x00\x01\x01"  # raw
    iptc += b"\x1c\x08\x0a\x80" + bytes(w * h)
    out["IPTC"] = iptc
    fli = bytearray(128)
    struct.pack_into("<IHHHHHH", fli, 0, 128 + 16, 0xAF11, 1, w, h, 8, 0)
    out["FLI"] = bytes(fli) + struct.pack("<IHH8x", 16, 0xF1FA, 0)
    pcd = bytearray(2048 + 1539 + 768 * 512 * 3 // 2 + 96 * 1024)
    pcd[2048 : 2048 + 7] = b"PCD_IPI"
    out["PCD"] = bytes(pcd[: 2048 + 1539 + 16])
    return out


def identify(data: bytes) -> str | None:
    """The format unrestricted Pillow takes these bytes for (None: none)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return img.format
    except Exception:  # noqa: BLE001 - a seed Pillow does not take is simply not a seed
        return None


@functools.cache
def _seeds() -> tuple[tuple[str, bytes], ...]:
    return tuple(_make_seeds().items())


def seeds() -> dict[str, bytes]:
    """name -> bytes of a valid small file; the name starts with the format Pillow reads it as."""
    return dict(_seeds())


def _make_seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for fmt, mode, options in WRITTEN:
        data = _written(fmt, mode, options)
        if data is None:
            continue
        name = f"{fmt}-{mode}" + "".join(f"-{k}" if k in ("exif", "append_images") else f"-{k}={v}"
                                         for k, v in options.items() if k not in ("save_all", "duration"))
        out[name] = data
    for fmt, data in _crafted().items():
        if identify(data) is not None or fmt in ("PCD", "MPEG"):
            out[f"{fmt}-crafted"] = data
    return out


# ---- structure: where a format's boundaries and fields are ---------------------------------
def png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset of the length field, data length, type) of every PNG chunk."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        out.append((pos, length, data[pos + 4 : pos + 8]))
        pos += 12 + length
    return out


def jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(offset of the marker, segment length field or 0) of every JPEG marker up to SOS."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            out.append((pos, 0))
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        out.append((pos, length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def riff_chunks(data: bytes) -> list[tuple[int, int]]:
    out, pos = [], 12
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        out.append((pos, size))
        pos += 8 + size + (size & 1)
    return out


def tiff_entries(data: bytes) -> tuple[str, list[int]]:
    """(byte order, offsets of the first IFD's 12-byte entries)."""
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return order, []
    count = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
    return order, [ifd + 2 + 12 * k for k in range(count) if ifd + 14 + 12 * k <= len(data)]


def boundaries(data: bytes) -> list[int]:
    """Offsets where a structure starts or ends: where a truncated download or copy stops."""
    cuts = {1, 2, 4, 8, 12, 16, 32, 64, 128, 256, len(data) // 2, len(data) - 1}
    if data.startswith(b"\x89PNG"):
        for pos, length, _ in png_chunks(data):
            cuts.update({pos, pos + 4, pos + 8, pos + 8 + length, pos + 12 + length})
    elif data.startswith(b"\xff\xd8"):
        for pos, length in jpeg_segments(data):
            cuts.update({pos, pos + 2, pos + 4, pos + 2 + length})
    elif data.startswith(b"GIF8"):
        cuts.update({6, 13, 13 + 3 * (2 ** ((data[10] & 7) + 1)) if data[10] & 0x80 else 13})
        cuts.update(k for k in range(len(data)) if data[k] in (0x21, 0x2C, 0x3B) and k > 13)
    elif data.startswith(b"BM"):
        cuts.update({14, 14 + struct.unpack("<I", data[14:18])[0], struct.unpack("<I", data[10:14])[0]})
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        _, entries = tiff_entries(data)
        cuts.update(entries)
        cuts.update(e + 12 for e in entries)
    elif data.startswith(b"RIFF"):
        for pos, size in riff_chunks(data):
            cuts.update({pos, pos + 8, pos + 8 + size})
    return sorted(c for c in cuts if 0 < c < len(data))


def _png_fix_crc(data: bytearray, pos: int, length: int) -> None:
    crc = zlib.crc32(bytes(data[pos + 4 : pos + 8 + length])) & 0xFFFFFFFF
    data[pos + 8 + length : pos + 12 + length] = struct.pack(">I", crc)


def patched_dimensions(data: bytes) -> Iterator[tuple[str, bytes]]:
    for value in DIMENSIONS:
        if data.startswith(b"\x89PNG"):
            for pos, length, kind in png_chunks(data):
                if kind == b"IHDR":
                    for field in (8, 12):
                        out = bytearray(data)
                        out[pos + field : pos + field + 4] = struct.pack(">I", value)
                        _png_fix_crc(out, pos, length)
                        yield f"ihdr{field}={value}", bytes(out)
        elif data.startswith(b"\xff\xd8"):
            for pos, _ in jpeg_segments(data):
                if data[pos + 1] in (0xC0, 0xC1, 0xC2):
                    for field in (5, 7):
                        out = bytearray(data)
                        out[pos + field : pos + field + 2] = struct.pack(">H", min(value, 65535))
                        yield f"sof{field}={value}", bytes(out)
        elif data.startswith(b"GIF8"):
            for field in (6, 8):
                out = bytearray(data)
                out[field : field + 2] = struct.pack("<H", min(value, 65535))
                yield f"screen{field}={value}", bytes(out)
            at = data.find(b"\x2c", 13)
            if at > 0:
                out = bytearray(data)
                out[at + 5 : at + 7] = struct.pack("<H", min(value, 65535))
                yield f"frame={value}", bytes(out)
        elif data.startswith(b"BM"):
            for field in (18, 22):
                for signed in (value, -value):
                    out = bytearray(data)
                    out[field : field + 4] = struct.pack("<i", max(-(2**31), min(signed, 2**31 - 1)))
                    yield f"bmp{field}={signed}", bytes(out)
        elif data[:4] in (b"II*\x00", b"MM\x00*"):
            order, entries = tiff_entries(data)
            for entry in entries:
                tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
                if tag in (256, 257):
                    out = bytearray(data)
                    fmt = order + ("H" if kind == 3 else "I")
                    out[entry + 8 : entry + 8 + struct.calcsize(fmt)] = struct.pack(fmt, min(value, 65535) if kind == 3 else value)
                    yield f"tiff{tag}={value}", bytes(out)
        elif data.startswith(b"RIFF") and b"VP8" in data[12:16]:
            out = bytearray(data)
            if data[12:16] == b"VP8 ":
                out[26:28] = struct.pack("<H", value & 0x3FFF)
            else:
                out[21:25] = struct.pack("<I", value & 0xFFFFFFFF)
            yield f"webp={value}", bytes(out)


def patched_lengths(data: bytes) -> Iterator[tuple[str, bytes]]:
    if data.startswith(b"\x89PNG"):
        for pos, length, kind in png_chunks(data)[:4]:
            for value in (0, length + 1, max(length - 1, 0), 0x7FFFFFFF, 0xFFFFFFFF):
                for fix in (False, True):
                    out = bytearray(data)
                    out[pos : pos + 4] = struct.pack(">I", value)
                    if fix and pos + 12 + value <= len(out):
                        _png_fix_crc(out, pos, value)
                    yield f"{kind.decode('latin-1')}-len={value}{'-crc' if fix else ''}", bytes(out)
    elif data.startswith(b"\xff\xd8"):
        for pos, length in jpeg_segments(data):
            if length:
                for value in (0, 1, 2, length + 1, length - 1, 0xFFFF):
                    out = bytearray(data)
                    out[pos + 2 : pos + 4] = struct.pack(">H", value)
                    yield f"jpeg{data[pos + 1]:02x}-len={value}", bytes(out)
    elif data.startswith(b"RIFF"):
        for value in (0, 4, 0xFFFFFFFF):
            out = bytearray(data)
            out[4:8] = struct.pack("<I", value)
            yield f"riff-len={value}", bytes(out)
        for pos, size in riff_chunks(data):
            for value in (0, size + 1, 0x7FFFFFFF):
                out = bytearray(data)
                out[pos + 4 : pos + 8] = struct.pack("<I", value)
                yield f"riff{pos}-len={value}", bytes(out)
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        order, entries = tiff_entries(data)
        for entry in entries:
            for value in (0, 0xFFFF, 0x7FFFFFFF):
                out = bytearray(data)
                out[entry + 4 : entry + 8] = struct.pack(order + "I", value)
                yield f"tiff-count{entry}={value}", bytes(out)
    elif data.startswith(b"GIF8"):
        at = data.find(b"\x2c", 13)
        if at > 0 and at + 11 < len(data):
            for value in (0, 0xFF):
                out = bytearray(data)
                out[at + 11] = value  # the first LZW sub-block's length
                yield f"gif-block={value}", bytes(out)


def polyglots(data: bytes, rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("evil.html", "<script>alert(1)</script>")
    yield "plus-zip", data + zipped.getvalue()
    yield "zip-first", zipped.getvalue() + data
    yield "pdf-header", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + data
    yield "html-header", b"<html><script>alert(1)</script>" + data
    yield "gif-script", b"GIF89a/*" + data[8:] + b"*/=alert(1);"
    for magic in (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP", b"8BPS"):
        if not data.startswith(magic):
            yield f"magic-{magic[:4].hex()}", magic + data[len(magic) :]
    if data.startswith(b"\xff\xd8"):
        comment = b"<html><body onload=alert(1)>" * 4
        yield "jpeg-html-comment", data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


def mutations(name: str, data: bytes, rng: np.random.Generator, flips: int = 6) -> Iterator[tuple[str, bytes]]:
    for k in range(flips):
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            at = int(rng.integers(0, len(out)))
            out[at] ^= 1 << int(rng.integers(0, 8))
        yield f"flip{k}", bytes(out)
    for cut in boundaries(data):
        yield f"cut{cut}", data[:cut]
    yield from patched_dimensions(data)
    yield from patched_lengths(data)
    yield "garbage-small", data + rng.integers(0, 256, 17, dtype=np.uint8).tobytes()
    yield "garbage-large", data + rng.integers(0, 256, 64 << 10, dtype=np.uint8).tobytes()
    yield "two-images", data + data
    yield from polyglots(data, rng)


def cases(seed: int = 0, flips: int = 6) -> Iterator[tuple[str, bytes]]:
    """(name, bytes): every seed as written, then its mutations; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    for name, data in seeds().items():
        yield name, data
        for kind, mutated in mutations(name, data, rng, flips):
            yield f"{name}/{kind}", mutated

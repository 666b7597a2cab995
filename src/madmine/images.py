"""Safe image decoding and preprocessing.

Web corpora hold every kind of broken or odd file. Decoding must turn each valid one into
the RGB image a person would see (EXIF orientation applied, CMYK / 16-bit / palette /
alpha converted) and refuse the rest with a short reason, without ever decoding a
decompression bomb.

`decode`, `probe` and `decode_map_png` are the decoding half of the untrusted-bytes
boundary (madmine.untrusted): each gives a result or an ImageError, never another
exception, within `timeout_s`. Only the formats of IMAGE_EXTENSIONS are opened, so bytes
that only an exotic Pillow plugin recognises (EPS hands its input to Ghostscript) are
"not an image".
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import scipy.fftpack
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from madmine.untrusted import DEFAULT_DECODE_TIMEOUT_S, ImageError, guarded

__all__ = ["IMAGE_EXTENSIONS", "FORMATS", "ImageError", "decode", "probe", "perceptual_hash", "decode_map_png", "encode_map_png"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")  # the plugins for those extensions (JPEG also opens MPO)
MAP_FORMATS = ("PNG",)

# The size limit is max_pixels, checked on the declared size before any pixel is decoded;
# Pillow's own process-wide warning would only repeat it, and catching it per call with
# warnings.catch_warnings is not thread-safe. Its hard limit (DecompressionBombError) stays.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _open(data: bytes, max_pixels: int, formats: tuple[str, ...] = FORMATS) -> Image.Image:
    if not data:
        raise ImageError("empty file", "0 bytes")
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("decompression bomb", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not an image", f"{len(data)} bytes that no decoder of {', '.join(formats)} recognises") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated or corrupt image data" if "truncat" in str(exc).lower() else "corrupt header"
        raise ImageError(reason, str(exc)) from exc
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError("decompression bomb", f"declared size {w}x{h} exceeds max_pixels={max_pixels}")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode to 8-bit RGB as displayed."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray((scaled * 255 + 0.5).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")
    return img


def decode(
    data: bytes,
    *,
    max_pixels: int = 64_000_000,
    min_side: int = 8,
    draft: int | None = None,
    timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
) -> Image.Image:
    """Bytes -> RGB PIL image as displayed, or ImageError with a short reason.

    `draft` lets the JPEG decoder scale down by DCT while decoding (never below that size),
    which makes large photos several times cheaper when models want ~513 px inputs.
    """
    return guarded(_decode, data, max_pixels, min_side, draft, timeout_s=timeout_s)


def _decode(data: bytes, max_pixels: int, min_side: int, draft: int | None) -> Image.Image:
    img = _open(data, max_pixels)
    w, h = img.size
    if min(w, h) < min_side:
        raise ImageError("image too small", f"{w}x{h}, smaller than min_side={min_side} pixels")
    return _pixels(img, draft)


def _pixels(img: Image.Image, draft: int | None) -> Image.Image:
    """An opened image's pixels as the RGB a viewer shows (drafted down for JPEG when asked)."""
    try:
        if draft and img.format == "JPEG" and img.mode in ("RGB", "L"):
            img.draft(img.mode, (draft, draft))
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("truncated or corrupt image data", str(exc)) from exc
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, TypeError):
        pass  # a broken EXIF block is not a reason to drop the pixels
    return _to_rgb(img)


def probe(
    data: bytes, *, max_pixels: int = 64_000_000, min_side: int = 8, timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S
) -> tuple[Image.Image, int, int]:
    """Full validation at ingest: (small RGB copy for hashing, displayed width, displayed height)."""
    return guarded(_probe, data, max_pixels, min_side, timeout_s=timeout_s)


def _probe(data: bytes, max_pixels: int, min_side: int) -> tuple[Image.Image, int, int]:
    img = _open(data, max_pixels)  # opened once: parsing a JPEG's header is Python, as costly as decoding a small one
    w, h = img.size
    if min(w, h) < min_side:
        raise ImageError("image too small", f"{w}x{h}, smaller than min_side={min_side} pixels")
    jpeg = img.format in ("JPEG", "MPO")
    # a drafted JPEG is smaller than displayed: its size comes from the header and EXIF (read
    # before decoding; reading a JPEG's EXIF decodes no pixels, a PNG's getexif() would decode them all)
    try:
        orientation = img.getexif().get(0x0112, 1) if jpeg else 1
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a reason to drop the pixels
        orientation = 1
    rgb = _pixels(img, 64)
    if not jpeg:
        return rgb, *rgb.size  # never drafted: the decoded image has the displayed size
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return rgb, w, h


def perceptual_hash(img: Image.Image) -> int:
    """imagehash.phash(img) as a 64-bit integer, bit for bit (the same grey 32x32 LANCZOS
    thumbnail, DCT, and comparison with the median of the 8x8 lowest frequencies), without
    its per-call Python overhead: at ingest it cost more than decoding a small JPEG."""
    pixels = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS))
    low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
    ranked = np.sort(low, axis=None)
    median = (ranked[31] + ranked[32]) / 2
    return int.from_bytes(np.packbits(low > median).tobytes(), "big")


def resize_uint8(img: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the default preprocessing resizes to a square model input."""
    return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def encode_map_png(label_map: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """A class-index map as a compressed 8-bit PNG, with optional text metadata."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label_map, dtype=np.uint8), "L").save(buf, "PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()


def decode_map_png(
    data: bytes, *, max_pixels: int = 64_000_000, timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S
) -> tuple[np.ndarray, dict[str, str]]:
    """A class-index PNG -> (uint8 map, text metadata), or ImageError. Palette PNGs keep their indices."""
    return guarded(_decode_map_png, data, max_pixels, timeout_s=timeout_s, what="map decode")


def _decode_map_png(data: bytes, max_pixels: int) -> tuple[np.ndarray, dict[str, str]]:
    img = _open(data, max_pixels, MAP_FORMATS)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("truncated or corrupt image data", str(exc)) from exc
    if img.mode not in ("L", "P", "I", "I;16"):
        raise ImageError("not a class-index map", f"PNG mode {img.mode}; expected a single-channel map")
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        if arr.max() > 255:
            raise ImageError("not a class-index map", f"values up to {int(arr.max())}")
        arr = arr.astype(np.uint8)
    return arr, dict(getattr(img, "text", {}) or {})


def resize_nearest(label_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class map (pairs are computed at the target's size)."""
    if label_map.shape == shape:
        return label_map
    return np.asarray(Image.fromarray(label_map, "L").resize((shape[1], shape[0]), Image.NEAREST))

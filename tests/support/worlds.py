"""Test data: small image corpora, configs and a colour-reading network.

ColourNet predicts the class of a pixel from its colour alone (background for dark pixels,
else the strongest of R/G/B), so what a model sees can be checked exactly: two images that
decode to the same pixels get the same map.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from madmine.steps.score.map_store import MapStore, StoredMap
from madmine.steps.score.shards import shards_of

CLASSES = ["background", "red", "green", "blue"]
# a slow target (0.15 s an image: runs long enough to interrupt) and a tiny competitor
SLOW_MODELS = """
[[models]]
name = "target"
role = "target"
factory = "worlds:slow_colour_net"
input_size = 32

[[models]]
name = "tiny"
role = "competitor"
factory = "madmine.models.tiny:tiny_segnet"
input_size = 32
"""


class ColourNet(nn.Module):
    def __init__(self, num_classes: int = 4, delay: float = 0.0):
        super().__init__()
        self.delay = delay
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        if self.delay:
            time.sleep(self.delay * x.shape[0])
        # undo ImageNet normalisation approximately: scale is irrelevant for argmax per pixel
        dark = (x.mean(dim=1, keepdim=True) < -1.2).float() * 100.0
        logits = torch.cat([dark, x], dim=1)
        return {"out": logits + self.dummy}


def colour_net(num_classes: int) -> nn.Module:
    return ColourNet(num_classes)


def slow_colour_net(num_classes: int) -> nn.Module:
    """ColourNet that takes 0.15 s per image: long enough runs to interrupt."""
    return ColourNet(num_classes, delay=0.15)


class ConfusedColourNet(nn.Module):
    """A trainable target that reads colours as ColourNet does but takes green for blue: one
    1x1 convolution over the normalised pixel, so it fails on every green region and can learn."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, :, 0, 0] = -1.0  # background: dark in every channel
            self.conv.bias[0] = -3.0
            self.conv.weight[1, 0, 0, 0] = 1.0  # red
            self.conv.weight[2, 1, 0, 0] = 0.5  # green, too weak ...
            self.conv.weight[3, 1, 0, 0] = 1.5  # ... against blue, which green pixels also raise
            self.conv.weight[3, 2, 0, 0] = 1.0

    def forward(self, x):
        return {"out": self.conv(x)}


def confused_colour_net(num_classes: int) -> nn.Module:
    return ConfusedColourNet(num_classes)


def blob_image(rng: np.random.Generator, h: int = 48, w: int = 64) -> np.ndarray:
    """Dark background with a few saturated rectangles of red, green or blue."""
    img = np.full((h, w, 3), 10, dtype=np.uint8)
    palette = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230]], dtype=np.uint8)
    for _ in range(rng.integers(1, 4)):
        y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        y1, x1 = y0 + rng.integers(6, h // 2 + 6), x0 + rng.integers(6, w // 2 + 6)
        img[y0:y1, x0:x1] = palette[rng.integers(0, 3)]
    return img


def write_corpus(folder: Path, n: int, seed: int = 0, fmt: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{seed}_{i:04d}.{fmt}"
        Image.fromarray(blob_image(rng, 40 + (i % 5) * 4, 56)).save(path)
        paths.append(path)
    return paths


def write_config(folder: Path, models: str, workspace: str = "work/", scoring: str = "", extra: str = "") -> Path:
    text = textwrap.dedent(
        f"""
        [workspace]
        uri = "{workspace}"

        [classes]
        names = {CLASSES!r}
        """
    ).replace("'", '"')
    text += textwrap.dedent(models)
    text += "\n[scoring]\n" + textwrap.dedent(scoring) + "\n" + textwrap.dedent(extra)
    path = folder / "madmine.toml"
    path.write_text(text)
    return path


# ---- odd and broken files ---------------------------------------------------------------
def _png_with_declared_size(width: int, height: int) -> bytes:
    """A PNG whose header declares a huge size (a decompression bomb) with a valid CRC."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def odd_images(folder: Path, seed: int = 7) -> dict[str, tuple[Path, np.ndarray]]:
    """Valid files in odd modes -> (path, the RGB pixels a viewer shows).

    Lossless formats are used wherever the mode allows, so the expected pixels are exact.
    """
    import io

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = blob_image(rng, 40, 56)
    out: dict[str, tuple[Path, np.ndarray]] = {}

    gray = base.mean(axis=2).astype(np.uint8)
    p = folder / "gray.png"
    Image.fromarray(gray, "L").save(p)
    out["gray"] = (p, np.repeat(gray[..., None], 3, axis=2))

    gray16 = gray.astype(np.uint16) * 257  # 8-bit values stretched to 16 bits exactly
    p = folder / "gray16.png"
    Image.fromarray(gray16).save(p)
    out["gray16"] = (p, np.repeat(gray[..., None], 3, axis=2))

    p = folder / "palette.png"
    pal = Image.fromarray(base).convert("P", palette=Image.ADAPTIVE, colors=8)
    pal.save(p)
    out["palette"] = (p, np.asarray(pal.convert("RGB")))

    rgba = np.dstack([base, np.full(base.shape[:2], 255, np.uint8)])
    p = folder / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p)
    out["rgba"] = (p, base)

    p = folder / "cmyk.jpg"
    Image.fromarray(base).convert("CMYK").save(p, quality=100)
    out["cmyk"] = (p, np.asarray(Image.open(p).convert("RGB")))

    # stored rotated 90 degrees counter-clockwise; EXIF orientation 6 says "rotate clockwise"
    stored = Image.fromarray(base).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "PNG", exif=exif.tobytes())
    p = folder / "exif_rotated.png"
    p.write_bytes(buf.getvalue())
    out["exif_rotated"] = (p, base)
    return out


def bad_files(folder: Path, seed: int = 9) -> dict[str, tuple[Path, str]]:
    """Broken files -> (path, the error reason madmine must record)."""
    import io

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[Path, str]] = {}

    p = folder / "zero.jpg"
    p.write_bytes(b"")
    out["zero-byte"] = (p, "empty file")

    buf = io.BytesIO()
    noise = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    p = folder / "truncated.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out["truncated"] = (p, "truncated or corrupt image data")

    p = folder / "text.jpg"
    p.write_bytes(b"this is not an image, just some text bytes\n" * 20)
    out["text"] = (p, "not an image")

    p = folder / "bomb.png"
    p.write_bytes(_png_with_declared_size(60000, 60000))
    out["bomb"] = (p, "decompression bomb")

    p = folder / "one_pixel.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(p)
    out["1x1"] = (p, "image too small")
    return out


def true_mask(rgb: np.ndarray) -> np.ndarray:
    """The exact label of a blob image: dark pixels are background, else the strongest channel."""
    mask = (rgb.argmax(axis=2) + 1).astype(np.uint8)
    mask[rgb.max(axis=2) <= 60] = 0
    return mask


def write_labelled(folder: Path, n: int, seed: int) -> tuple[Path, Path]:
    """images/ and labels/ (PNG class maps, same stems): an S(0) or T(0)-like labelled set."""
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        rgb = blob_image(rng, 40, 48)
        Image.fromarray(rgb).save(images / f"l{seed}_{i:03d}.png")
        Image.fromarray(true_mask(rgb), "L").save(labels / f"l{seed}_{i:03d}.png")
    return images, labels


def write_maps(folder, paths, seed=0):
    """Precomputed competitor maps at their own (other) resolution, some pixels ignored."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for p in paths:
        m = rng.integers(0, 4, size=(24, 36)).astype(np.uint8)
        m[rng.random(m.shape) < 0.05] = 255
        Image.fromarray(m, "L").save(folder / f"{p.stem}.png")


# ---- the map store, as scoring would fill it ------------------------------------------------
def store_maps(ws, model: str, version: str, maps: dict, shard_size: int = 1024) -> None:
    """Maps into the map store the way scoring keeps them: one pack per shard of the manifest
    (write the manifest first); images outside the manifest go to a pack of their own."""
    where = shards_of(ws, list(maps), shard_size)
    packs: dict[str, dict] = {}
    for image_id, label_map in maps.items():
        packs.setdefault(where.get(image_id, "extra"), {})[image_id] = StoredMap(np.asarray(label_map, dtype=np.uint8))
    store = MapStore(ws)
    for pack, entries in packs.items():
        store.add(model, version, pack, entries)


def stored_map(ws, model: str, version: str, image_id: str):
    """The stored map of an image (uint8 array), wherever its pack is; None when none holds it."""
    found = MapStore(ws).find(model, version, [image_id], max_packs=10_000)
    return found[image_id].map if image_id in found else None


def drop_map(ws, model: str, version: str, image_id: str) -> None:
    """Remove one image's map from the pack that holds it (a map lost from the store)."""
    store = MapStore(ws)
    for pack in store.packs(model, version):
        entries = store.read_pack(model, version, pack) or {}
        if entries.pop(image_id, None) is not None:
            store.write_pack(model, version, pack, entries)


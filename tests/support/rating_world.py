"""A small, real workspace for the rating and annotation tests: images on disk, a manifest,
a complete scoring-run record, cached prediction maps of the target and a competitor, and a
round's candidates table, all written through madmine's own Workspace."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from madmine import tables
from madmine.config import Config, load_config
from madmine.tables import MANIFEST as MANIFEST_TABLE
from madmine.workspace import Workspace
from worlds import store_maps

CLASSES = ["background", "aeroplane", "bicycle", "bird"]
TARGET, TARGET_VERSION = "target", "t-v1"
COMPETITOR, COMPETITOR_VERSION = "fcn", "c-v0"


@dataclass
class World:
    root: Path
    config_path: Path
    config: Config
    ws: Workspace
    image_ids: list[str]
    sizes: dict[str, tuple[int, int]]  # image_id -> (height, width) as displayed
    target_maps: dict[str, np.ndarray]


def _image(k: int, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(k)
    base = np.zeros((height, width, 3), dtype=np.uint8)
    base[..., 0] = np.linspace(40, 220, width, dtype=np.uint8)[None, :]
    base[..., 1] = (60 + 25 * k) % 255
    base[..., 2] = np.linspace(200, 30, height, dtype=np.uint8)[:, None]
    y0, x0 = height // 4, width // 5 + k
    base[y0 : y0 + height // 2, x0 : x0 + width // 3] = rng.integers(0, 255, 3, dtype=np.uint8)
    return Image.fromarray(base, "RGB")


def _scene(k: int, width: int, height: int, shift: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A readable picture for screenshots: sky, ground, a plane and a bird, and a map of them."""
    from PIL import ImageDraw

    sky = np.linspace([90, 150, 230], [200, 225, 250], height).astype(np.uint8)
    pixels = np.repeat(sky[:, None, :], width, axis=1)
    pixels[int(height * 0.72) :] = (95, 140, 70)
    img = Image.fromarray(pixels, "RGB")
    labels = Image.new("L", (width, height), 0)
    cx, cy = width * (0.35 + 0.04 * k), height * 0.38
    plane = [(cx - 110, cy), (cx + 100, cy - 14), (cx + 125, cy), (cx + 100, cy + 14)]
    wing = [(cx - 10, cy), (cx + 30, cy - 70), (cx + 50, cy - 70), (cx + 35, cy), (cx + 50, cy + 70), (cx + 30, cy + 70)]
    bird = (width * 0.75, height * 0.6, width * 0.75 + 60, height * 0.6 + 34)
    draw, paint = ImageDraw.Draw(img), ImageDraw.Draw(labels)
    for shape in (plane, wing):
        draw.polygon(shape, fill=(235, 235, 240), outline=(60, 60, 70))
        paint.polygon([(x + shift, y + shift / 2) for x, y in shape], fill=1 if shift < 20 else 2)
    draw.ellipse(bird, fill=(120, 80, 40))
    paint.ellipse(tuple(v + shift for v in bird), fill=3)
    return img, np.asarray(labels, dtype=np.uint8)


def _map(k: int, height: int, width: int, shift: int) -> np.ndarray:
    m = np.zeros((height, width), dtype=np.uint8)
    y0, x0 = height // 4, width // 5 + k + shift
    m[y0 : y0 + height // 2, x0 : x0 + width // 3] = 1 + (k % 3)
    m[: height // 8, : width // 6] = 2
    m[-3:, -4:] = 255
    return m


def build(root: Path, n_images: int = 6, rotated: bool = True, extra_toml: str = "", large: bool = False,
          workspace_uri: str = "work/") -> World:
    """n_images images (the last an EXIF-rotated JPEG when `rotated`), all in round 0's candidates.

    `large` draws 480-pixel scenes (for screenshots) instead of small test patterns.
    """
    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "corpus"
    corpus.mkdir()
    for name in ("preds/target", "preds/fcn"):
        (root / name).mkdir(parents=True)
    config_path = root / "madmine.toml"
    config_path.write_text(
        f"""
[workspace]
uri = "{workspace_uri}"

[classes]
names = {json.dumps(CLASSES)}

[[models]]
name = "{TARGET}"
role = "target"
maps = "preds/target/"

[[models]]
name = "{COMPETITOR}"
role = "competitor"
maps = "preds/fcn/"

[selection]
n4 = 3
{extra_toml}
"""
    )
    config = load_config(config_path)
    ws = Workspace.from_config(config)
    ids, sizes, maps, manifest, candidates = [], {}, {}, [], []
    target_maps, competitor_maps = {}, {}
    now = datetime.now(UTC)
    for k in range(n_images):
        width, height = (480, 360) if large else (64 + 8 * k, 48 + 4 * k)
        img = _scene(k, width, height)[0] if large else _image(k, width, height)
        buf = io.BytesIO()
        if rotated and k == n_images - 1:
            exif = Image.Exif()
            exif[0x0112] = 6  # rotate 90 degrees clockwise on display
            img.save(buf, "JPEG", quality=95, exif=exif)
            width, height = height, width
        else:
            img.save(buf, "PNG")
        data = buf.getvalue()
        image_id = f"{k:02x}" + "ab" * 15
        path = corpus / f"img{k}.{'jpg' if rotated and k == n_images - 1 else 'png'}"
        path.write_bytes(data)
        target_map = _scene(k, width, height, 8)[1] if large else _map(k, height, width, 0)
        competitor_map = _scene(k, width, height, 24)[1] if large else _map(k, height, width, 3)
        target_maps[image_id], competitor_maps[image_id] = target_map, competitor_map
        ids.append(image_id)
        sizes[image_id] = (height, width)
        maps[image_id] = target_map
        manifest.append(
            {"image_id": image_id, "uri": str(path), "bytes": len(data), "width": width, "height": height,
             "phash": k, "ingested_at": now}
        )
        candidates.append(
            {"round": 0, "image_id": image_id, "uri": str(path), "competitor": COMPETITOR,
             "direction": "target", "class_id": 1 + (k % 3), "class_fraction": 0.1, "d": 0.5 - k / 100, "rank": k + 1}
        )
    ws.write_parquet(tables.MANIFEST.path(ws, part="part-0"), pa.Table.from_pylist(manifest, schema=MANIFEST_TABLE.schema))
    store_maps(ws, TARGET, TARGET_VERSION, target_maps)
    store_maps(ws, COMPETITOR, COMPETITOR_VERSION, competitor_maps)
    ws.write_parquet(tables.CANDIDATES.path(ws, round=0, strategy="mad"), pa.Table.from_pylist(candidates))
    ws.put_json(
        ws.path("runs", "run-1", "run.json"),
        {
            "run_id": "run-1",
            "status": "complete",
            "created_at": now.isoformat(),
            "models": [
                {"name": TARGET, "role": "target", "version": TARGET_VERSION},
                {"name": COMPETITOR, "role": "competitor", "version": COMPETITOR_VERSION},
            ],
        },
    )
    return World(root, config_path, config, ws, ids, sizes, maps)

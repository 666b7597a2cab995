"""CVAT / Pascal VOC: "Segmentation mask 1.1" — colour-coded PNGs under SegmentationClass/,
labelmap.txt naming each colour, ImageSets/Segmentation/default.txt listing the images.

Export writes that layout (and annotations.zip of it, to upload as the task's annotations)
next to images/; import reads CVAT's export of the same format, as a folder or a .zip.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track

from madmine.config import Config
from madmine.metrics import IGNORE
from madmine.steps.annotation import IGNORE_COLOR, ignore_name
from madmine.steps.annotation.bundle import AnnotationError, ExportItem, read_bytes
from madmine.steps.annotation.collect import Collector
from madmine.untrusted import DEFAULT_MAX_BYTES, ImageError, guarded

LABELMAP = "labelmap.txt"
CLASS_DIR = "SegmentationClass"
LIST = "ImageSets/Segmentation/default.txt"


def palette(cfg: Config) -> list[tuple[str, tuple[int, int, int], int]]:
    """(label name, colour, class id) for every label of the export, the ignore label last."""
    entries = [(name, tuple(cfg.colors[k]), k) for k, name in enumerate(cfg.classes)]
    used = {c for _, c, _ in entries}
    color = IGNORE_COLOR
    while color in used:
        color = (color[0], color[1], (color[2] + 1) % 256)
    return entries + [(ignore_name(cfg.classes), color, IGNORE)]


def labelmap_text(cfg: Config) -> str:
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{r},{g},{b}::" for name, (r, g, b), _ in palette(cfg)]
    return "\n".join(lines) + "\n"


def colorize(mask: np.ndarray, cfg: Config) -> bytes:
    lut = np.zeros((256, 3), dtype=np.uint8)
    for _, color, class_id in palette(cfg):
        lut[class_id] = color
    buf = io.BytesIO()
    Image.fromarray(lut[mask], "RGB").save(buf, "PNG")
    return buf.getvalue()


def export(items: list[ExportItem], meta: dict, out: Path, cfg: Config) -> list[Path]:
    files = {LABELMAP: labelmap_text(cfg).encode(), LIST: "".join(f"{Path(i.file).stem}\n" for i in items).encode()}
    for item in track(items, description="colour masks"):
        if item.mask is not None:  # a blank mask has no file: nothing drawn yet
            files[f"{CLASS_DIR}/{Path(item.file).stem}.png"] = colorize(item.mask, cfg)
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    with zipfile.ZipFile(out / "annotations.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return [out / LABELMAP, out / CLASS_DIR, out / "annotations.zip"]


class _Source:
    """A CVAT export as a folder or a zip, read the same way, every file through the
    untrusted-bytes boundary (a regular file, or a zip member, of at most max_bytes)."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        try:
            self.zip = zipfile.ZipFile(path) if path.is_file() else None
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise AnnotationError(f"{path}: not a zip file ({exc}); pass CVAT's export as a .zip or a folder") from None
        self.root = path
        names = self.zip.namelist() if self.zip else [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        labelmaps = sorted((n for n in names if n.rsplit("/", 1)[-1] == LABELMAP), key=len)
        if not labelmaps:
            raise AnnotationError(f"{path}: no {LABELMAP}; export the CVAT task as 'Segmentation mask 1.1'")
        self.prefix = labelmaps[0][: -len(LABELMAP)]
        self.masks = sorted(n for n in names if n.startswith(self.prefix + CLASS_DIR + "/") and n.lower().endswith(".png"))

    def read(self, name: str) -> bytes:
        if not self.zip:
            return read_bytes(self.root / name, self.max_bytes)
        info = self.zip.getinfo(name)
        if info.file_size > self.max_bytes:
            raise AnnotationError(f"{self.root}/{name}: {info.file_size} bytes unpacked, over max_bytes={self.max_bytes}")
        try:
            with self.zip.open(info) as member:
                data = member.read(self.max_bytes + 1)  # the header's size is the sender's word: read no further
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise AnnotationError(f"{self.root}/{name}: unreadable zip member ({exc})") from None
        if len(data) > self.max_bytes:
            raise AnnotationError(f"{self.root}/{name}: over max_bytes={self.max_bytes} unpacked")
        return data


def _mask_rgb(data: bytes, height: int, width: int) -> np.ndarray | tuple[int, int]:
    """The mask's colours, or its declared (height, width) when that is not the image's: a
    mask of the wrong size is never decoded."""
    img = Image.open(io.BytesIO(data), formats=("PNG",))
    if img.size != (width, height):
        return img.height, img.width
    return np.asarray(img.convert("RGB"), dtype=np.int64)


def _labelmap(text: str, collector: Collector, where: str) -> dict[int, int]:
    """packed RGB -> class id."""
    colors: dict[int, int] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        rgb = rest.split(":", 1)[0]
        try:
            r, g, b = (int(v) for v in rgb.split(","))
        except ValueError:
            collector.problem(f"{where}: cannot read the colour of label {name!r} ({line!r})")
            continue
        class_id = 0 if name == "background" and "background" not in collector.classes else collector.class_id(name, where)
        if class_id is not None:
            colors[(r << 16) | (g << 8) | b] = class_id
    return colors


def read(path: Path, collector: Collector) -> int:
    source = _Source(path)
    text = source.read(source.prefix + LABELMAP).decode("utf-8", errors="replace")
    colors = _labelmap(text, collector, f"{path.name}/{LABELMAP}")
    keys = np.array(sorted(colors), dtype=np.int64)
    values = np.array([colors[k] for k in sorted(colors)], dtype=np.uint8)
    for name in track(source.masks, description="read masks"):
        where = f"{path.name}/{name}"
        image_id = collector.image_id(name, where)
        if image_id is None:
            continue
        try:
            rgb = guarded(_mask_rgb, source.read(name), *collector.size(image_id), what="mask decode")
        except ImageError as exc:
            collector.problem(f"{where}: not a readable PNG mask ({exc})")
            continue
        if isinstance(rgb, tuple):
            collector.check_size(image_id, *rgb, where)
            continue
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        index = np.clip(np.searchsorted(keys, packed), 0, max(len(keys) - 1, 0))
        known = keys.size > 0 and bool((keys[index] == packed).all())
        if not known:
            bad = np.unique(packed[keys[index] != packed] if keys.size else packed)[:5]
            shown = [f"({v >> 16},{(v >> 8) & 255},{v & 255})" for v in bad.tolist()]
            collector.problem(f"{where}: colours {', '.join(shown)} are not in {LABELMAP}")
            continue
        collector.add(image_id, values[index], where)
    return 0

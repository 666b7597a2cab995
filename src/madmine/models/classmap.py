"""Label-set mapping: a model that predicts its own classes, mapped to the config's.

A model trained on another label set (ADE20K's 150 classes, COCO panoptic's 133,
Cityscapes' 19...) names in `class_map` which config class each of its classes counts as,
or that it is ignored (255). The map is a lookup table from the model's class ids to config
ids: scoring applies it to the model's argmax before anything is counted, so every table,
pack and metric holds config class ids only.

Three ways to write it (docs/models.md):

- a shipped map by name: `class_map = "ade20k-voc"` (src/madmine/models/class_maps/*.csv);
- a CSV file (local or s3://): a header `id,name,class`, one row per model class, ids
  0..K-1; `class` is a config class name, or `ignore` (also `255` or empty); lines that start
  with `#` are comments. The CSV lists every class of the model: its row count must equal the
  model's output channels;
- an inline table: `class_map = { "12" = "person", "wall" = "background", "*" = "ignore" }`.
  Keys are model class ids, or model class names where the model names its classes (a Hugging
  Face checkpoint's id2label); `"*"` is the default for every class not listed (ignore unless
  given).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from madmine.config import is_builtin_class_map
from madmine.errors import ConfigError

IGNORE = 255
IGNORE_WORDS = ("ignore", "255", "")
BUILTIN_DIR = Path(__file__).resolve().parent / "class_maps"
DEFAULT_KEY = "*"
MAX_MODEL_CLASSES = 65_536


class ClassMapError(ConfigError):
    """A class map is malformed, names an unknown class, or does not fit its model."""


def builtin_maps() -> list[str]:
    """Names of the maps shipped with madmine (`class_map = "<name>"`)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.csv"))


def _did_you_mean(value: str, choices) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class ClassMap:
    """A model's classes -> config class ids (255: ignore).

    `entries` keys are model class ids (as digit strings) or model class names; `size` is the
    model's class count where the map lists every class (a CSV), else None.
    """

    source: str
    entries: tuple[tuple[str, int], ...]
    default: int = IGNORE
    size: int | None = None
    names: tuple[str, ...] | None = None  # the model's class names, where the CSV gives them
    classes: tuple[str, ...] = ()  # the config's class names the ids refer to

    # ---- identity ------------------------------------------------------------------------
    def digest(self) -> str:
        """A hash of what the map does (not of how it is written): part of the model's version."""
        payload = {"entries": sorted(self.entries), "default": self.default, "size": self.size, "classes": list(self.classes)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]

    # ---- the lookup table ----------------------------------------------------------------
    def lut(self, num_outputs: int, labels: Sequence[str] | None = None) -> np.ndarray:
        """uint8 table of length num_outputs: model class id -> config id or 255.

        `labels` are the model's own class names (id order), for keys given by name.
        Raises ClassMapError when the map does not fit a model with num_outputs classes.
        """
        where = f"class_map {self.source}"
        if self.size is not None and self.size != num_outputs:
            raise ClassMapError(
                f"the model predicts {num_outputs} classes but its {where} lists {self.size}; "
                "a class map must list every class of its model (ids 0..K-1)"
            )
        table = np.full(num_outputs, self.default, dtype=np.uint8)
        by_name = {str(n): i for i, n in enumerate(labels)} if labels else {}
        for key, value in self.entries:
            if key.isdigit():
                index = int(key)
                if index >= num_outputs:
                    raise ClassMapError(
                        f"{where} maps model class {index}, but the model predicts only {num_outputs} classes (0..{num_outputs - 1})"
                    )
            elif not labels:
                raise ClassMapError(
                    f"{where} names model class {key!r}, but this model does not name its classes; use class ids (\"12\" = ...)"
                )
            elif key not in by_name:
                raise ClassMapError(
                    f"{where} names model class {key!r}, which the model does not have{_did_you_mean(key, by_name)}"
                )
            else:
                index = by_name[key]
            table[index] = value
        return table

    def coverage(self, lut: np.ndarray) -> tuple[list[str], list[str]]:
        """(config classes the mapped model can predict, config classes it never predicts)."""
        reached = {int(v) for v in np.unique(lut)} - {IGNORE}
        return (
            [c for i, c in enumerate(self.classes) if i in reached],
            [c for i, c in enumerate(self.classes) if i not in reached],
        )


# ---- parsing ---------------------------------------------------------------------------
def _target(value, classes: Sequence[str], where: str) -> int:
    """A config class name (or ignore) -> its id (or 255)."""
    if isinstance(value, bool):
        raise ClassMapError(f"{where}: {str(value).lower()} is not a class name")
    if isinstance(value, int):
        if value == IGNORE:
            return IGNORE
        raise ClassMapError(f"{where}: map to a config class name or \"ignore\", got {value}")
    text = str(value).strip()
    if text.lower() in IGNORE_WORDS:
        return IGNORE
    if text not in classes:
        raise ClassMapError(
            f"{where}: {text!r} is not a config class{_did_you_mean(text, classes)}; [classes] names are "
            f"{', '.join(classes)} (or \"ignore\")"
        )
    return list(classes).index(text)


def from_table(table: Mapping | Sequence, classes: Sequence[str], source: str = "(inline)") -> ClassMap:
    """An inline table: {model class id or name: config class name or "ignore"}; "*" the default."""
    items = list(table.items()) if isinstance(table, Mapping) else [tuple(pair) for pair in table]
    entries, default, seen = [], IGNORE, set()
    for key, value in items:
        key = str(key).strip()
        where = f"class_map {source} entry {key!r}"
        if not key:
            raise ClassMapError(f"class_map {source}: an empty key; keys are model class ids or names")
        if key in seen:
            raise ClassMapError(f"class_map {source} lists model class {key!r} twice")
        seen.add(key)
        if key == DEFAULT_KEY:
            default = _target(value, classes, where)
            continue
        if key.isdigit() and int(key) >= MAX_MODEL_CLASSES:
            raise ClassMapError(f"{where}: model class ids must be < {MAX_MODEL_CLASSES}")
        entries.append((str(int(key)) if key.isdigit() else key, _target(value, classes, where)))
    if not entries and default == IGNORE:
        raise ClassMapError(f"class_map {source} maps nothing: every pixel would be ignored")
    return ClassMap(source, tuple(entries), default, None, None, tuple(classes))


def from_csv(text: str, classes: Sequence[str], source: str) -> ClassMap:
    """A CSV with a header `id,name,class` (name optional), one row per model class, ids 0..K-1."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ClassMapError(f"class_map {source} is empty; write a header `id,name,class` and one row per model class")
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    reader.fieldnames = header
    if "id" not in header or "class" not in header:
        raise ClassMapError(f"class_map {source}: the header must name the columns id and class (and optionally name), got {header}")
    rows: dict[int, tuple[str, int]] = {}
    for n, row in enumerate(reader, start=2):
        where = f"class_map {source} line {n}"
        raw_id = (row.get("id") or "").strip()
        if not raw_id.isdigit():
            raise ClassMapError(f"{where}: id must be a model class id (0, 1, ...), got {raw_id!r}")
        index = int(raw_id)
        if index in rows:
            raise ClassMapError(f"{where}: model class {index} is listed twice")
        if index >= MAX_MODEL_CLASSES:
            raise ClassMapError(f"{where}: model class ids must be < {MAX_MODEL_CLASSES}")
        rows[index] = ((row.get("name") or "").strip(), _target(row.get("class") or "", classes, where))
    missing = sorted(set(range(len(rows))) - set(rows))
    if missing:
        raise ClassMapError(
            f"class_map {source} must list every model class 0..{len(rows) - 1} once; missing {missing[:10]}"
        )
    names = tuple(rows[i][0] for i in range(len(rows)))
    entries = tuple((str(i), rows[i][1]) for i in range(len(rows)))
    return ClassMap(source, entries, IGNORE, len(rows), names if any(names) else None, tuple(classes))


def builtin_path(name: str) -> Path:
    path = BUILTIN_DIR / f"{name}.csv"
    if not path.is_file():
        raise ClassMapError(
            f"class_map {name!r} is not a shipped map{_did_you_mean(name, builtin_maps())}; shipped maps are "
            f"{', '.join(builtin_maps())}, or give the path of a CSV file"
        )
    return path


def _csv_text(value: str, storage_options: dict | None) -> str:
    if is_builtin_class_map(value):
        return builtin_path(value).read_text(encoding="utf-8")
    from madmine.workspace import filesystem, split_uri

    try:
        data = filesystem(value, storage_options).cat_file(split_uri(value)[1])
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ClassMapError(f"class_map file {value!r} not found") from exc
    except OSError as exc:
        raise ClassMapError(f"class_map file {value!r} cannot be read: {exc}") from exc
    if len(data) > 1 << 20:
        raise ClassMapError(f"class_map file {value!r} is {len(data)} bytes; a class map is a few kilobytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ClassMapError(f"class_map file {value!r} is not UTF-8 text") from exc


def load_class_map(value, classes: Sequence[str], storage_options: dict | None = None) -> ClassMap:
    """A config's class_map value (shipped name, CSV path or URI, or inline table) -> ClassMap."""
    if isinstance(value, (Mapping, list, tuple)):
        return from_table(value, classes)
    value = str(value)
    source = repr(value) if is_builtin_class_map(value) else repr(os.path.basename(value.rstrip("/")) or value)
    return from_csv(_csv_text(value, storage_options), classes, source)


def csv_size(value: str, storage_options: dict | None = None) -> int | None:
    """How many model classes a CSV class map lists (its data rows), without checking its class names."""
    rows = [line for line in _csv_text(value, storage_options).splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return max(len(rows) - 1, 0) or None

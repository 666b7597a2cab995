"""Typed configuration (madmine.toml), validated up front.

Every problem is reported before any work starts, with the key that is wrong and what to
write instead: a scoring job that fails after an hour because of a typo is the worst kind
of failure for a batch tool.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madmine.errors import MadmineError

SEGMENTATION_ARCHS = (
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet101",
    "deeplabv3_resnet50",
    "fcn_resnet101",
    "fcn_resnet50",
    "lraspp_mobilenet_v3_large",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ROLES = ("target", "competitor")


class ConfigError(MadmineError):
    """A configuration value is missing, unknown or invalid."""


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model: exactly one of arch, factory or maps."""

    name: str
    role: str
    arch: str | None = None
    factory: str | None = None
    maps: str | None = None
    weights: str | None = None
    input_size: int = 513
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    classes: int | None = None
    version: str | None = None
    seed: int = 0

    @property
    def kind(self) -> str:
        return "arch" if self.arch else "factory" if self.factory else "maps"

    @property
    def is_network(self) -> bool:
        return self.kind != "maps"


@dataclass(frozen=True)
class ScoringConfig:
    """How `madmine score` runs: pool size, devices, batches, layout, error budget."""

    batch_size: int = 4
    actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    torch_threads: int = 0  # 0: every core of the node
    device: str = "auto"  # auto | cpu | cuda
    channels_last: bool = True
    bf16: bool = False
    shard_size: int = 256
    decode_batch_size: int = 8
    max_error_fraction: float = 0.05
    cache_maps: bool = True
    max_pixels: int = 64_000_000
    min_side: int = 8


@dataclass(frozen=True)
class SelectionConfig:
    """Selection budgets (ARCHITECTURE §1 steps 2 and 4)."""

    n3: int = 25
    n4: int = 100
    quantiles: tuple[float, float] = (0.25, 0.75)
    phash_distance: int = 0
    seed: int = 0


@dataclass(frozen=True)
class RatingConfig:
    """Weak labelling (ARCHITECTURE §1 steps 3-4): who must rate, what a human second costs, where the app listens."""

    min_raters: int = 1
    seconds_per_rating: float = 7.0
    seconds_per_mask: float = 135.0
    idle_gap_s: float = 120.0
    host: str = "127.0.0.1"
    port: int = 8765
    public_url: str = ""
    display_max_side: int = 1024


@dataclass(frozen=True)
class EvaluateConfig:
    """Measuring progress (ARCHITECTURE §1 step 6): test-set rules, competition and quality budgets."""

    testset_size: int = 30
    per_class: int = 4
    seed: int = 0
    compete_n: int = 30
    tau: float = 0.5
    top_n: int = 10
    gallery: int = 12


@dataclass(frozen=True)
class NightlyConfig:
    """`madmine nightly`: what to ingest, which round to refresh, when a lock is stale."""

    sources: tuple[str, ...] = ()
    round: int = -1  # -1: the newest round that has candidates (0 when there is none)
    stale_after_s: float = 1800.0
    report: bool = True


@dataclass(frozen=True)
class FinetuneConfig:
    """`madmine finetune` (ARCHITECTURE §1 step 5): the paper's schedule by default, data folders, Ray resources.

    S(0) and T(0) are folders (or s3:// prefixes) of images and label PNGs matched by file
    stem; see docs/finetune.md.
    """

    s0_images: str = ""
    s0_labels: str = ""
    t0_images: str = ""
    t0_labels: str = ""
    lr_grid: tuple[float, ...] = (1e-5, 5e-5, 1e-4)
    epochs: int = 80
    batch_size: int = 2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    crop_size: int = 0  # 0: the target's input_size
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    mixing: str = "alternate"  # alternate: a batch of S and a batch of S(0) per step; union: one shuffled pool
    freeze_bn: bool = True
    start_from: str = "latest"  # latest: the newest target version of an earlier round; original: the config's
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    concurrent_trials: int = 1
    loader_workers: int = 2
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    val_every: int = 1
    max_failures: int = 3
    seed: int = 0


@dataclass(frozen=True)
class Config:
    path: Path | None
    workspace_uri: str
    storage_options: dict = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    models: tuple[ModelSpec, ...] = ()
    scoring: ScoringConfig = ScoringConfig()
    selection: SelectionConfig = SelectionConfig()
    raw: dict = field(default_factory=dict)
    rating: RatingConfig = RatingConfig()
    nightly: NightlyConfig = NightlyConfig()
    colors: tuple[tuple[int, int, int], ...] = ()
    evaluate: EvaluateConfig = EvaluateConfig()
    finetune: FinetuneConfig = FinetuneConfig()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def target(self) -> ModelSpec:
        return next(m for m in self.models if m.role == "target")

    @property
    def competitors(self) -> tuple[ModelSpec, ...]:
        return tuple(m for m in self.models if m.role == "competitor")

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(f"no model named {name!r}; models are {[m.name for m in self.models]}")

    def fingerprint(self) -> str:
        """A short hash of what determines scores (classes and models), for run ids."""
        payload = {"classes": self.classes, "models": [dataclasses.asdict(m) for m in self.models]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


_TOP_KEYS = {
    "workspace", "classes", "models", "scoring", "selection", "storage", "rating", "evaluate", "nightly", "finetune"
}
_WORKSPACE_KEYS = {"uri"}
_CLASSES_KEYS = {"names", "colors"}
_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelSpec)}
_STORAGE_KEYS = {"endpoint_url", "key", "secret", "anon", "region"}


def _unknown(keys, allowed, where: str) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; allowed keys: {', '.join(sorted(allowed))}")


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _resolve(base: Path, value: str) -> str:
    """Relative local paths in the file are relative to the file, not the shell."""
    if _is_remote(value) or os.path.isabs(value):
        return value
    return str((base / value).resolve()) + ("/" if value.endswith("/") else "")


def _typed_section(cls, data: dict, where: str):
    _unknown(data, {f.name for f in dataclasses.fields(cls)}, where)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        default = getattr(cls(), f.name)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{f.name} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}.{f.name} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise ConfigError(f"{where}.{f.name} must be a whole number, got {value!r}")
        elif isinstance(default, tuple):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _check_scoring(s: ScoringConfig) -> None:
    positive = ("batch_size", "actors", "shard_size", "decode_batch_size", "max_pixels", "min_side")
    for key in positive:
        if getattr(s, key) <= 0:
            raise ConfigError(f"[scoring] {key} must be > 0, got {getattr(s, key)}")
    if s.num_gpus_per_actor < 0 or s.num_cpus_per_actor < 0 or s.torch_threads < 0:
        raise ConfigError("[scoring] num_gpus_per_actor, num_cpus_per_actor and torch_threads must be >= 0")
    if s.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"[scoring] device must be 'auto', 'cpu' or 'cuda', got {s.device!r}")
    if not 0.0 <= s.max_error_fraction <= 1.0:
        raise ConfigError(f"[scoring] max_error_fraction must be within [0, 1], got {s.max_error_fraction}")


def _check_selection(s: SelectionConfig) -> None:
    if s.n3 <= 0:
        raise ConfigError(f"[selection] n3 must be > 0, got {s.n3}")
    if s.n4 <= 0:
        raise ConfigError(f"[selection] n4 must be > 0, got {s.n4}")
    if len(s.quantiles) != 2 or not (0.0 <= s.quantiles[0] <= s.quantiles[1] <= 1.0):
        raise ConfigError(f"[selection] quantiles must be two numbers 0 <= p <= q <= 1, got {list(s.quantiles)}")
    if not 0 <= s.phash_distance <= 16:
        raise ConfigError(
            f"[selection] phash_distance must be within [0, 16] bits, got {s.phash_distance}: "
            "beyond that, unrelated images count as duplicates (0 = identical hashes only)"
        )


def _check_rating(r: RatingConfig) -> None:
    if r.min_raters < 1:
        raise ConfigError(f"[rating] min_raters must be >= 1, got {r.min_raters}")
    for key in ("seconds_per_rating", "seconds_per_mask", "idle_gap_s"):
        if getattr(r, key) <= 0:
            raise ConfigError(f"[rating] {key} must be > 0 seconds, got {getattr(r, key)}")
    if not isinstance(r.host, str) or not r.host:
        raise ConfigError(f'[rating] host must be an address such as "127.0.0.1", got {r.host!r}')
    if not 0 <= r.port <= 65535:
        raise ConfigError(f"[rating] port must be within [0, 65535], got {r.port}")
    if not isinstance(r.public_url, str):
        raise ConfigError(f'[rating] public_url must be a URL such as "https://rate.example.org", got {r.public_url!r}')
    if not 64 <= r.display_max_side <= 8192:
        raise ConfigError(f"[rating] display_max_side must be within [64, 8192], got {r.display_max_side}")


def _check_evaluate(e: EvaluateConfig) -> None:
    for key in ("testset_size", "per_class", "compete_n", "top_n", "gallery"):
        if getattr(e, key) <= 0:
            raise ConfigError(f"[evaluate] {key} must be > 0, got {getattr(e, key)}")
    if not 0.0 < e.tau <= 1.0:
        raise ConfigError(f"[evaluate] tau (the IoU below which a prediction is a failure) must be within (0, 1], got {e.tau}")


FINETUNE_FOLDERS = ("s0_images", "s0_labels", "t0_images", "t0_labels")


def _check_finetune(f: FinetuneConfig, base: Path) -> FinetuneConfig:
    """Validate [finetune] and resolve its folders relative to the config file."""
    grid = f.lr_grid
    if not grid or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in grid):
        raise ConfigError(f"[finetune] lr_grid must list learning rates > 0, e.g. [1e-5, 5e-5, 1e-4]; got {list(grid)}")
    if len(set(grid)) != len(grid):
        raise ConfigError(f"[finetune] lr_grid repeats a learning rate: {list(grid)}")
    positive = ("epochs", "batch_size", "num_workers", "concurrent_trials", "checkpoint_every", "keep_checkpoints")
    for key in (*positive, "val_every"):
        if getattr(f, key) < 1:
            raise ConfigError(f"[finetune] {key} must be >= 1, got {getattr(f, key)}")
    if not 0.0 <= f.momentum < 1.0:
        raise ConfigError(f"[finetune] momentum must be within [0, 1), got {f.momentum}")
    if f.weight_decay < 0 or f.poly_power < 0 or f.cpus_per_worker <= 0 or f.loader_workers < 0:
        raise ConfigError("[finetune] weight_decay, poly_power and loader_workers must be >= 0, cpus_per_worker > 0")
    if f.max_failures < -1:
        raise ConfigError(f"[finetune] max_failures must be >= 0 (or -1: retry forever), got {f.max_failures}")
    if f.crop_size != 0 and not 8 <= f.crop_size <= 4096:
        raise ConfigError(f"[finetune] crop_size must be 0 (the target's input_size) or within [8, 4096], got {f.crop_size}")
    scales = f.scale_range
    if len(scales) != 2 or not all(isinstance(v, (int, float)) for v in scales) or not 0 < scales[0] <= scales[1] <= 8:
        raise ConfigError(f"[finetune] scale_range must be two numbers 0 < low <= high <= 8 such as [0.5, 2.0], got {scales}")
    if f.mixing not in ("alternate", "union"):
        raise ConfigError(
            f"[finetune] mixing must be 'alternate' (a batch of S and one of S(0) per step) or 'union', got {f.mixing!r}"
        )
    if f.start_from not in ("latest", "original"):
        raise ConfigError(f"[finetune] start_from must be 'latest' or 'original', got {f.start_from!r}")
    resolved = {}
    for key in FINETUNE_FOLDERS:
        value = getattr(f, key)
        if not isinstance(value, str):
            raise ConfigError(f'[finetune] {key} must be a folder or s3:// prefix such as "data/{key}/", got {value!r}')
        resolved[key] = _resolve(base, value) if value else ""
    floats = {"lr_grid": tuple(float(v) for v in grid), "scale_range": tuple(float(v) for v in scales)}
    return dataclasses.replace(f, **floats, **resolved)


def default_colors(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC palette (bit-interleaved class ids), so VOC users see familiar colours."""
    colors = []
    for k in range(num_classes):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


def _parse_colors(value, num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """[classes] colors: one "#rrggbb" or [r, g, b] per class name, used by overlays and exports."""
    if value is None:
        return default_colors(num_classes)
    if not isinstance(value, list) or len(value) != num_classes:
        raise ConfigError(f"[classes] colors must list one colour per class name ({num_classes}), got {value!r}")
    colors = []
    for i, item in enumerate(value):
        if isinstance(item, str) and len(item) == 7 and item.startswith("#"):
            try:
                colors.append(tuple(int(item[j : j + 2], 16) for j in (1, 3, 5)))
                continue
            except ValueError:
                pass
        elif isinstance(item, list) and len(item) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in item):
            colors.append(tuple(item))
            continue
        raise ConfigError(f'[classes] colors[{i}] must be "#rrggbb" or [r, g, b] with 0..255, got {item!r}')
    if len(set(colors)) != len(colors):
        raise ConfigError("[classes] colors repeats a colour; each class needs its own (exports map colours back to classes)")
    return tuple(colors)


def _parse_model(i: int, data: dict, base: Path, num_classes: int) -> ModelSpec:
    where = f"[[models]] #{i + 1}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table with name, role and arch/factory/maps")
    _unknown(data, _MODEL_KEYS, where)
    name = data.get("name")
    if not name or not isinstance(name, str):
        raise ConfigError(f"{where}: set name = \"...\" (a short unique model name)")
    where = f"[[models]] {name!r}"
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"{where}: name may hold only letters, digits, '-' and '_'")
    role = data.get("role")
    if role not in ROLES:
        raise ConfigError(f"{where}: role must be 'target' or 'competitor', got {role!r}")
    sources = [k for k in ("arch", "factory", "maps") if data.get(k)]
    if len(sources) != 1:
        raise ConfigError(
            f"{where}: set exactly one of arch = \"deeplabv3_resnet50\", factory = \"pkg.mod:fn\" "
            f"or maps = \"dir/\" (found {sources or 'none'})"
        )
    arch = data.get("arch")
    if arch and arch not in SEGMENTATION_ARCHS:
        close = difflib.get_close_matches(arch, SEGMENTATION_ARCHS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where}: unknown arch {arch!r}{hint}; torchvision segmentation builders are "
            f"{', '.join(SEGMENTATION_ARCHS)}; for your own network use factory = \"pkg.mod:fn\""
        )
    factory = data.get("factory")
    if factory and (factory.count(":") != 1 or not all(factory.split(":"))):
        raise ConfigError(f"{where}: factory must look like \"package.module:function\", got {factory!r}")
    weights = data.get("weights")
    if weights is not None and "maps" in sources:
        raise ConfigError(f"{where}: a maps model takes no weights (remove weights = ...)")
    if weights:
        if weights.endswith((".pt", ".pth", ".bin", ".ckpt")) or "/" in weights or _is_remote(weights):
            weights = _resolve(base, weights)
            if not _is_remote(weights) and not os.path.exists(weights):
                raise ConfigError(
                    f"{where}: weights file {weights!r} does not exist; fix the path, or remove "
                    "weights = ... to start from random initialisation"
                )
    maps = data.get("maps")
    if maps:
        maps = _resolve(base, maps)
        if not _is_remote(maps) and not os.path.isdir(maps):
            raise ConfigError(f"{where}: maps folder {maps!r} does not exist")
    input_size = data.get("input_size", 513)
    if not isinstance(input_size, int) or isinstance(input_size, bool) or not 8 <= input_size <= 4096:
        raise ConfigError(f"{where}: input_size must be a whole number in [8, 4096], got {input_size!r}")
    for key in ("mean", "std"):
        value = data.get(key)
        if value is not None and (len(value) != 3 or not all(isinstance(v, (int, float)) for v in value)):
            raise ConfigError(f"{where}: {key} must be three numbers (R, G, B), got {value!r}")
    if data.get("std") and any(v <= 0 for v in data["std"]):
        raise ConfigError(f"{where}: std values must be > 0")
    classes = data.get("classes")
    if classes is not None and classes != num_classes:
        raise ConfigError(
            f"{where}: the model predicts {classes} classes but [classes] names lists {num_classes}; "
            "all models of a run must share the class list"
        )
    return ModelSpec(
        name=name,
        role=role,
        arch=arch,
        factory=factory,
        maps=maps,
        weights=weights,
        input_size=input_size,
        mean=tuple(data.get("mean", IMAGENET_MEAN)),
        std=tuple(data.get("std", IMAGENET_STD)),
        classes=classes,
        version=data.get("version"),
        seed=int(data.get("seed", 0)),
    )


def parse_config(raw: dict, base: Path, path: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths are taken from `base`."""
    _unknown(raw, _TOP_KEYS, "madmine.toml")
    ws = raw.get("workspace") or {}
    _unknown(ws, _WORKSPACE_KEYS, "[workspace]")
    uri = ws.get("uri")
    if not uri or not isinstance(uri, str):
        raise ConfigError('[workspace] uri is missing: set uri = "work/" or "s3://bucket/prefix"')
    uri = _resolve(base, uri)

    storage = raw.get("storage") or {}
    _unknown(storage, _STORAGE_KEYS, "[storage]")
    storage_options: dict[str, Any] = {}
    if storage.get("endpoint_url"):
        storage_options["client_kwargs"] = {"endpoint_url": storage["endpoint_url"]}
        if storage.get("region"):
            storage_options["client_kwargs"]["region_name"] = storage["region"]
    for key in ("key", "secret", "anon"):
        if key in storage:
            storage_options[key] = storage[key]

    cls = raw.get("classes") or {}
    _unknown(cls, _CLASSES_KEYS, "[classes]")
    names = cls.get("names")
    if not names or not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError('[classes] names must list the class names, background first: names = ["background", ...]')
    if len(names) < 2:
        raise ConfigError("[classes] names needs background and at least one object class")
    if len(names) > 255:
        raise ConfigError(f"[classes] names lists {len(names)} classes; at most 255 (255 means ignore)")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"[classes] names repeats {dup}; class names must be unique")

    models_raw = raw.get("models")
    if not models_raw or not isinstance(models_raw, list):
        raise ConfigError("no [[models]] entries: add one target and at least one competitor")
    models = tuple(_parse_model(i, m, base, len(names)) for i, m in enumerate(models_raw))
    seen = set()
    for m in models:
        if m.name in seen:
            raise ConfigError(f"[[models]]: two models are named {m.name!r}; names must be unique")
        seen.add(m.name)
    targets = [m.name for m in models if m.role == "target"]
    if len(targets) != 1:
        raise ConfigError(
            f"[[models]]: exactly one model must have role = \"target\", found {len(targets)} {targets}"
        )
    if not any(m.role == "competitor" for m in models):
        raise ConfigError('[[models]]: add at least one model with role = "competitor"')

    scoring = _typed_section(ScoringConfig, raw.get("scoring") or {}, "[scoring]")
    _check_scoring(scoring)
    selection = _typed_section(SelectionConfig, raw.get("selection") or {}, "[selection]")
    _check_selection(selection)
    nightly = _typed_section(NightlyConfig, raw.get("nightly") or {}, "[nightly]")
    if nightly.stale_after_s <= 0 or nightly.round < -1:
        raise ConfigError("[nightly] stale_after_s must be > 0 and round >= -1 (-1: the newest round)")
    if not all(isinstance(x, str) and x for x in nightly.sources):
        raise ConfigError('[nightly] sources must list folders, globs, s3:// prefixes or URI files: sources = ["photos/"]')
    nightly = dataclasses.replace(
        nightly, sources=tuple(x if "://" in x or os.path.isabs(x) else _resolve(base, x) for x in nightly.sources)
    )
    rating = _typed_section(RatingConfig, raw.get("rating") or {}, "[rating]")
    _check_rating(rating)
    evaluate = _typed_section(EvaluateConfig, raw.get("evaluate") or {}, "[evaluate]")
    _check_evaluate(evaluate)
    finetune = _check_finetune(_typed_section(FinetuneConfig, raw.get("finetune") or {}, "[finetune]"), base)
    colors = _parse_colors(cls.get("colors"), len(names))
    return Config(
        path=path,
        workspace_uri=uri,
        storage_options=storage_options,
        classes=tuple(names),
        models=models,
        scoring=scoring,
        selection=selection,
        raw=raw,
        rating=rating,
        nightly=nightly,
        colors=colors,
        evaluate=evaluate,
        finetune=finetune,
    )


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate madmine.toml."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} not found; pass --config PATH or create madmine.toml")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, path.resolve().parent, path)

"""Typed configuration (madmine.toml), validated up front.

Every problem is reported before any work starts, with the key that is wrong and what to
write instead: a scoring job that fails after an hour because of a typo is the worst kind
of failure for a batch tool.

Each section is a pydantic dataclass: unknown keys, types, ranges and choices are declared
on its fields; `parse_config` turns pydantic's errors into one line that names the section
and the key (`[selection] n3 must be > 0, got 0`, `unknown key 'n_3' (did you mean 'n3'?)`),
then checks what spans sections (one target, the class count, paths relative to the file).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import tomllib
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from madmine.errors import ConfigError
from madmine.objectstore import DEFAULT_MAX_ATTEMPTS
from madmine.untrusted import ImageError, read_local
from madmine.workspace import is_remote

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
FINETUNE_FOLDERS = ("s0_images", "s0_labels", "t0_images", "t0_labels")
MAX_CONFIG_BYTES = 1 << 20  # a madmine.toml is a few kilobytes; anything this large is not one


# ---- field types -------------------------------------------------------------------------
def _no_bool(value):
    """TOML's true/false are not numbers, whatever Python thinks."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {str(value).lower()}")
    return value


Number = Annotated[float, BeforeValidator(_no_bool)]
Whole = Annotated[int, Field(strict=True)]
Positive = Annotated[int, Field(strict=True, gt=0)]
AtLeastOne = Annotated[int, Field(strict=True, ge=1)]
NonNegative = Annotated[Number, Field(ge=0)]
Flag = Annotated[bool, Field(strict=True)]
Text = Annotated[str, Field(strict=True)]
Triple = Annotated[tuple[Number, Number, Number], Field()]

SECTION = ConfigDict(extra="forbid")


def _resolve(base: Path, value: str) -> str:
    """Relative local paths in the file are relative to the file, not the shell."""
    if is_remote(value) or os.path.isabs(value):
        return value
    return str((base / value).resolve()) + ("/" if value.endswith("/") else "")


def _base(info: ValidationInfo) -> Path | None:
    return (info.context or {}).get("base")


def _did_you_mean(value: str, choices) -> str:
    close = difflib.get_close_matches(value, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---- sections ----------------------------------------------------------------------------
MODEL_KINDS = ("arch", "factory", "hf", "smp", "torchscript", "onnx", "maps")
TRAINABLE_KINDS = ("arch", "factory", "hf", "smp")
WEIGHTED_KINDS = ("arch", "factory", "hf", "smp")  # `weights = ...` applies a state_dict to them
MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_name(value: str) -> bool:
    """`org/name` as the Hugging Face Hub spells checkpoints (not a URI, not an absolute or dotted path)."""
    return not is_remote(value) and not os.path.isabs(value) and not value.startswith((".", "~")) and (
        HUB_NAME.fullmatch(value) is not None)


def is_builtin_class_map(value: str) -> bool:
    """`ade20k-voc` (a map shipped with madmine), as opposed to a path or URI of a CSV file."""
    return "/" not in value and "\\" not in value and not value.endswith(".csv") and "://" not in value


def _table_pairs(value):
    """An inline class_map table ({model class: config class}) as sorted-free (key, value) pairs; a string as is."""
    if isinstance(value, dict):
        return tuple((str(k), v) for k, v in value.items())
    return value


ClassMapValue = Annotated[
    Text | tuple[tuple[Text, Text | Annotated[int, Field(strict=True)]], ...], BeforeValidator(_table_pairs)
]


def _existing_file(value: str | None, info: ValidationInfo, what: str, exists=os.path.isfile) -> str | None:
    """The value resolved against the config's folder; a local path that `exists` refuses is an error."""
    base = _base(info)
    if not value or base is None:
        return value
    value = _resolve(base, value)
    if not is_remote(value) and not exists(value):
        raise ValueError(f"{what} {value!r} does not exist")
    return value


@dataclass(frozen=True, config=SECTION)
class ModelSpec:
    """How to build one model: exactly one of arch, factory, hf, smp, torchscript, onnx or maps."""

    name: Text
    role: Literal["target", "competitor"]
    arch: Text | None = None
    factory: Text | None = None
    maps: Text | None = None
    weights: Text | None = None
    input_size: Annotated[int, Field(strict=True, ge=8, le=4096)] = 513
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    classes: Positive | None = None  # the model's own class count (with a class_map), else the config's
    version: Text | None = None
    seed: Whole = 0
    hf: Text | None = None  # a Hugging Face checkpoint: folder, s3:// folder or Hub name
    smp: Text | None = None  # a segmentation_models_pytorch architecture ("Unet", "FPN", "DeepLabV3Plus"...)
    encoder: Text | None = None  # its encoder (smp only; default resnet34)
    torchscript: Text | None = None  # a TorchScript file
    onnx: Text | None = None  # an ONNX file
    class_map: ClassMapValue | None = None  # the model's classes -> the config's (see madmine.models.classmap)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not value.replace("_", "").replace("-", "").isalnum():
            raise ValueError("may hold only letters, digits, '-' and '_'")
        return value

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str | None) -> str | None:
        if value and value not in SEGMENTATION_ARCHS:
            raise ValueError(
                f"unknown arch {value!r}{_did_you_mean(value, SEGMENTATION_ARCHS)}; torchvision segmentation "
                f"builders are {', '.join(SEGMENTATION_ARCHS)}; for your own network use factory = \"pkg.mod:fn\""
            )
        return value

    @field_validator("factory")
    @classmethod
    def _factory(cls, value: str | None) -> str | None:
        if value and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError(f'factory must look like "package.module:function", got {value!r}')
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = _base(info)
        if not value or base is None or not is_weights_file(value):
            return value
        value = _resolve(base, value)
        if not is_remote(value) and not os.path.exists(value):
            raise ValueError(
                f"weights file {value!r} does not exist; fix the path, or remove weights = ... to start from "
                "random initialisation"
            )
        return value

    @field_validator("maps")
    @classmethod
    def _maps(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _existing_file(value, info, "maps folder", exists=os.path.isdir)

    @field_validator("hf")
    @classmethod
    def _hf(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A folder (relative to the config), an s3:// folder, or a Hub name such as "nvidia/segformer-b0-..."."""
        base = _base(info)
        if not value or base is None or is_remote(value):
            return value
        local = _resolve(base, value)
        if os.path.isdir(local):
            return local.rstrip("/")
        if looks_like_hub_name(value):
            return value  # a Hub name: fetched where the machine may download
        raise ValueError(f"checkpoint folder {local!r} does not exist (and {value!r} is no Hub name such as \"org/model\")")

    @field_validator("torchscript")
    @classmethod
    def _torchscript(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _existing_file(value, info, "TorchScript file")

    @field_validator("onnx")
    @classmethod
    def _onnx(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _existing_file(value, info, "ONNX file")

    @field_validator("class_map")
    @classmethod
    def _class_map(cls, value, info: ValidationInfo):
        if isinstance(value, str):
            if not value.strip():
                raise ValueError('must name a shipped map ("ade20k-voc"), a CSV file, or be an inline table')
            if not is_builtin_class_map(value):
                return _existing_file(value, info, "class_map file")
        return value

    @field_validator("std")
    @classmethod
    def _std(cls, value):
        if any(v <= 0 for v in value):
            raise ValueError("values must be > 0")
        return value

    def __post_init__(self) -> None:
        sources = [k for k in MODEL_KINDS if getattr(self, k)]
        if len(sources) != 1:
            raise ValueError(
                'set exactly one of arch = "deeplabv3_resnet50", factory = "pkg.mod:fn", hf = "checkpoint/", '
                'smp = "Unet", torchscript = "model.pt", onnx = "model.onnx" '
                f"or maps = \"dir/\" (found {sources or 'none'})"
            )
        if self.maps and self.weights is not None:
            raise ValueError("a maps model takes no weights (remove weights = ...)")
        if self.weights is not None and self.kind not in WEIGHTED_KINDS:
            raise ValueError(f"the {self.kind} file holds its weights (remove weights = ...)")
        if self.encoder is not None and not self.smp:
            raise ValueError('encoder applies to smp models only (smp = "Unet", encoder = "resnet34")')

    @property
    def kind(self) -> str:
        return next(k for k in MODEL_KINDS if getattr(self, k))

    @property
    def is_network(self) -> bool:
        return self.kind != "maps"

    @property
    def trainable(self) -> bool:
        """A kind fine-tuning can train (a Hugging Face universal model is refused when it is built)."""
        return self.kind in TRAINABLE_KINDS


def is_weights_file(weights: str) -> bool:
    """A path (to a state_dict), as opposed to a torchvision weights enum name."""
    return "/" in weights or weights.endswith((".pt", ".pth", ".bin", ".ckpt")) or is_remote(weights)


@dataclass(frozen=True, config=SECTION)
class ScoringConfig:
    """How `madmine score` runs: pool size, devices, batches, layout, error budget."""

    batch_size: Positive = 4
    actors: Positive = 1
    num_gpus_per_actor: NonNegative = 0.0
    num_cpus_per_actor: NonNegative = 1.0
    torch_threads: Annotated[int, Field(strict=True, ge=0)] = 0  # 0: every core of the node
    device: Literal["auto", "cpu", "cuda"] = "auto"
    channels_last: Flag = True
    # auto: bf16 autocast where the device runs it faster (CUDA with bf16; CPUs with AMX or
    # AVX512-BF16, read from the CPU's flags), fp32 elsewhere; fp32 or bf16 to force
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    shard_size: Positive = 1024  # images per shard: per shard one object per table, per model and a marker
    max_error_fraction: Annotated[Number, Field(ge=0, le=1)] = 0.05
    cache_maps: Flag = True
    # batches decoded ahead of the forward passes; auto: 2 on a GPU, 0 on a CPU (decoding
    # beside CPU forward passes only takes their cores: measured 17% slower with tiny networks)
    prefetch_batches: Annotated[int, Field(strict=True, ge=0, le=64)] | Literal["auto"] = "auto"
    decode_threads: Annotated[int, Field(strict=True, ge=1, le=256)] = 2  # per actor: fetch and decode
    max_pixels: Positive = 64_000_000
    min_side: Positive = 8
    # the untrusted-bytes boundary (madmine.untrusted), for ingest, scoring and the rating app
    max_bytes: Annotated[int, Field(strict=True, ge=1024, le=1 << 36)] = 256 << 20
    decode_timeout_s: Annotated[Number, Field(gt=0, le=3600)] = 30.0  # per image (scoring: fetch, decode, resize)


@dataclass(frozen=True, config=SECTION)
class SelectionConfig:
    """Selection budgets (steps 2 and 4 of the method, docs/paper.md)."""

    n3: Positive = 25
    n4: Positive = 100
    quantiles: tuple[Annotated[Number, Field(ge=0, le=1)], Annotated[Number, Field(ge=0, le=1)]] = (0.25, 0.75)
    phash_distance: Annotated[int, Field(strict=True)] = 0
    seed: Whole = 0
    # true: an image rated in an earlier round never enters M again (saves raters' time); false:
    # rated images that S did not take may re-enter a later M, as in the paper (an out-of-domain
    # vote still keeps an image out for good)
    exclude_rated: Flag = True
    # the learned and hybrid strategies: a rated image is a failure when its MOS is at most
    # this (2.5: "bad" or "poor" on average); the share of rated images kept out of fitting
    # to measure the predictor (AUROC)
    failure_mos: Annotated[Number, Field(ge=1, le=5)] = 2.5
    learned_heldout: Annotated[Number, Field(gt=0, lt=1)] = 0.25
    # DuckDB's memory for one selection; past it, joins and temporary tables spill to
    # spill_directory (default: the system's temporary folder), so 10M images fit in a few GB
    memory_limit: Text = "4GiB"
    spill_directory: Text | None = None

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not MEMORY_SIZE.fullmatch(value.strip()):
            raise ValueError(f'must be a size such as "4GiB" or "512MB", got {value!r}')
        return value.strip()

    @field_validator("spill_directory")
    @classmethod
    def _spill(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and is_remote(value):
            raise ValueError(f"must be a local folder (DuckDB spills to local disk), got {value!r}")
        return _existing_file(value, info, "spill folder", exists=os.path.isdir)

    @field_validator("quantiles")
    @classmethod
    def _ordered(cls, value):
        if value[0] > value[1]:
            raise ValueError(f"must be two numbers 0 <= p <= q <= 1, got {list(value)}")
        return value

    @field_validator("phash_distance")
    @classmethod
    def _bits(cls, value: int) -> int:
        if not 0 <= value <= 16:
            raise ValueError(
                f"must be within [0, 16] bits, got {value}: beyond that, unrelated images count as duplicates "
                "(0 = identical hashes only)"
            )
        return value


@dataclass(frozen=True, config=SECTION)
class RatingConfig:
    """Weak labelling (steps 3-4 of the method, docs/paper.md): who must rate, what a human second costs, where the app listens."""

    min_raters: AtLeastOne | None = None  # none: every registered rater rates every image (the paper: three)
    seconds_per_rating: Annotated[Number, Field(gt=0)] = 7.0
    seconds_per_mask: Annotated[Number, Field(gt=0)] = 135.0
    idle_gap_s: Annotated[Number, Field(gt=0)] = 120.0
    host: Annotated[str, Field(strict=True, min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(strict=True, ge=0, le=65535)] = 8765
    public_url: Text = ""
    display_max_side: Annotated[int, Field(strict=True, ge=64, le=8192)] = 1024
    behind_tls: Flag = False  # raters reach the app through a TLS proxy: the cookie is Secure
    trusted_proxies: Annotated[str, Field(strict=True, min_length=1)] = "127.0.0.1"  # whose X-Forwarded-Proto counts
    max_body_bytes: Annotated[int, Field(strict=True, ge=256, le=1 << 20)] = 16 << 10  # a vote is ~100 bytes


@dataclass(frozen=True, config=SECTION)
class EvaluateConfig:
    """Measuring progress (step 6 of the method, docs/paper.md): test-set rules, competition and quality budgets."""

    testset_size: Positive = 30
    per_class: Positive = 4
    seed: Whole = 0
    compete_n: Positive = 30  # --protocol d-ranking: images by d(A, B) over the whole pool
    compete_per_class: Positive = 2  # --protocol mad: images per (class, partitioning model) group
    compete_protocol: Literal["mad", "d-ranking"] = "mad"
    tau: Annotated[Number, Field(gt=0, le=1)] = 0.5  # the per-image mIoU below which a prediction is a failure
    top_n: Positive = 10
    gallery: Positive = 12


@dataclass(frozen=True, config=SECTION)
class NightlyConfig:
    """`madmine nightly`: what to ingest, which round to refresh, when a lock is stale."""

    sources: tuple[Annotated[str, Field(strict=True, min_length=1)], ...] = ()
    round: Annotated[int, Field(strict=True, ge=-1)] = -1  # -1: the newest round that has candidates (0 when there is none)
    stale_after_s: Annotated[Number, Field(gt=0)] = 1800.0
    report: Flag = True

    @field_validator("sources")
    @classmethod
    def _sources(cls, value, info: ValidationInfo):
        base = _base(info)
        return value if base is None else tuple(x if "://" in x or os.path.isabs(x) else _resolve(base, x) for x in value)


@dataclass(frozen=True, config=SECTION)
class FinetuneConfig:
    """`madmine finetune` (step 5 of the method, docs/paper.md): the recipe (the paper's by default), data
    folders, Ray resources.

    S(0) and T(0) are folders (or s3:// prefixes) of images and label PNGs matched by file
    stem; see docs/finetune.md, which also says which settings are the paper's.
    """

    RENAMED: ClassVar[dict[str, str]] = {"freeze_bn": 'batch_norm = "freeze", "train" or "auto"'}

    s0_images: Text = ""
    s0_labels: Text = ""
    t0_images: Text = ""
    t0_labels: Text = ""
    lr_grid: tuple[Annotated[Number, Field(gt=0)], ...] = (1e-5, 5e-5, 1e-4)
    # the recipe: what the paper trains with, unless set
    optimizer: Literal["sgd", "adamw"] = "sgd"
    schedule: Literal["poly", "constant", "cosine", "onecycle"] = "poly"
    epochs: AtLeastOne = 80  # passes over the pool of `mixing` (union: S and S(0); alternate: S)
    steps: Annotated[int, Field(strict=True, ge=0)] = 0  # > 0: this many optimiser steps instead of `epochs` passes
    batch_size: AtLeastOne = 2  # images per step and worker (alternate: both parts together)
    momentum: Annotated[Number, Field(ge=0, lt=1)] = 0.9  # sgd
    weight_decay: NonNegative = 5e-4
    poly_power: NonNegative = 0.9
    # batch norm: auto trains its statistics when a worker's batch holds at least 8 images, else keeps the parent's
    batch_norm: Literal["auto", "train", "freeze"] = "auto"
    mixing: Literal["union", "alternate"] = "union"  # union: one shuffled pool of S and S(0) (the paper's)
    s_share: Annotated[Number, Field(gt=0, le=1)] = 0.5  # alternate: the share of each batch drawn from S
    # augmentation, each on or off
    crop_size: Annotated[int, Field(strict=True, ge=0, le=4096)] = 0  # 0: the target's input_size
    scale_range: tuple[Annotated[Number, Field(gt=0, le=8)], Annotated[Number, Field(gt=0, le=8)]] = (0.5, 2.0)
    flip: Flag = True
    photometric: Flag = False  # colour channels permuted (half the images) or greyscale (a fifth)
    copy_paste: Annotated[Number, Field(ge=0, le=1)] = 0.0  # share of images that get the objects of an S(0) image pasted on
    # which checkpoint wins: "t0" (the paper: the highest T(0) mIoU) or "validation" (the fewest failures
    # on a held-out part of S, among the checkpoints whose T(0) mIoU is within max_t0_drop of the parent's);
    # every validated epoch of every lr competes
    choose_by: Literal["t0", "validation"] = "t0"
    validation_share: Annotated[Number, Field(gt=0, le=0.5)] = 0.2  # of S, kept out of training ("validation")
    max_t0_drop: Annotated[Number, Field(ge=0, le=1)] = 0.01  # mIoU on T(0), as a fraction ("validation")
    fit_guard: Annotated[Number, Field(gt=0, le=1)] = 0.5  # warn when the new version fails on more of the S it trained on
    start_from: Literal["latest", "original"] = "latest"  # latest: the newest target version of an earlier round
    num_workers: AtLeastOne = 1
    use_gpu: Flag = False
    cpus_per_worker: Annotated[Number, Field(gt=0)] = 1.0
    concurrent_trials: AtLeastOne = 1
    loader_workers: Annotated[int, Field(strict=True, ge=0)] = 2
    checkpoint_every: AtLeastOne = 1
    keep_checkpoints: AtLeastOne = 2
    val_every: AtLeastOne = 1
    max_failures: Annotated[int, Field(strict=True, ge=-1)] = 3  # -1: retry forever
    seed: Whole = 0

    @field_validator("lr_grid")
    @classmethod
    def _grid(cls, value):
        if not value:
            raise ValueError("must list learning rates > 0, e.g. [1e-5, 5e-5, 1e-4]")
        if len(set(value)) != len(value):
            raise ValueError(f"repeats a learning rate: {list(value)}")
        return value

    @field_validator("crop_size")
    @classmethod
    def _crop(cls, value: int) -> int:
        if value != 0 and value < 8:
            raise ValueError(f"must be 0 (the target's input_size) or within [8, 4096], got {value}")
        return value

    @field_validator("scale_range")
    @classmethod
    def _scales(cls, value):
        if value[0] > value[1]:
            raise ValueError(f"must be two numbers 0 < low <= high <= 8 such as [0.5, 2.0], got {list(value)}")
        return value

    @field_validator(*FINETUNE_FOLDERS)
    @classmethod
    def _folder(cls, value: str, info: ValidationInfo) -> str:
        base = _base(info)
        return _resolve(base, value) if value and base is not None else value


@dataclass(frozen=True, config=SECTION)
class LabelStudioConfig:
    """`madmine annotate push|pull`: the Label Studio server, and how it reaches the images.

    The token is better kept out of the file: LABEL_STUDIO_API_KEY (and LABEL_STUDIO_URL)
    are read when the keys are empty. See docs/labelstudio.md.
    """

    url: Text = ""            # e.g. "http://127.0.0.1:8080"; empty: $LABEL_STUDIO_URL
    token: Text = ""          # the API token (Account & Settings); empty: $LABEL_STUDIO_API_KEY
    document_root: Text = ""  # the server's LOCAL_FILES_DOCUMENT_ROOT; empty: <workspace>/exports (local workspaces)
    s3_endpoint: Text = ""    # the S3 endpoint as the server reaches it; empty: [storage] endpoint_url
    presign_ttl: Annotated[int, Field(strict=True, ge=1, le=10080)] = 60  # minutes a presigned image URL lives
    timeout_s: Annotated[Number, Field(gt=0, le=3600)] = 60.0

    @field_validator("url", "s3_endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if value and not (value.startswith(("http://", "https://")) and len(value.split("://", 1)[1].strip("/")) > 0):
            raise ValueError(f'must be an http(s) URL such as "http://127.0.0.1:8080", got {value!r}')
        return value.rstrip("/")

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value != value.strip() or any(c.isspace() for c in value):
            raise ValueError("must be the token alone, without spaces or a 'Token ' prefix")
        return value

    @field_validator("document_root")
    @classmethod
    def _root(cls, value: str, info: ValidationInfo) -> str:
        base = _base(info)
        if value and is_remote(value):
            raise ValueError(f"must be a folder on the Label Studio server's disk, got {value!r}")
        return _resolve(base, value).rstrip("/") if value and base is not None else value


@dataclass(frozen=True, config=SECTION)
class WorkspaceSection:
    uri: Text

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value


@dataclass(frozen=True, config=SECTION)
class StorageSection:
    """An S3-compatible endpoint and its credentials, for every s3:// URI of the config."""

    endpoint_url: Text | None = None
    key: Text | None = None
    secret: Text | None = None
    anon: Flag | None = None
    region: Text | None = None
    # attempts per request before a run gives up on the store (retries back off exponentially, with jitter)
    max_attempts: Annotated[int, Field(strict=True, ge=1, le=20)] = DEFAULT_MAX_ATTEMPTS

    def options(self) -> dict[str, Any]:
        """fsspec/s3fs storage options."""
        out: dict[str, Any] = {"config_kwargs": {"retries": {"total_max_attempts": self.max_attempts, "mode": "standard"}}}
        if self.endpoint_url:
            out["client_kwargs"] = {"endpoint_url": self.endpoint_url}
            if self.region:
                out["client_kwargs"]["region_name"] = self.region
        for key in ("key", "secret", "anon"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


Colour = Annotated[str, Field(strict=True, pattern=r"^#[0-9a-fA-F]{6}$")] | tuple[
    Annotated[int, Field(strict=True, ge=0, le=255)],
    Annotated[int, Field(strict=True, ge=0, le=255)],
    Annotated[int, Field(strict=True, ge=0, le=255)],
]


@dataclass(frozen=True, config=SECTION)
class ClassesSection:
    """Class names (id = index; 255 = ignore) and their display colours."""

    names: tuple[Annotated[str, Field(strict=True, min_length=1)], ...]
    colors: tuple[Colour, ...] | None = None

    @field_validator("names")
    @classmethod
    def _names(cls, value):
        if len(value) < 2:
            raise ValueError("needs background and at least one object class")
        if len(value) > 255:
            raise ValueError(f"lists {len(value)} classes; at most 255 (255 means ignore)")
        if len(set(value)) != len(value):
            dup = sorted({n for n in value if value.count(n) > 1})
            raise ValueError(f"repeats {dup}; class names must be unique")
        return value


SECTIONS = {
    "workspace": WorkspaceSection,
    "classes": ClassesSection,
    "models": ModelSpec,
    "scoring": ScoringConfig,
    "selection": SelectionConfig,
    "storage": StorageSection,
    "rating": RatingConfig,
    "evaluate": EvaluateConfig,
    "nightly": NightlyConfig,
    "finetune": FinetuneConfig,
    "labelstudio": LabelStudioConfig,
}


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole validated config: sections, models, and what is derived from them."""

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
    labelstudio: LabelStudioConfig = LabelStudioConfig()
    models_resolved: bool = False  # class maps checked and checkpoints' preprocessing read (madmine.models.resolve)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def target(self) -> ModelSpec:
        return next(m for m in self.models if m.role == "target")

    @property
    def competitors(self) -> tuple[ModelSpec, ...]:
        return tuple(m for m in self.models if m.role == "competitor")

    def entry(self, name: str) -> dict:
        """The model's entry as written in the file (which keys the user set)."""
        for data in self.raw.get("models") or []:
            if isinstance(data, dict) and data.get("name") == name:
                return data
        return {}

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(f"no model named {name!r}; models are {[m.name for m in self.models]}")

    def fingerprint(self) -> str:
        """A short hash of what determines scores (classes and models), for run ids."""
        payload = {"classes": self.classes, "models": [dataclasses.asdict(m) for m in self.models]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---- pydantic's errors as one line each ---------------------------------------------------
def _allowed(cls) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _message(error: dict, where: str, cls) -> str:
    """One pydantic error -> `[section] key must be ...`, naming the key and the fix."""
    loc = [str(p) for p in error["loc"]]
    key = loc[0] if loc else ""
    # `colors.0.constrained-str` -> `colors[0]`: indices kept, pydantic's names of union branches dropped
    spot = f"{where} {key}" + "".join(f"[{p}]" for p in loc[1:] if p.isdigit()) if loc else where
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    shown = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        if key in getattr(cls, "RENAMED", {}):
            return f"{where}: unknown key {key!r}: it is now {cls.RENAMED[key]}"
        return f"{where}: unknown key {key!r}{_did_you_mean(key, _allowed(cls))}; allowed keys: {', '.join(_allowed(cls))}"
    if kind == "missing":
        return f"{where} {key} is missing" if len(loc) == 1 else f"{where} {key} has too few values"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        limit = next(iter(ctx.values()))
        return f"{spot} must be {op} {limit}, got {shown}"
    if kind == "literal_error":
        return f"{spot} must be {ctx.get('expected')}, got {shown}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{spot} must be true or false, got {shown}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"{spot} must be a whole number, got {shown}"
    if kind in ("float_type", "float_parsing"):
        return f"{spot} must be a number, got {shown}"
    if kind in ("string_type", "string_too_short"):
        return f"{spot} must be a non-empty string (in quotes), got {shown}"
    if kind in ("tuple_type", "too_short", "too_long"):
        return f"{spot} must be a list of the right length, got {shown}"
    if kind == "string_pattern_mismatch":
        return f'{spot} must be "#rrggbb" or [r, g, b] with 0..255, got {shown}'
    text = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{spot} {text}" if loc else f"{where}: {text}"


def _validate(cls, data: Any, where: str, base: Path | None):
    """One section through pydantic; the first error becomes a ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table of keys (a [section] in TOML), got {type(data).__name__}")
    try:
        return TypeAdapter(cls).validate_python(data, context={"base": base})
    except ValidationError as exc:
        errors = exc.errors()
        # the union of colour forms reports each alternative: name the key once
        raise ConfigError(_message(errors[0], where, cls)) from None


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


def _colors(section: ClassesSection) -> tuple[tuple[int, int, int], ...]:
    n = len(section.names)
    if section.colors is None:
        return default_colors(n)
    if len(section.colors) != n:
        raise ConfigError(f"[classes] colors must list one colour per class name ({n}), got {len(section.colors)}")
    colors = tuple(tuple(int(c[j : j + 2], 16) for j in (1, 3, 5)) if isinstance(c, str) else tuple(c) for c in section.colors)
    if len(set(colors)) != len(colors):
        raise ConfigError("[classes] colors repeats a colour; each class needs its own (exports map colours back to classes)")
    return colors


def _class_count(spec: ModelSpec, where: str, num_classes: int) -> None:
    """A model without a class map predicts the config's classes (class maps are checked by models.resolve)."""
    if spec.class_map is None and spec.classes is not None and spec.classes != num_classes:
        raise ConfigError(
            f"{where}: the model predicts {spec.classes} classes but [classes] names lists {num_classes}; "
            "all models of a run must share the class list, or map the model's classes with class_map"
        )


def _models(raw_models, base: Path, num_classes: int) -> tuple[ModelSpec, ...]:
    if not raw_models or not isinstance(raw_models, list):
        raise ConfigError("no [[models]] entries: add one target and at least one competitor")
    models = []
    for i, data in enumerate(raw_models):
        name = data.get("name") if isinstance(data, dict) else None
        where = f"[[models]] {name!r}" if isinstance(name, str) and name else f"[[models]] #{i + 1}"
        if isinstance(data, dict) and not name:
            raise ConfigError(f'{where}: set name = "..." (a short unique model name)')
        spec = _validate(ModelSpec, data, where, base)
        _class_count(spec, where, num_classes)
        models.append(spec)
    seen = set()
    for m in models:
        if m.name in seen:
            raise ConfigError(f"[[models]]: two models are named {m.name!r}; names must be unique")
        seen.add(m.name)
    targets = [m.name for m in models if m.role == "target"]
    if len(targets) != 1:
        raise ConfigError(f'[[models]]: exactly one model must have role = "target", found {len(targets)} {targets}')
    if not any(m.role == "competitor" for m in models):
        raise ConfigError('[[models]]: add at least one model with role = "competitor"')
    return tuple(models)


def parse_config(raw: dict, base: Path, path: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths are taken from `base`."""
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(
                f"madmine.toml: unknown key {key!r}{_did_you_mean(key, SECTIONS)}; allowed keys: {', '.join(sorted(SECTIONS))}"
            )
    workspace = raw.get("workspace") or {}
    if isinstance(workspace, dict) and not workspace.get("uri"):
        raise ConfigError('[workspace] uri is missing: set uri = "work/" or "s3://bucket/prefix"')
    uri = _resolve(base, _validate(WorkspaceSection, workspace, "[workspace]", base).uri)
    storage = _validate(StorageSection, raw.get("storage") or {}, "[storage]", base)
    classes = raw.get("classes") or {}
    if isinstance(classes, dict) and "names" not in classes:
        raise ConfigError('[classes] names must list the class names, background first: names = ["background", ...]')
    classes = _validate(ClassesSection, classes, "[classes]", base)
    sections = {
        name: _validate(SECTIONS[name], raw.get(name) or {}, f"[{name}]", base)
        for name in ("scoring", "selection", "rating", "evaluate", "nightly", "finetune", "labelstudio")
    }
    return Config(
        path=path,
        workspace_uri=uri,
        storage_options=storage.options(),
        classes=tuple(classes.names),
        models=_models(raw.get("models"), base, len(classes.names)),
        raw=raw,
        colors=_colors(classes),
        **sections,
    )


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate madmine.toml: a regular file of UTF-8 TOML, at most a megabyte."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} not found; pass --config PATH or create madmine.toml")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} is not a regular file; pass --config PATH of a madmine.toml")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(path)!r} is {path.stat().st_size} bytes; a madmine.toml is a few kilobytes")
    try:  # through the untrusted-bytes boundary: a file that fails to read (/proc/self/mem: EIO) is named
        data = read_local(str(path), MAX_CONFIG_BYTES)
    except ImageError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({exc.reason}: {exc.detail}); "
                          "pass --config PATH of a madmine.toml") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, path.resolve().parent, path)

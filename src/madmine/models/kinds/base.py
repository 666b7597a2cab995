"""What every kind of model provides, and the helpers the kinds share.

A kind turns a config entry into a torch module whose forward takes the normalised float
batch (N, 3, S, S) that scoring and fine-tuning make, and returns logits (N, K, S, S) over
the model's own K classes (a torchvision model's {"out": ..., "aux": ...} dict is accepted
too). Wrappers that hold a library's model keep it as `inner`, so weights files hold the
library's own state_dict (what a user loads in their own code) rather than the wrapper's.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
import posixpath
import re
import tempfile
import zlib
from abc import ABC, abstractmethod

import torch
from torch import nn

from madmine.config import ModelSpec, is_weights_file
from madmine.errors import ConfigError
from madmine.workspace import filesystem, is_remote, split_uri

log = logging.getLogger(__name__)

HASH_CHARS = 12


def effective_seed(spec: ModelSpec) -> int:
    """Random weights differ between models of the same kind, and never between runs."""
    return (spec.seed * 1_000_003 + zlib.crc32(spec.name.encode())) % (2**31)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def read_file(uri: str, storage_options: dict | None, what: str = "weights file") -> bytes:
    """The bytes of a local or remote file, or a ConfigError naming it."""
    try:
        return filesystem(uri, storage_options).cat_file(split_uri(uri)[1])
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ConfigError(f"{what} {uri!r} not found") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {uri!r} cannot be read: {exc}") from exc


def load_state_dict_bytes(spec: ModelSpec, data: bytes) -> dict:
    """A torch state_dict from a weights file's bytes (a {"state_dict": ...} wrapper is unwrapped)."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ConfigError(f"model {spec.name!r}: weights {spec.weights!r} are not a torch state_dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"model {spec.name!r}: weights {spec.weights!r} hold a {type(state).__name__}, not a state_dict")
    return state


def inner_module(net: nn.Module) -> nn.Module:
    """The library's own model inside a wrapper (or the module itself)."""
    inner = getattr(net, "inner", None)
    return inner if isinstance(inner, nn.Module) else net


def weights_state(net: nn.Module) -> dict:
    """The state_dict a weights file holds for this module: the library model's own."""
    return {k: v.detach().cpu() for k, v in inner_module(net).state_dict().items()}


def load_weights(net: nn.Module, state: dict) -> None:
    """Apply a weights file's state_dict (the library model's own, or the wrapper's); strict."""
    inner = inner_module(net)
    if inner is not net and all(k.startswith("inner.") for k in state):
        net.load_state_dict(state, strict=True)
    else:
        inner.load_state_dict(state, strict=True)


class Kind(ABC):
    """One way of building a model. Subclasses override what differs."""

    key = ""  # the config key that selects this kind (arch = ..., hf = ...)
    label = ""  # for people: validate's "kind" column
    extra: str | None = None  # pip install 'madmine[<extra>]'
    modules: tuple[str, ...] = ()  # what that extra brings, imported by require()
    trainable = False  # fine-tuning can train it
    takes_weights = False  # `weights = ...` applies a state_dict to it
    intrinsic_classes = False  # the checkpoint decides how many classes it predicts

    # ---- the extra ---------------------------------------------------------------------------
    def require(self, spec: ModelSpec) -> None:
        """Import what the kind needs, or fail with the pip command that installs it."""
        for name in self.modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ConfigError(
                    f"model {spec.name!r} ({self.key} = ...) needs the optional dependency {name!r}: "
                    f"pip install 'madmine[{self.extra}]' ({exc})"
                ) from exc

    # ---- identity ----------------------------------------------------------------------------
    def source(self, spec: ModelSpec) -> str:
        return str(getattr(spec, self.key))

    def version_prefix(self, spec: ModelSpec) -> str:
        return self.key

    def own_digest(self, spec: ModelSpec, storage_options: dict | None) -> str:
        """A hash of the model's own bytes (a file, a checkpoint folder), when it has no weights file."""
        return f"init{effective_seed(spec)}"

    def version(self, spec: ModelSpec, storage_options: dict | None) -> str:
        """<prefix>-<sha256[:12] of the weights file> as for every kind, else of the model's own bytes."""
        prefix = self.version_prefix(spec)
        if spec.weights:
            if is_weights_file(spec.weights):
                return f"{prefix}-" + digest(read_file(spec.weights, storage_options))
            return f"{prefix}-{spec.weights}"
        return f"{prefix}-{self.own_digest(spec, storage_options)}"

    # ---- the model ---------------------------------------------------------------------------
    @abstractmethod
    def build(self, spec: ModelSpec, num_outputs: int | None, storage_options: dict | None, state: dict | None = None) -> nn.Module:
        """The module on the CPU. `num_outputs`: the class count to build with (kinds whose checkpoint
        decides it ignore it); `state`: the weights file's state_dict, which the registry applies
        after the build (a kind looks at it only where the architecture depends on it)."""

    def labels(self, net: nn.Module) -> tuple[str, ...] | None:
        """The model's own class names in id order, where it names them."""
        return None

    def output_classes(self, net: nn.Module) -> int | None:
        """How many classes the built model predicts, where that is known without running it."""
        return None

    def can_train(self, net: nn.Module) -> bool:
        return self.trainable and bool(getattr(net, "trainable", True))

    def runtime(self, net: nn.Module, device: str, precision: str) -> tuple[str, str]:
        """(precision, device) the model really runs in under scoring's settings."""
        return precision, device


# ---- folders (Hugging Face checkpoints) -------------------------------------------------------
SKIPPED_IN_DIGEST = re.compile(r"(^|/)(README\.md|\.gitattributes|\.git/.*)$")


def folder_listing(uri: str, storage_options: dict | None) -> list[tuple[str, int]]:
    fs = filesystem(uri, storage_options)
    root = split_uri(uri)[1].rstrip("/")
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        found = {}
    out = []
    for path, info in found.items():
        rel = posixpath.relpath(path, root) if not os.path.isabs(root) else os.path.relpath(path, root)
        if info.get("type", "file") == "file" and not SKIPPED_IN_DIGEST.search(rel):
            out.append((rel, int(info.get("size") or 0)))
    return sorted(out)


def folder_digest(uri: str, storage_options: dict | None) -> str:
    """sha256 over every file of a checkpoint folder (name and bytes), README and git files aside."""
    listing = folder_listing(uri, storage_options)
    if not listing:
        raise ConfigError(f"checkpoint folder {uri!r} holds no files")
    fs = filesystem(uri, storage_options)
    root = split_uri(uri)[1].rstrip("/")
    h = hashlib.sha256()
    for rel, _ in listing:
        h.update(rel.encode() + b"\0")
        with fs.open(posixpath.join(root, rel), "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()[:HASH_CHARS]


def local_folder(uri: str, storage_options: dict | None) -> str:
    """A local copy of a remote folder (kept under the temp dir, keyed by its listing); local paths as they are."""
    if not is_remote(uri):
        return split_uri(uri)[1]
    listing = folder_listing(uri, storage_options)
    if not listing:
        raise ConfigError(f"checkpoint folder {uri!r} holds no files")
    key = hashlib.sha256(json.dumps([uri, listing]).encode()).hexdigest()[:16]
    target = os.path.join(tempfile.gettempdir(), "madmine-models", key)
    if os.path.isdir(target):
        return target
    fs = filesystem(uri, storage_options)
    root = split_uri(uri)[1].rstrip("/")
    staging = tempfile.mkdtemp(prefix=f"{key}-", dir=os.path.dirname(target) if _mkdir(os.path.dirname(target)) else None)
    for rel, _ in listing:
        dest = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fs.get_file(posixpath.join(root, rel), dest)
    try:
        os.rename(staging, target)  # atomic: a half-copied folder is never found under its key
    except OSError:  # another process finished first
        pass
    return target


def _mkdir(path: str) -> bool:
    os.makedirs(path, exist_ok=True)
    return True

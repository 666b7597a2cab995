"""The kinds of model madmine builds, one module each, behind one interface (base.Kind).

| config key    | kind                               | extra           | fine-tuned |
| ------------- | ---------------------------------- | --------------- | ---------- |
| `arch`        | torchvision segmentation builders  | (core)          | yes        |
| `factory`     | the user's own function            | (core)          | yes        |
| `hf`          | Hugging Face Transformers          | madmine[hf]     | semantic models |
| `smp`         | segmentation_models_pytorch        | madmine[smp]    | yes        |
| `torchscript` | TorchScript files                  | (core)          | no         |
| `onnx`        | ONNX files, run by ONNX Runtime    | madmine[onnx]   | no         |

Precomputed maps (`maps = "dir/"`) are no network: madmine.models.maps reads them.
"""

from __future__ import annotations

from madmine.models.kinds.base import Kind
from madmine.models.kinds.hf import HFKind
from madmine.models.kinds.onnx import OnnxKind
from madmine.models.kinds.smp import SMPKind
from madmine.models.kinds.torchscript import TorchScriptKind
from madmine.models.kinds.torchvision import FactoryKind, TorchvisionKind

KINDS: dict[str, Kind] = {k.key: k for k in (TorchvisionKind(), FactoryKind(), HFKind(), SMPKind(), TorchScriptKind(), OnnxKind())}


def kind_of(spec) -> Kind:
    """The Kind that builds a (network) model entry."""
    return KINDS[spec.kind]


__all__ = ["KINDS", "Kind", "kind_of"]

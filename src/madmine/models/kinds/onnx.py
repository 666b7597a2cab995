"""ONNX files (`onnx = "model.onnx"`), run by ONNX Runtime.

The file is the model and its weights: its version is the file's hash. Its first input takes
the normalised batch (N, 3, S, S), float32; its output named "out" or "logits" (else the
first) gives logits (N, K, h, w), upsampled bilinearly where smaller than the input. A model
exported with a fixed batch of 1 is run image by image; one exported with a fixed height and
width needs input_size to match (check_models says so).

Where scoring runs on a GPU and ONNX Runtime offers the CUDA provider (the onnxruntime-gpu
package instead of onnxruntime), the session runs on that GPU, else on the CPU provider, with
a warning. ONNX Runtime computes in the precision of the file (bf16 autocast does not apply).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from madmine.config import ModelSpec
from madmine.errors import ConfigError
from madmine.models.kinds.base import Kind, digest, read_file
from madmine.models.kinds.torchscript import logits_of, to_input_size

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def providers_for(device: str, available: list[str]) -> list:
    """The ONNX Runtime providers for a torch device name ('cpu', 'cuda', 'cuda:1')."""
    if device.startswith("cuda") and CUDA in available:
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [(CUDA, {"device_id": index}), CPU]
    return [CPU]


class OnnxModel(nn.Module):
    """An ONNX Runtime session as a module: one session per device, made at its first batch."""

    trainable = False

    def __init__(self, data: bytes, name: str):
        super().__init__()
        self.data = data
        self.name = name
        self._sessions: dict[str, object] = {}
        session = self.session("cpu")
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        self.half = inputs[0].type == "tensor(float16)"
        names = [o.name for o in outputs]
        self.output_name = next((n for n in ("out", "logits") if n in names), names[0])
        out_shape = next(o.shape for o in outputs if o.name == self.output_name)
        self.static_classes = out_shape[1] if len(out_shape) == 4 and isinstance(out_shape[1], int) else None

    def session(self, device: str):
        import onnxruntime as ort

        key = device if device.startswith("cuda") else "cpu"
        if key not in self._sessions:
            available = ort.get_available_providers()
            providers = providers_for(key, available)
            if key != "cpu" and providers == [CPU]:
                log.warning("model %r: ONNX Runtime has no CUDA provider here (install onnxruntime-gpu): it runs on the CPU",
                            self.name)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            try:
                self._sessions[key] = ort.InferenceSession(self.data, sess_options=options, providers=providers)
            except Exception as exc:
                raise ConfigError(f"model {self.name!r}: ONNX Runtime cannot load the file: {str(exc)[:300]}") from exc
        return self._sessions[key]

    @property
    def fixed_batch(self) -> bool:
        return len(self.input_shape) == 4 and self.input_shape[0] == 1

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        if len(self.input_shape) == 4 and all(isinstance(d, int) for d in self.input_shape[2:]):
            return int(self.input_shape[2]), int(self.input_shape[3])
        return None

    def providers(self, device: str) -> list[str]:
        return list(self.session(device).get_providers())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self.session(str(x.device))
        array = np.ascontiguousarray(x.detach().float().cpu().numpy(), dtype=np.float16 if self.half else np.float32)
        chunks = [array[i : i + 1] for i in range(len(array))] if self.fixed_batch else [array]
        outs = [session.run([self.output_name], {self.input_name: chunk})[0] for chunk in chunks]
        logits = torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0]).float().to(x.device)
        return to_input_size(logits_of(logits, f"the ONNX model of {self.name!r}"), x)


class OnnxKind(Kind):
    key = "onnx"
    label = "ONNX"
    extra = "onnx"
    modules = ("onnxruntime",)

    def own_digest(self, spec: ModelSpec, storage_options: dict | None) -> str:
        return digest(read_file(spec.onnx, storage_options, "ONNX file"))

    def build(self, spec: ModelSpec, num_outputs: int | None, storage_options: dict | None, state: dict | None = None) -> nn.Module:
        return OnnxModel(read_file(spec.onnx, storage_options, "ONNX file"), spec.name)

    def output_classes(self, net: nn.Module) -> int | None:
        return net.static_classes

    def runtime(self, net: nn.Module, device: str, precision: str) -> tuple[str, str]:
        provider = net.providers(device)[0]
        return ("fp16" if net.half else "fp32"), f"{device} ({provider})"

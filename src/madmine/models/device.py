"""Where a scorer runs and in which precision, decided from what the machine has.

bf16 autocast doubles throughput where the hardware computes in bf16 (CUDA GPUs with bf16,
CPUs with AMX or AVX512-BF16) and is several times slower where it is emulated (AVX2 CPUs:
measured 10x slower for lraspp_mobilenet_v3_large at 513x513 on a 2-core AVX2 machine), so
`precision = "auto"` reads the hardware instead of assuming.
"""

from __future__ import annotations

import functools
import platform

import torch

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    if platform.system() != "Linux":
        return frozenset()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fast_bf16(device: str) -> bool:
    """Whether the device computes bf16 natively (rather than emulating it)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: str) -> str:
    """'fp32' or 'bf16' for a configured precision ('auto', 'fp32', 'bf16') on a device."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def resolve_prefetch(prefetch: int | str, device: str) -> int:
    """Batches to decode ahead of the forward passes. 'auto': 2 on a GPU, whose forward passes
    leave the CPU to the decoder; 0 on a CPU, where decoding beside the forward passes only
    takes their cores (tiny networks on 2 cores: 1,043-1,106 images/s decoded when needed
    against 911-926 decoded ahead; the mobile mix at 513x513 the same either way)."""
    if prefetch == "auto":
        return 2 if device.startswith("cuda") else 0
    return int(prefetch)

"""The allocator setting: a forward pass's freed activations are reused, not page-faulted anew."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
import torch
from madmine.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.set_num_threads(1)
conv = torch.nn.Conv2d(3, 16, 3, padding=1)
x = torch.zeros(2, 3, 513, 513)  # activations of 34 MiB: above glibc's default mmap threshold
faults = []
with torch.inference_mode():
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        y = torch.relu(conv(x))
        del y
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(faults[1:]))  # the first pass maps its memory in either case
"""


def faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_activations_reuse_freed_memory():
    applied, kept = faults("keep")
    assert applied
    _, default = faults("default")
    pages = 5 * 2 * (2 * 16 * 513 * 513 * 4) // 4096  # five passes of two 34 MiB blocks, in 4 KiB pages
    assert default > pages // 2  # glibc maps each block afresh: a fault per page
    assert kept < default // 4  # the blocks come back from the heap, already mapped

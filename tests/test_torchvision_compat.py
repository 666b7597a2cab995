"""Importing torchvision through madmine: no torch._dynamo at start-up, the real one when asked for."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import sys
import torch
from madmine.torchvision_compat import import_torchvision
tv = import_torchvision()
print("dynamo imported with torchvision:", "torch._dynamo" in sys.modules)
print("stand-in answers:", sys.modules["torchvision.ops.roi_align"].is_compile_supported("cpu"))
import torch._dynamo
print("real dynamo after:", hasattr(torch._dynamo, "config") and hasattr(torch._dynamo, "optimize"))
net = tv.models.segmentation.lraspp_mobilenet_v3_large(num_classes=3, weights=None, weights_backbone=None).eval()
with torch.inference_mode():
    print("segmentation runs:", tuple(net(torch.zeros(1, 3, 64, 64))["out"].shape) == (1, 3, 64, 64))
"""


def test_torchvision_imports_without_dynamo_and_leaves_the_real_one_importable():
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True).stdout
    assert "dynamo imported with torchvision: False" in out
    assert "stand-in answers: True" in out
    assert "real dynamo after: True" in out
    assert "segmentation runs: True" in out

"""The single entry point for importing torchvision.

The PyPI torchvision wheel is a CUDA build; beside the CPU torch its compiled extension
cannot load, and `import torchvision` then fails while registering fake kernels for
`torchvision::nms`. Segmentation models use none of the compiled ops, so when (and only
when) the extension did not load we define the missing op schemas and import again.
"""

from __future__ import annotations

import sys

_compat_lib = None  # keeps the torch.library.Library alive for the process lifetime

_MISSING_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _define_missing_schemas() -> None:
    global _compat_lib
    import torch

    if _compat_lib is None:
        _compat_lib = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _MISSING_SCHEMAS.items():
        try:
            torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        except RuntimeError:
            _compat_lib.define(schema)


def import_torchvision():
    """Return the torchvision module, repairing the import on CPU-only machines."""
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "models"):
        return sys.modules["torchvision"]
    try:
        import torchvision

        return torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _define_missing_schemas()
    import torchvision

    return torchvision

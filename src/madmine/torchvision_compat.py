"""The single entry point for importing torchvision.

The PyPI torchvision wheel is a CUDA build; beside the CPU torch its compiled extension
cannot load, and `import torchvision` then fails while registering fake kernels for
`torchvision::nms`. Segmentation models use none of the compiled ops, so when (and only
when) the extension did not load we define the missing op schemas and import again.
"""

from __future__ import annotations

import contextlib
import sys
import types

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


def _is_compile_supported(device_type) -> bool:
    """torchvision.ops' one use of torch._dynamo, which imports it when first called."""
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


@contextlib.contextmanager
def _dynamo_deferred():
    """While torchvision imports, `torch._dynamo.utils` is a stand-in holding one function.

    torchvision.ops imports torch._dynamo for that one function, and importing torch._dynamo
    takes 1.5 s of every process's start (a scoring actor's, every CLI command's) though
    madmine never compiles. The stand-ins leave sys.modules afterwards, so a later real
    import (torch.compile, ONNX export) gets the real module.
    """
    names = ("torch._dynamo", "torch._dynamo.utils")
    if any(name in sys.modules for name in names):
        yield
        return
    stand_ins = {name: types.ModuleType(name) for name in names}
    stand_ins["torch._dynamo.utils"].is_compile_supported = _is_compile_supported
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def import_torchvision():
    """Return the torchvision module, repairing the import on CPU-only machines."""
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "models"):
        return sys.modules["torchvision"]
    with _dynamo_deferred():
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

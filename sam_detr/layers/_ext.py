"""Lazy access to the compiled extension `sam_detr._C`.

The extension is imported the first time an op needs it. Where it is missing, or was built without
kernels for the device of the inputs, the ops warn once and use their PyTorch path.
"""
import warnings
from typing import Optional

import torch

_ext = None
_import_error: Optional[BaseException] = None
_imported = False
_warned = set()


def get_extension():
    """Returns the `sam_detr._C` module, or None when it cannot be imported."""
    global _ext, _import_error, _imported
    if not _imported:
        _imported = True
        try:
            from sam_detr import _C

            _ext = _C
        except ImportError as e:  # not built, or built against another torch
            _import_error = e
    return _ext


def kernel_available(op: str, device: torch.device) -> bool:
    """True when `sam_detr._C` is importable and holds the kernels of `op` (`<op>_forward`, ...) for `device`."""
    ext = get_extension()
    if ext is None or not hasattr(ext, f"{op}_forward"):
        return False
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return bool(ext.with_cuda())
    return False


def unavailable_reason(op: str, device: torch.device) -> str:
    ext = get_extension()
    if ext is None:
        return f"sam_detr._C could not be imported ({_import_error})"
    if not hasattr(ext, f"{op}_forward"):
        return f"sam_detr._C has no {op} kernels (it was built from older sources)"
    return f"sam_detr._C was built without {device.type} kernels"


def warn_fallback(op: str, device: torch.device) -> None:
    """Warns once per (op, device type) that the PyTorch path of `op` is used."""
    key = (op, device.type)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(
        f"{op}: {unavailable_reason(op, device)}; using the slower PyTorch implementation. "
        "Build the extension with `pip install --no-build-isolation -e .` (see README).",
        RuntimeWarning,
        stacklevel=3,
    )

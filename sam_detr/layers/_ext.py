"""Lazy access to the compiled extension `sam_detr._C`.

The extension is imported the first time an op needs it. Where an op has no compiled kernel for the
device of its inputs (`fall_back`): CUDA tensors raise an error saying how to rebuild the extension, since
the PyTorch path would run far slower and with many times the memory (a multi-GPU training would rather
run out of memory than fail plainly); with SAM_DETR_PYTORCH_FALLBACK=1 they warn once and take the
PyTorch path. Other devices (CPU without the extension) warn once and take the PyTorch path.
"""
import os
import warnings
from typing import Optional

import torch

_ext = None
_import_error: Optional[BaseException] = None
_imported = False
_warned = set()

FALLBACK_ENV = "SAM_DETR_PYTORCH_FALLBACK"
REBUILD = (
    "Rebuild it with the CUDA kernels, with a CUDA toolkit at hand (CUDA_HOME holding bin/nvcc; no GPU needed): "
    "`FORCE_CUDA=1 pip install --no-build-isolation -e .` in the repository (README, Compiled ops)"
)


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


def missing_kernel_message(op: str, device: torch.device) -> str:
    """The error for `op` on `device` where it has no compiled kernel: why, and how to rebuild."""
    return (
        f"{op}: {unavailable_reason(op, device)}, so {device.type} tensors would take the PyTorch path (far "
        f"slower, with many times the memory). {REBUILD}; or set {FALLBACK_ENV}=1 to take the PyTorch path anyway."
    )


def fall_back(op: str, device: torch.device) -> None:
    """Called where `op` has no compiled kernel for `device`, before it takes its PyTorch path.

    Raises RuntimeError (`missing_kernel_message`) for CUDA devices unless $SAM_DETR_PYTORCH_FALLBACK is 1;
    otherwise warns once per (op, device type).
    """
    if device.type == "cuda" and os.environ.get(FALLBACK_ENV) != "1":
        raise RuntimeError(missing_kernel_message(op, device))
    warn_fallback(op, device)


def warn_fallback(op: str, device: torch.device) -> None:
    """Warns once per (op, device type) that the PyTorch path of `op` is used (through `fall_back`)."""
    key = (op, device.type)
    if key in _warned:
        return
    _warned.add(key)
    build = REBUILD if device.type == "cuda" else "Build it with `pip install --no-build-isolation -e .` (README)"
    warnings.warn(
        f"{op}: {unavailable_reason(op, device)}; using the slower PyTorch implementation. {build}.",
        RuntimeWarning,
        stacklevel=4,  # the caller of the op
    )

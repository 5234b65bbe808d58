"""Mixed precision helpers shared by the criterion and the models' inference."""
from typing import Optional

import torch

__all__ = ["HALF_DTYPES", "at_least_float32", "half_dtype"]

# the dtypes autocast computes in besides float32
HALF_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def half_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    """"bfloat16" / "float16" -> the torch dtype; None (float32, no autocast) stays None."""
    if name is None:
        return None
    if name not in HALF_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(HALF_DTYPES)} or None (float32), got {name!r}")
    return HALF_DTYPES[name]


def at_least_float32(outputs):
    """Dicts, lists and tuples of tensors with the float16 / bfloat16 tensors cast to float32; float32 and
    float64 ones (and anything else) are kept as they are."""
    if isinstance(outputs, dict):
        return {k: at_least_float32(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(at_least_float32(v) for v in outputs)
    if isinstance(outputs, torch.Tensor) and outputs.dtype in (torch.float16, torch.bfloat16):
        return outputs.float()
    return outputs

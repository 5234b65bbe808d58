"""The (H_l, W_l) of flattened feature levels as Python ints, also while `torch.export` traces a model.

The levels' shapes travel as an (L, 2) int64 tensor (the deformable attention kernel reads it). Code that
needs them as ints (to split the tokens into levels, to build a level's grid) reads them back with
`level_shapes`. In eager mode these are plain ints. While `torch.export` traces (the ONNX export), the
tensor is computed in the graph from the symbolic image size, so reading it back gives data-dependent
("unbacked") sizes: `level_shapes` tells the tracer that each is positive and, given the number of
tokens, that the levels fill them exactly, which is what lets splits and reshapes by these sizes trace for
any image size.
"""
from typing import List, Optional, Tuple

import torch

__all__ = ["level_shapes", "shapes_tensor"]


def level_shapes(spatial_shapes: torch.Tensor, num_tokens: Optional[int] = None) -> List[Tuple[int, int]]:
    """(L, 2) int64 (H_l, W_l) -> [(H_l, W_l), ...] ints.

    Args:
        spatial_shapes: the levels' shapes.
        num_tokens: S, the length of the flattened sequence, where known: sum_l H_l * W_l must equal it.
    """
    shapes = [(h, w) for h, w in spatial_shapes.tolist()]
    if not torch.compiler.is_exporting():  # plain ints (the jit tracer's sizes would be tensors here)
        return shapes
    for h, w in shapes:
        torch._check(h > 0)
        torch._check(w > 0)
    if num_tokens is not None:
        torch._check(sum(h * w for h, w in shapes) == num_tokens)
    return shapes


def shapes_tensor(maps, device: Optional[torch.device] = None) -> torch.Tensor:
    """Per level a (..., H_l, W_l) tensor -> (L, 2) int64 (H_l, W_l), on the first map's device (or `device`).

    Built from the sizes one by one, so that `torch.export` records them as the symbolic sizes they are
    (a tensor made from whole `torch.Size` objects would be a constant of the example's sizes).
    """
    device = maps[0].device if device is None else device
    return torch.tensor([[m.shape[-2], m.shape[-1]] for m in maps], dtype=torch.long, device=device)

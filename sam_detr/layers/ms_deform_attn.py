"""Multi-scale deformable attention (Deformable DETR): the op, its PyTorch path and the module.

Shapes, with N the batch, S the number of value tokens over all levels, M heads of D channels, Lq
queries, L levels and P points per level and head:

    value               (N, S, M, D)
    spatial_shapes      (L, 2) int64, (H_l, W_l) of each level
    level_start_index   (L,) int64, offset of each level in S
    sampling_locations  (N, Lq, M, L, P, 2), (x, y) normalised to [0, 1] over the padded level
    attention_weights   (N, Lq, M, L, P)
    output              (N, Lq, M * D)

A location (x, y) samples pixel coordinates (x * W_l - 0.5, y * H_l - 0.5) bilinearly with zero padding,
i.e. `grid_sample(align_corners=False)` on `2 * loc - 1`, as the official kernel does.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import _ext
from .level_shapes import level_shapes

__all__ = [
    "ms_deform_attn",
    "ms_deform_attn_pytorch",
    "ms_deform_attn_flop_jit",
    "FLOP_HANDLES",
    "MSDeformAttnFunction",
    "MSDeformAttnOp",
    "MSDeformAttn",
]


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The computation in plain PyTorch (one `grid_sample` per level); see the module doc.

    It is also the path the ONNX export records (`ms_deform_attn` takes it while `torch.export` traces):
    standard operators only (ONNX GridSample), any level sizes. Locations and weights are cast to value's
    dtype (`grid_sample` needs one dtype).
    """
    del level_start_index  # the levels are contiguous in S, in order
    sampling_locations = sampling_locations.to(value.dtype)
    attention_weights = attention_weights.to(value.dtype)
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    shapes = level_shapes(spatial_shapes, S)
    value_list = value.split([h * w for h, w in shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1
    output = None
    for lvl, (h, w) in enumerate(shapes):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        value_l = value_list[lvl].flatten(2).transpose(1, 2).reshape(N * M, D, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid_l = sampling_grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        # (N, Lq, M, P) -> (N*M, 1, Lq, P); each level's weighted sum added at once (no stack of all levels)
        weights = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(N * M, 1, Lq, P)
        level_output = (sampled * weights).sum(-1)  # (N*M, D, Lq)
        output = level_output if output is None else output + level_output
    return output.view(N, M * D, Lq).transpose(1, 2).contiguous()


class MSDeformAttnFunction(Function):
    """Autograd wrapper of the compiled kernels (`sam_detr._C`); fvcore keys its FLOP handle on this name.

    Takes contiguous inputs whose dtypes already follow the kernels' rule (see `ms_deform_attn`).
    The backward is not differentiable itself (no double backward).
    """

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        ext = _ext.get_extension()
        output = ext.ms_deform_attn_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        ext = _ext.get_extension()
        grad_value, grad_loc, grad_attn = ext.ms_deform_attn_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output.contiguous()
        )
        return grad_value, None, None, grad_loc, grad_attn


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention; the compiled kernel where it was built for the device.

    Shapes as in the module doc. Dtypes: the output has value's dtype. Locations and weights are used
    in the "op math" precision of value: float32 for float16 / bfloat16 values (a half-precision
    location is off by up to 2^-11 of the map, 0.08 px on a 167-px level), value's dtype otherwise;
    they are cast to it here, so under CUDA autocast (value float16 from its projection, locations and
    softmax weights float32) nothing is lost. The CPU kernels take float32 / float64 only, so on CPU
    float16 / bfloat16 values are computed in float32 and the output is cast back. Gradients come back
    in each input's own dtype.
    Where `sam_detr._C` lacks the CUDA kernels, CUDA inputs raise an error saying how to rebuild it
    (SAM_DETR_PYTORCH_FALLBACK=1 takes `ms_deform_attn_pytorch` instead, with a warning); where it is missing,
    CPU inputs warn once and take `ms_deform_attn_pytorch`. While `torch.export` traces (ONNX export), it is
    `ms_deform_attn_pytorch`.
    """
    if torch.compiler.is_exporting():  # the ONNX export records standard operators
        return ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if not _ext.kernel_available("ms_deform_attn", value.device):
        _ext.fall_back("ms_deform_attn", value.device)
        return ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    out_dtype = value.dtype
    if value.device.type == "cpu" and value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()
    loc_dtype = torch.float32 if value.dtype in (torch.float16, torch.bfloat16) else value.dtype
    index_args = dict(device=value.device, dtype=torch.int64)
    output = MSDeformAttnFunction.apply(
        value.contiguous(),
        spatial_shapes.to(**index_args).contiguous(),
        level_start_index.to(**index_args).contiguous(),
        sampling_locations.to(loc_dtype).contiguous(),
        attention_weights.to(loc_dtype).contiguous(),
    )
    return output.to(out_dtype)


def ms_deform_attn_flop_jit(inputs, outputs) -> int:
    """fvcore handle for `prim::PythonOp.MSDeformAttnFunction`: 5 * L * P * numel(output).

    Per output channel and sampling point, 4 multiply-adds for the bilinear interpolation and 1 for the
    attention weight (Deformable DETR, App. A.1); fvcore counts one multiply-add as one flop. The
    projections around the op are `linear`s that fvcore counts itself.
    inputs: the traced (value, spatial_shapes, level_start_index, sampling_locations, attention_weights).
    """
    _, _, _, L, P, _ = inputs[3].type().sizes()
    return 5 * L * P * math.prod(outputs[0].type().sizes())


FLOP_HANDLES = {"prim::PythonOp.MSDeformAttnFunction": ms_deform_attn_flop_jit}


class MSDeformAttnOp(nn.Module):
    """`ms_deform_attn` as a module without parameters: a forward hook on it sees exactly the locations and
    weights the op samples with (sam_detr.visualization draws them). Arguments and output as `ms_deform_attn`."""

    def forward(self, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def _may_pad(mask: torch.Tensor) -> bool:
    """False for a CPU padding mask that masks nothing (an unpadded batch), where zeroing the values would
    copy them twice (forward and backward) for nothing; True elsewhere: on an accelerator the test would
    wait for the device, and a traced or exported graph keeps the zeroing for any input."""
    if mask.device.type != "cpu" or torch.jit.is_tracing() or torch.compiler.is_exporting():
        return True
    return bool(mask.any())


def _per_point(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x (L, 2) or (N, Lq, L, 2), per level, broadcast over the offsets (N, Lq, M, L, P, 2).

    Where x takes no gradient it is spread over the points into a contiguous (..., 1, L, P, 2): the
    elementwise ops with the offsets then run along contiguous L * P * 2 values (a broadcast in the last,
    2-wide dimension runs element by element, several times slower); the values are the same. A
    gradient-taking x keeps the plain broadcast, whose backward sums over heads and points in one reduction.
    """
    *_, M, L, P, _ = offsets.shape
    lead = x.shape[:-2]
    if x.requires_grad and torch.is_grad_enabled():
        return x.reshape(*lead, 1, L, 1, 2)
    return x.reshape(*lead, 1, L, 1, 2).expand(*lead, 1, L, P, 2).contiguous()


def _points_plus(points: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """points (N, Lq, L, 2) + shifts (N, Lq, M, L, P, 2), broadcast over heads and points (see `_per_point`)."""
    return _per_point(points, shifts) + shifts


class MSDeformAttn(nn.Module):
    """The Deformable DETR attention module, with the official parameter names and initialisation.

    Args:
        d_model: channels C of queries and values (C = n_heads * head dim).
        n_levels: L, n_heads: M, n_points: P.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.op = MSDeformAttnOp()
        self._reset_parameters()

    def _reset_parameters(self):
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        # head h starts along direction 2*pi*h/M on the unit square; point i at distance i + 1
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) points (x, y) or (N, Lq, L, 4) boxes (cx, cy, w, h),
                normalised to [0, 1] over each padded level.
            input_flatten: (N, S, C), the levels flattened and concatenated.
            input_spatial_shapes: (L, 2) int64 (H_l, W_l); input_level_start_index: (L,) int64.
            input_padding_mask: (N, S) bool, True on padding (those values are zeroed).
        Returns:
            (N, Lq, C)
        """
        N, Lq, _ = query.shape
        _, S, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None and _may_pad(input_padding_mask):
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(N, S, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(N, Lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(N, Lq, self.n_heads, self.n_levels * self.n_points)
        # the sampling in float32 under autocast (float64 kept): locations summed in half precision are off by up
        # to 2^-9 of a level (bfloat16), and the op computes in float32 anyway
        offsets, weights, reference_points = (
            x.to(torch.promote_types(x.dtype, torch.float32)) for x in (offsets, weights, reference_points)
        )
        weights = F.softmax(weights, -1).view(N, Lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)
            locations = _points_plus(reference_points, offsets / _per_point(normalizer.to(offsets.dtype), offsets))
        elif reference_points.shape[-1] == 4:
            scale = _per_point(reference_points[..., 2:], offsets)
            locations = _points_plus(reference_points[..., :2], offsets / self.n_points * scale * 0.5)
        else:
            raise ValueError(
                f"reference_points must end in 2 (points) or 4 (boxes), got shape {tuple(reference_points.shape)}"
            )
        output = self.op(value, input_spatial_shapes, input_level_start_index, locations, weights)
        return self.output_proj(output)

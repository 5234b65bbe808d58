"""RoIAlign with torchvision's semantics and a fast, deterministic CPU kernel.

`roi_align` takes torchvision.ops.roi_align's arguments and returns the same values and input
gradients (bit for bit on x86-64). On CPU, for float32 and float64, it runs the compiled kernel of
`sam_detr._C`, parallel in the forward and in the backward, whose gradient does not depend on the
number of threads. Everywhere else (CUDA, float16, and while `torch.export` traces for the ONNX export) it
calls torchvision, which is the intended path there; only a missing CPU kernel warns.

Shapes, with N images, C channels, K boxes and output_size (PH, PW):

    input    (N, C, H, W)
    boxes    (K, 5) rows (batch_index, x1, y1, x2, y2), or a list of N tensors (L_i, 4) (x1, y1, x2, y2)
    output   (K, C, PH, PW)

Boxes are in the coordinates of the image the features come from: spatial_scale maps them onto
the feature map. They receive no gradient. Dtypes as torchvision's autocast kernel and detectron2's
ROIAlign: under autocast the op computes in float32 and returns input's dtype; otherwise the boxes are
cast to input's dtype.
"""

from typing import Sequence, Tuple, Union

import torch
import torchvision
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import _ext

__all__ = ["roi_align", "RoIAlignFunction"]

BoxesType = Union[torch.Tensor, Sequence[torch.Tensor]]


class RoIAlignFunction(Function):
    """Autograd wrapper of the compiled CPU kernels (`sam_detr._C`). Its name is what fvcore sees."""

    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ext = _ext.get_extension()
        output = ext.roi_align_forward(
            input, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned
        )
        ctx.save_for_backward(rois)
        ctx.params = (output_size, spatial_scale, sampling_ratio, aligned)
        ctx.input_shape = input.shape
        # the kernel computes the gradient channels-last; it stays so when the input is
        ctx.channels_last = input.is_contiguous(memory_format=torch.channels_last)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        (rois,) = ctx.saved_tensors
        output_size, spatial_scale, sampling_ratio, aligned = ctx.params
        n, c, h, w = ctx.input_shape
        ext = _ext.get_extension()
        grad_input = ext.roi_align_backward(
            grad_output,
            rois,
            spatial_scale,
            output_size[0],
            output_size[1],
            n,
            c,
            h,
            w,
            sampling_ratio,
            aligned,
            ctx.channels_last,
        )
        return grad_input, None, None, None, None, None


def _output_size(output_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"output_size must be a positive int or a pair of them, got {output_size!r}")
    return size


def _boxes_to_rois(boxes: BoxesType, input: torch.Tensor) -> torch.Tensor:
    """(K, 5) rois from either box format, checked against `input`."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes as a tensor must have shape (K, 5), got {tuple(boxes.shape)}")
        rois = boxes
    elif isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
                shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
                raise ValueError(f"boxes[{i}] must be a tensor of shape (L, 4), got {shape}")
        if len(boxes) == 0:
            rois = input.new_zeros((0, 5))
        else:
            ids = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
            rois = torch.cat([torch.cat(ids), torch.cat(list(boxes))], dim=1)
    else:
        raise TypeError(f"boxes must be a Tensor (K, 5) or a list of Tensors (L, 4), got {type(boxes).__name__}")
    if rois.device != input.device:
        raise ValueError(f"boxes ({rois.device}) must be on the device of input ({input.device})")
    return rois


def roi_align(
    input: torch.Tensor,
    boxes: BoxesType,
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """RoIAlign (Mask R-CNN), torchvision.ops.roi_align's semantics; see the module doc for shapes.

    Args:
        input: (N, C, H, W) features, any memory layout.
        boxes: (K, 5) tensor with the batch index first, or a list of N tensors (L_i, 4), in
            (x1, y1, x2, y2) image coordinates; on input's device. They are cast to input's dtype (as
            detectron2's ROIAlign does); under autocast for input's device both are cast to float32 (unless
            input is float64) and the output back to input's dtype, as torchvision's autocast kernel does.
        output_size: (PH, PW) bins, or one int for both.
        spatial_scale: feature-map coordinate = spatial_scale * image coordinate.
        sampling_ratio: samples per bin along each axis; <= 0 picks ceil(roi size / bins) per RoI.
        aligned: shift the boxes by -0.5 pixel (Detectron2's ROIAlignV2, used by SAM-DETR).
    Returns:
        (K, C, PH, PW)
    """
    if not isinstance(input, torch.Tensor) or input.dim() != 4:
        shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"input must be a tensor of shape (N, C, H, W), got {shape}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
    size = _output_size(output_size)
    rois = _boxes_to_rois(boxes, input)
    out_dtype = input.dtype
    if torch.is_autocast_enabled(input.device.type) and input.dtype != torch.float64:
        input = input.float()
    rois = rois.to(input.dtype)
    # torchvision's op also while torch.export traces (the ONNX export records it as ONNX RoiAlign, which has
    # its semantics: half_pixel for aligned, output_half_pixel otherwise, the same adaptive sampling)
    if torch.compiler.is_exporting() or input.device.type != "cpu" or input.dtype not in (torch.float32, torch.float64):
        output = torchvision.ops.roi_align(input, rois, size, spatial_scale, sampling_ratio, aligned)
    elif not _ext.kernel_available("roi_align", input.device):
        _ext.fall_back("roi_align", input.device)
        output = torchvision.ops.roi_align(input, rois, size, spatial_scale, sampling_ratio, aligned)
    else:
        output = RoIAlignFunction.apply(input, rois, size, float(spatial_scale), int(sampling_ratio), bool(aligned))
    return output.to(out_dtype)

"""Box helpers on (..., 4) tensors; IoU comes from torchvision.ops.

The generalized IoUs are torchvision's arithmetic, guarded where the official code asserts (and a run of it
crashes, e.g. on the boxes of a diverged prediction): a box whose corners are inverted counts as empty, and
an empty union or enclosing box divides by the smallest positive float instead of zero, so that two empty
boxes have a GIoU of 0 rather than NaN. Valid boxes get the same bits as torchvision's.
"""
import math
from typing import Optional

import torch
from torchvision.ops import box_convert, box_iou

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "delta_to_box",
    "box_to_delta",
    "pixel_boxes_normalised",
    "box_iou",
    "generalized_box_iou",
    "inverse_sigmoid",
    "paired_generalized_box_iou",
]


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, "cxcywh", "xyxy")


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, "xyxy", "cxcywh")


# the largest |log| scale change of a box side per step (Plain-DETR's `wh_ratio_clip` 16 / 1000)
MAX_LOG_SCALE = abs(math.log(16 / 1000))


def delta_to_box(reference: torch.Tensor, delta: torch.Tensor, max_size: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain-DETR's box reparameterisation (`delta2bbox`): a (..., 4) reference (cx, cy, w, h) in pixels and a
    delta (dx, dy, dw, dh) -> the box `(c + wh * d_xy, wh * exp(clamp(d_wh, +-log(1000 / 16))))`, its corners
    clipped to [0, W] x [0, H] of `max_size` (broadcastable to (..., 2), (W, H)), as (cx, cy, w, h)."""
    center = reference[..., :2] + reference[..., 2:] * delta[..., :2]
    size = reference[..., 2:] * delta[..., 2:].clamp(min=-MAX_LOG_SCALE, max=MAX_LOG_SCALE).exp()
    corners = torch.cat([center - size * 0.5, center + size * 0.5], -1)
    if max_size is not None:
        corners = torch.cat([corners[..., 0::2].clamp(min=0).clamp(max=max_size[..., :1]),
                             corners[..., 1::2].clamp(min=0).clamp(max=max_size[..., 1:])], -1)[..., [0, 2, 1, 3]]
    return box_xyxy_to_cxcywh(corners)


def pixel_boxes_normalised(boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """(B, Q, 4) boxes (cx, cy, w, h) in pixels (reparameterised) -> clipped to their image [0, W] x [0, H]
    and normalised by its size; image_sizes: (B, 2) int64, per image (H, W)."""
    corners = box_cxcywh_to_xyxy(boxes)
    size = image_sizes.flip(-1).repeat(1, 2).to(corners.dtype)[:, None]  # (B, 1, 4) (W, H, W, H)
    return box_xyxy_to_cxcywh(torch.minimum(corners.clamp(min=0), size) / size)


def box_to_delta(reference: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The inverse encoding (`bbox2delta`), in float32: (..., 4) references and boxes (cx, cy, w, h) in pixels
    -> `((g_xy - p_xy) / (p_wh + 0.1), log(g_wh / (p_wh + 0.1)))`. The + 0.1 is the official code's (its
    decoding has none)."""
    reference, boxes = reference.float(), boxes.float()
    size = reference[..., 2:] + 0.1
    return torch.cat([(boxes[..., :2] - reference[..., :2]) / size, torch.log(boxes[..., 2:] / size)], -1)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms to at least eps, as in every official repo."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (...,); an inverted box has no area."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _giou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """GIoU of broadcast (..., 4) xyxy boxes, with the guards of the module docstring; `eps` is added to both
    denominators (DINO's box_ops adds 1e-6)."""
    if boxes1.dtype in (torch.float16, torch.bfloat16):  # as torchvision: areas in float32
        boxes1, boxes2 = boxes1.float(), boxes2.float()
    tiny = torch.finfo(boxes1.dtype).tiny
    wh = (torch.min(boxes1[..., 2:], boxes2[..., 2:]) - torch.max(boxes1[..., :2], boxes2[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (_area(boxes1) + _area(boxes2) - inter).clamp(min=tiny)
    iou = inter / (union + eps)
    wh_c = (torch.max(boxes1[..., 2:], boxes2[..., 2:]) - torch.min(boxes1[..., :2], boxes2[..., :2])).clamp(min=0)
    area_c = (wh_c[..., 0] * wh_c[..., 1]).clamp(min=tiny)
    return iou - (area_c - union) / (area_c + eps)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Pairwise GIoU: (N, 4), (M, 4) xyxy -> (N, M), as torchvision's, guarded (see the module docstring);
    `eps`: added to the denominators."""
    return _giou(boxes1[:, None, :], boxes2[None, :, :], eps)


def paired_generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """GIoU of boxes1[i] with boxes2[i]: (N, 4), (N, 4) xyxy -> (N,).

    The same arithmetic as the diagonal of `generalized_box_iou` (by default no epsilon, unlike
    torchvision's `generalized_box_iou_loss`), without the N x N matrix.
    """
    return _giou(boxes1, boxes2, eps)

"""Plain-DETR's box reparameterisation (impiga/Plain-DETR `--reparam`): boxes in input pixels, refined by
pixel deltas, supervised by an L1 on the deltas."""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..layers.box_ops import box_cxcywh_to_xyxy, box_to_delta, box_xyxy_to_cxcywh, delta_to_box, pixel_boxes_normalised
from .box_coder import BoxCoder
from .transformer.plain_detr_proposals import pixel_anchors

__all__ = ["PixelDeltaBoxCoder"]


@dataclass(frozen=True)
class PixelDeltaBoxCoder(BoxCoder):
    """Boxes (cx, cy, w, h) in input pixels. A box is `delta_to_box(reference, delta)` (centre moved by the
    delta times the reference's size, sides scaled by exp of the delta, corners clipped to the image); the
    proposals refine `pixel_anchors`; targets are in pixels; the L1 loss and cost compare the deltas with
    the targets' deltas from the same reference (`box_to_delta`), which every prediction dict carries as
    "pred_deltas" and "pred_boxes_old" (the official names).

    Args:
        image_extent: (B, 1, 2) (W, H) in pixels that boxes are clipped to; set per batch by `for_batch`.
    """

    image_extent: Optional[torch.Tensor] = field(default=None, compare=False, repr=False)
    pixels = True

    def for_batch(self, image_extent: Optional[torch.Tensor]) -> "PixelDeltaBoxCoder":
        return PixelDeltaBoxCoder(image_extent)

    def target_boxes(self, gt_boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        return box_xyxy_to_cxcywh(gt_boxes)

    def normalised(self, boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        return pixel_boxes_normalised(boxes, image_sizes)

    def decode(self, reference: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if reference.shape[-1] != 4:
            raise ValueError(f"pixel deltas refine (..., 4) boxes, got a reference of shape {tuple(reference.shape)}")
        return delta_to_box(reference, delta, self.image_extent)

    def anchors(self, mask, spatial_shapes, strides=None):
        if strides is None:
            raise ValueError("pixel anchors need the strides of the token levels")
        return pixel_anchors(mask, spatial_shapes, strides)

    def propose(self, anchors: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self.decode(anchors, delta)

    def activate(self, boxes: torch.Tensor) -> torch.Tensor:
        return boxes

    def regression_outputs(self, reference: torch.Tensor, delta: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"pred_deltas": delta, "pred_boxes_old": reference}

    def l1_cost(self, outputs, b, target_boxes):
        target_deltas = box_to_delta(outputs["pred_boxes_old"][b][:, None], target_boxes[None])
        return (outputs["pred_deltas"][b][:, None] - target_deltas).abs().sum(-1)

    def l1_loss(self, outputs, index, target_boxes):
        target_deltas = box_to_delta(outputs["pred_boxes_old"][index], target_boxes)
        return F.l1_loss(outputs["pred_deltas"][index], target_deltas, reduction="none")

    def in_levels(self, boxes: torch.Tensor, valid_ratios: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("pixel boxes have no normalised form for deformable attention here")

    def padded_pixels(self, boxes, valid_ratio, padded_size):
        # pixels of the image are pixels of the padded map (padding is bottom/right)
        return box_cxcywh_to_xyxy(boxes)

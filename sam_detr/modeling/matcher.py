"""Hungarian matching of predictions to ground truth, shared by every DETR-style method."""
from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..layers.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from .box_coder import BoxCoder, SigmoidBoxCoder

__all__ = ["HungarianMatcher"]

# the cost given to a non-finite one: such a pair is matched only when nothing else is left
_NON_FINITE_COST = 1e9


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising `cost_class * C_cls + cost_bbox * L1 + cost_giou * (-GIoU)`.

    Args:
        class_cost_type: "focal" (the focal-loss cost of Deformable DETR and its successors, evaluated at
            the target classes) or "softmax" (DETR's `-p[target class]`).
        focal_alpha, focal_gamma: of the focal cost.
        box_coder: the box space, whose L1 cost is used (`BoxCoder.l1_cost`; the criterion's).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        class_cost_type: str = "focal",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_coder: BoxCoder = SigmoidBoxCoder(),
    ):
        super().__init__()
        if class_cost_type not in ("focal", "softmax"):
            raise ValueError(f"class_cost_type must be 'focal' or 'softmax', got {class_cost_type!r}")
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.class_cost_type = class_cost_type
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_coder = box_coder

    def class_cost(self, logits: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        """(Q, K) logits, (T,) class ids -> (Q, T)"""
        if self.class_cost_type == "softmax":
            return -logits.softmax(-1)[:, tgt_ids]
        prob = logits.sigmoid()
        alpha, gamma = self.focal_alpha, self.focal_gamma
        neg = (1 - alpha) * (prob**gamma) * (-(1 - prob + 1e-8).log())
        pos = alpha * ((1 - prob) ** gamma) * (-(prob + 1e-8).log())
        return pos[:, tgt_ids] - neg[:, tgt_ids]

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: "pred_logits" (B, Q, K) and "pred_boxes" (B, Q, 4) (cx, cy, w, h) in the box coder's
                space, and whatever else its L1 cost reads.
            targets: per image, "labels" (T_b,) int64 and "boxes" (T_b, 4) (cx, cy, w, h), in that space.
        Returns:
            per image, (query indices, target indices): two int64 CPU tensors of length min(Q, T_b).
        """
        indices = []
        for b, target in enumerate(targets):
            tgt_ids, tgt_boxes = target["labels"], target["boxes"]
            if len(tgt_ids) == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            out_boxes = outputs["pred_boxes"][b]
            cost = (
                self.cost_bbox * self.box_coder.l1_cost(outputs, b, tgt_boxes)
                + self.cost_class * self.class_cost(outputs["pred_logits"][b], tgt_ids)
                + self.cost_giou * -generalized_box_iou(box_cxcywh_to_xyxy(out_boxes), box_cxcywh_to_xyxy(tgt_boxes))
            )
            # half precision to float32; a float64 model keeps its precision (near-equal costs of float64
            # predictions stay apart, as in the official code)
            cost = cost.to(torch.promote_types(cost.dtype, torch.float32)).cpu()
            # NaN or inf predictions (a diverged run, where the official code fails an assertion): matched last,
            # so that the matching completes and the trainer stops at the non-finite losses, naming them
            cost = torch.where(torch.isfinite(cost), cost, torch.full_like(cost, _NON_FINITE_COST))
            src, tgt = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(src, dtype=torch.int64), torch.as_tensor(tgt, dtype=torch.int64)))
        return indices

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}, "
            f"class_cost_type={self.class_cost_type!r}"
        )

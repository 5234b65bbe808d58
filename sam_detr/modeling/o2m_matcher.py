"""MS-DETR's one-to-many assignment (Atten4Vis/MS-DETR `Stage2Assigner`, after DETA), as a matcher that a
`LossGroup` of `SetCriterion` uses."""
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..layers.box_ops import box_cxcywh_to_xyxy, box_iou

__all__ = ["OneToManyMatcher"]


class OneToManyMatcher(nn.Module):
    """Assigns each target several queries, per image, from the quality `C = coef_box * IoU + coef_class * p`
    (IoU of the boxes, p the sigmoid score of the target's class):

    1. each query's best target; the query is positive when that quality is >= `threshold`;
    2. low-quality matches: each target's best query is positive too (it keeps its own best target);
    3. at most `int(positive_fraction * Q)` positives, a random subset when there are more (the only random
       step: it does not trigger while fewer queries pass);
    4. a target that c positives chose gets its top-min(c, k) queries by C among all queries;
    5. the pairs sorted by C ascending: a query given to several targets appears once per target, and the
       classification loss's one-hot scatter keeps the last, the target of highest quality.

    Args:
        threshold: the quality a positive reaches; k: the most queries per target;
        positive_fraction: the most positives per image, as a fraction of the queries;
        coef_box, coef_class: the quality's mix of IoU and class score.
    """

    def __init__(
        self,
        threshold: float = 0.4,
        k: int = 6,
        positive_fraction: float = 0.25,
        coef_box: float = 0.7,
        coef_class: float = 0.3,
    ):
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not 0 < positive_fraction <= 1:
            raise ValueError(f"positive_fraction must be in (0, 1], got {positive_fraction}")
        self.threshold = threshold
        self.k = k
        self.positive_fraction = positive_fraction
        self.coef_box = coef_box
        self.coef_class = coef_class

    def quality(self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, gt_boxes: torch.Tensor):
        """(Q, K) logits, (Q, 4) boxes, (T,) labels, (T, 4) boxes, (cx, cy, w, h) -> (T, Q) quality C."""
        iou = box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt_boxes))
        C = self.coef_box * iou + self.coef_class * logits.sigmoid()[:, labels]
        # a non-finite prediction (a diverging run) never qualifies; the trainer stops at its losses
        return torch.nan_to_num(C, nan=0.0, posinf=0.0, neginf=0.0).T

    def match_image(self, C: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(T, Q) quality -> (query indices, target indices), sorted by quality ascending."""
        T, Q = C.shape
        best_quality, best_target = C.max(0)
        positive = best_quality >= self.threshold
        positive[C.topk(1, dim=1).indices.flatten()] = True
        queries = positive.nonzero().flatten()
        keep = int(self.positive_fraction * Q)
        if len(queries) > keep:
            queries = queries[torch.randperm(len(queries), device=C.device)[:keep]]
        targets, counts = best_target[queries].unique(return_counts=True)
        k = min(self.k, Q)
        scores, top = C[targets].topk(k, dim=1)  # (T', k): each chosen target's best queries
        first = torch.arange(k, device=C.device)[None] < counts[:, None]
        scores, top = scores[first], top[first]
        targets = targets[:, None].expand(-1, k)[first]
        order = scores.argsort()
        return top[order], targets[order]

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: "pred_logits" (B, Q, K) and "pred_boxes" (B, Q, 4) normalised (cx, cy, w, h).
            targets: per image, "labels" (T_b,) int64 and "boxes" (T_b, 4) normalised (cx, cy, w, h).
        Returns:
            per image, (query indices, target indices): int64 tensors on the predictions' device, each
            target at most k times, a query possibly under several targets.
        """
        indices = []
        for b, target in enumerate(targets):
            if len(target["labels"]) == 0:
                empty = torch.empty(0, dtype=torch.int64, device=outputs["pred_logits"].device)
                indices.append((empty, empty))
                continue
            C = self.quality(outputs["pred_logits"][b], outputs["pred_boxes"][b], target["labels"], target["boxes"])
            indices.append(self.match_image(C))
        return indices

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold}, k={self.k}, positive_fraction={self.positive_fraction}, "
            f"coef_box={self.coef_box}, coef_class={self.coef_class}"
        )

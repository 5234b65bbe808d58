"""From the last decoder layer's predictions to Detectron2 `Instances` (before `detector_postprocess`)."""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from ..layers.box_ops import box_cxcywh_to_xyxy

__all__ = ["topk_postprocess", "softmax_postprocess"]


def _to_instances(scores, labels, boxes_cxcywh, image_size: Tuple[int, int]) -> Instances:
    h, w = image_size
    boxes = box_cxcywh_to_xyxy(boxes_cxcywh) * boxes_cxcywh.new_tensor([w, h, w, h])
    result = Instances(image_size)
    result.pred_boxes = Boxes(boxes)
    result.scores = scores
    result.pred_classes = labels
    return result


def topk_postprocess(
    logits: torch.Tensor, boxes: torch.Tensor, image_sizes: List[Tuple[int, int]], num_select: int = 100
) -> List[Instances]:
    """Focal models: the top `num_select` (query, class) pairs by sigmoid score, per image.

    Args:
        logits: (B, Q, K); boxes: (B, Q, 4) normalised (cx, cy, w, h).
        image_sizes: (h, w) of each image as fed to the model, before padding.
    Returns:
        per image, `Instances` of `min(num_select, Q * K)` detections in input-image pixels.
    """
    B, Q, K = logits.shape
    prob = logits.sigmoid().view(B, Q * K)
    scores, index = torch.topk(prob, min(num_select, Q * K), dim=1)
    query = torch.div(index, K, rounding_mode="floor")
    labels = index % K
    picked = torch.gather(boxes, 1, query.unsqueeze(-1).expand(-1, -1, 4))
    return [_to_instances(scores[b], labels[b], picked[b], image_sizes[b]) for b in range(B)]


def softmax_postprocess(
    logits: torch.Tensor, boxes: torch.Tensor, image_sizes: List[Tuple[int, int]], num_select: Optional[int] = None
) -> List[Instances]:
    """Softmax models (DETR): one detection per query, its best class other than "no object".

    Args:
        logits: (B, Q, K + 1), the last class being "no object"; boxes: (B, Q, 4) normalised (cx, cy, w, h).
        num_select: where below Q, only the `num_select` best-scoring queries are kept (the official code keeps
            all Q, which is what num_select >= Q gives).
    Returns:
        per image, `Instances` of min(Q, num_select) detections in input-image pixels.
    """
    scores, labels = F.softmax(logits, dim=-1)[..., :-1].max(-1)
    if num_select is not None and num_select < scores.shape[1]:
        scores, query = torch.topk(scores, num_select, dim=1)
        labels = torch.gather(labels, 1, query)
        boxes = torch.gather(boxes, 1, query.unsqueeze(-1).expand(-1, -1, 4))
    return [_to_instances(scores[b], labels[b], boxes[b], image_sizes[b]) for b in range(len(image_sizes))]

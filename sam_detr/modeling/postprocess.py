"""From the last decoder layer's predictions to detections: batched tensors (`topk_detections`,
`softmax_detections`, `boxes_to_pixels`: what an exported graph computes too), then Detectron2 `Instances`
per image (before `detector_postprocess`)."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from ..layers.box_ops import box_cxcywh_to_xyxy

__all__ = [
    "Detections", "topk_detections", "softmax_detections", "boxes_to_pixels", "detections_to_instances", "image_sizes_tensor",
    "topk_postprocess", "softmax_postprocess",
]

Detections = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # scores (B, K), labels (B, K), boxes (B, K, 4)


def topk_detections(logits: torch.Tensor, boxes: torch.Tensor, num_select: int = 100) -> Detections:
    """Focal models: the top `num_select` (query, class) pairs by sigmoid score, per image.

    Args:
        logits: (B, Q, K); boxes: (B, Q, 4) normalised (cx, cy, w, h).
    Returns:
        scores (B, N), labels (B, N) int64 and boxes (B, N, 4) normalised (cx, cy, w, h), best first,
        N = min(num_select, Q * K).
    """
    B, Q, K = logits.shape
    prob = logits.sigmoid().view(B, Q * K)
    scores, index = torch.topk(prob, min(num_select, Q * K), dim=1)
    query = torch.div(index, K, rounding_mode="floor")
    labels = index % K
    picked = torch.gather(boxes, 1, query.unsqueeze(-1).expand(-1, -1, 4))
    return scores, labels, picked


def softmax_detections(logits: torch.Tensor, boxes: torch.Tensor, num_select: Optional[int] = None) -> Detections:
    """Softmax models (DETR): one detection per query, its best class other than "no object".

    Args:
        logits: (B, Q, K + 1), the last class being "no object"; boxes: (B, Q, 4) normalised (cx, cy, w, h).
        num_select: where below Q, only the `num_select` best-scoring queries are kept, best first (the
            official code keeps all Q, in query order, which is what num_select >= Q gives).
    Returns:
        scores (B, N), labels (B, N) int64 and boxes (B, N, 4) normalised (cx, cy, w, h), N = min(Q, num_select).
    """
    scores, labels = F.softmax(logits, dim=-1)[..., :-1].max(-1)
    if num_select is not None and num_select < scores.shape[1]:
        scores, query = torch.topk(scores, num_select, dim=1)
        labels = torch.gather(labels, 1, query)
        boxes = torch.gather(boxes, 1, query.unsqueeze(-1).expand(-1, -1, 4))
    return scores, labels, boxes


def boxes_to_pixels(boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) normalised (cx, cy, w, h) and (B, 2) (h, w) -> (B, N, 4) (x1, y1, x2, y2) in pixels."""
    scale = image_sizes.flip(-1).repeat(1, 2).to(boxes.dtype)[:, None]  # (B, 1, 4) (w, h, w, h)
    return box_cxcywh_to_xyxy(boxes) * scale


def image_sizes_tensor(image_sizes: Sequence[Tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Per image (h, w) -> (B, 2) int64. The sizes may be 0-d tensors (Detectron2's `ImageList` while jit traces
    it, the FLOP counter): read as ints."""
    return torch.tensor([[int(h), int(w)] for h, w in image_sizes], dtype=torch.long, device=device).view(-1, 2)


def detections_to_instances(detections: Detections, image_sizes: torch.Tensor) -> List[Instances]:
    """Batched detections (normalised boxes) and (B, 2) int64 (h, w) -> per image, `Instances` in the pixels of
    its (h, w)."""
    scores, labels, boxes = detections
    boxes = boxes_to_pixels(boxes, image_sizes)
    results = []
    for b, image_size in enumerate(image_sizes.tolist()):
        result = Instances(tuple(image_size))
        result.pred_boxes = Boxes(boxes[b])
        result.scores = scores[b]
        result.pred_classes = labels[b]
        results.append(result)
    return results


def topk_postprocess(
    logits: torch.Tensor, boxes: torch.Tensor, image_sizes: List[Tuple[int, int]], num_select: int = 100
) -> List[Instances]:
    """`topk_detections` as `Instances` in input-image pixels, per image; image_sizes: (h, w) of each image as
    fed to the model, before padding."""
    sizes = image_sizes_tensor(image_sizes, boxes.device)
    return detections_to_instances(topk_detections(logits, boxes, num_select), sizes)


def softmax_postprocess(
    logits: torch.Tensor, boxes: torch.Tensor, image_sizes: List[Tuple[int, int]], num_select: Optional[int] = None
) -> List[Instances]:
    """`softmax_detections` as `Instances` in input-image pixels, per image; image_sizes: (h, w) of each image as
    fed to the model, before padding."""
    sizes = image_sizes_tensor(image_sizes, boxes.device)
    return detections_to_instances(softmax_detections(logits, boxes, num_select), sizes)

import itertools

import pytest
import torch

pytest.importorskip("detectron2", reason="sam_detr.modeling needs detectron2")

from sam_detr.layers import box_cxcywh_to_xyxy, generalized_box_iou  # noqa: E402
from sam_detr.modeling import HungarianMatcher  # noqa: E402


def _random_boxes(n, generator):
    cxcy = torch.rand(n, 2, generator=generator) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=generator) * 0.3 + 0.05
    return torch.cat([cxcy, wh], -1)


def _brute_force(cost):
    """The assignment of all targets minimising the total cost, by enumeration."""
    Q, T = cost.shape
    best = None
    for perm in itertools.permutations(range(Q), T):
        total = sum(cost[q, t] for t, q in enumerate(perm))
        if best is None or total < best:
            best = total
    return best


@pytest.mark.parametrize("class_cost_type", ["focal", "softmax"])
def test_optimal_assignment_and_cost(class_cost_type):
    g = torch.Generator().manual_seed(0)
    Q, K = 6, 5
    K_out = K + 1 if class_cost_type == "softmax" else K
    outputs = {
        "pred_logits": torch.randn(2, Q, K_out, generator=g),
        "pred_boxes": _random_boxes(2 * Q, g).view(2, Q, 4),
    }
    targets = [
        {"labels": torch.tensor([1, 3, 3]), "boxes": _random_boxes(3, g)},
        {"labels": torch.tensor([0]), "boxes": _random_boxes(1, g)},
    ]
    matcher = HungarianMatcher(2.0, 5.0, 2.0, class_cost_type=class_cost_type)
    indices = matcher(outputs, targets)
    for b, (src, tgt) in enumerate(indices):
        logits, boxes = outputs["pred_logits"][b], outputs["pred_boxes"][b]
        t = targets[b]
        if class_cost_type == "focal":
            p = logits.sigmoid()[:, t["labels"]]
            c_cls = 0.25 * (1 - p) ** 2 * -(p + 1e-8).log() - 0.75 * p**2 * -(1 - p + 1e-8).log()
        else:
            c_cls = -logits.softmax(-1)[:, t["labels"]]
        c_l1 = (boxes[:, None] - t["boxes"][None]).abs().sum(-1)
        c_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(t["boxes"]))
        cost = 5 * c_l1 + 2 * c_cls + 2 * c_giou
        assert len(src) == len(t["labels"]) and sorted(tgt.tolist()) == list(range(len(t["labels"])))
        chosen = sum(cost[s, j] for s, j in zip(src.tolist(), tgt.tolist()))
        assert chosen == pytest.approx(float(_brute_force(cost)), rel=1e-6)


def test_empty_targets_and_non_finite_costs():
    matcher = HungarianMatcher()
    outputs = {"pred_logits": torch.randn(1, 4, 3), "pred_boxes": torch.rand(1, 4, 4)}
    src, tgt = matcher(outputs, [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}])[0]
    assert src.numel() == 0 and tgt.numel() == 0 and src.dtype == torch.int64
    # a diverged prediction (where the official code fails an assertion) is matched last; the losses then
    # come out non-finite and the trainer stops naming them (tests/tools/test_resume.py)
    outputs["pred_boxes"][0, 1, 0] = float("nan")
    outputs["pred_logits"][0, 2] = float("nan")
    targets = [{"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.6, 0.1, 0.4]])}]
    src, tgt = matcher(outputs, targets)[0]
    assert sorted(src.tolist()) == [0, 3] and sorted(tgt.tolist()) == [0, 1]
    outputs["pred_boxes"][:] = float("nan")
    src, tgt = matcher(outputs, targets)[0]
    assert len(src) == len(tgt) == 2


@pytest.mark.parametrize("class_cost_type", ["focal", "softmax"])
def test_degenerate_boxes_give_finite_costs(class_cost_type):
    """Boxes of zero width or height, also on a target of zero size at the same place, and inverted boxes:
    finite costs, where the official GIoU asserts or divides zero by zero."""
    matcher = HungarianMatcher(class_cost_type=class_cost_type)
    boxes = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.2, 0.3, 0.0, 0.4], [0.7, 0.7, 0.3, 0.0]]])
    outputs = {"pred_logits": torch.randn(1, 3, 4), "pred_boxes": boxes}
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.2, 0.3, 0.0, 0.4]])}]
    cost = -generalized_box_iou(box_cxcywh_to_xyxy(boxes[0]), box_cxcywh_to_xyxy(targets[0]["boxes"]))
    assert torch.isfinite(cost).all()
    src, tgt = matcher(outputs, targets)[0]
    assert len(src) == 2
    inverted = torch.tensor([[0.6, 0.6, 0.4, 0.4], [0.1, 0.1, 0.3, 0.3]])
    giou = generalized_box_iou(inverted, inverted)
    assert torch.isfinite(giou).all() and giou[0, 0] == 0 and giou[1, 1] == 1


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="class_cost_type"):
        HungarianMatcher(class_cost_type="sigmoid")
    with pytest.raises(ValueError, match="all matching costs"):
        HungarianMatcher(0, 0, 0)

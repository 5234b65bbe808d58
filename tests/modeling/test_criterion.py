import math

import pytest
import torch

pytest.importorskip("detectron2", reason="sam_detr.modeling needs detectron2")

from sam_detr.layers import box_cxcywh_to_xyxy, generalized_box_iou  # noqa: E402
from sam_detr.modeling import HungarianMatcher, SetCriterion  # noqa: E402
from sam_detr.modeling.criterion import LossGroup, sigmoid_focal_loss  # noqa: E402

WEIGHTS = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def _outputs(B, Q, K, generator, aux=0):
    def one():
        boxes = torch.cat([torch.rand(B, Q, 2, generator=generator) * 0.5 + 0.25,
                           torch.rand(B, Q, 2, generator=generator) * 0.3 + 0.05], -1)
        return {"pred_logits": torch.randn(B, Q, K, generator=generator, requires_grad=True),
                "pred_boxes": boxes.requires_grad_()}
    out = one()
    out["aux_outputs"] = [one() for _ in range(aux)]
    return out


def _targets():
    return [
        {"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
    ]


def _focal_reference(logits, target_classes, num_boxes, alpha=0.25, gamma=2.0):
    """Sum over (image, query, class) of the focal term, / num_boxes, written element by element."""
    total = 0.0
    B, Q, K = logits.shape
    for b in range(B):
        for q in range(Q):
            for k in range(K):
                x = float(logits[b, q, k])
                t = 1.0 if target_classes[b][q] == k else 0.0
                p = 1 / (1 + math.exp(-x))
                ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
                p_t = p * t + (1 - p) * (1 - t)
                a_t = alpha * t + (1 - alpha) * (1 - t)
                total += a_t * ce * (1 - p_t) ** gamma
    return total / num_boxes


def test_focal_losses_match_reference_and_normalisation():
    g = torch.Generator().manual_seed(0)
    outputs = _outputs(2, 5, 4, g, aux=2)
    targets = _targets()
    criterion = SetCriterion(4, HungarianMatcher(), WEIGHTS)
    losses = criterion(outputs, targets)
    assert set(losses) == {f"{k}{s}" for k in WEIGHTS for s in ("", "_0", "_1")}
    indices = HungarianMatcher()(outputs, targets)
    num_boxes = 2.0
    target_classes = [[4] * 5, [4] * 5]
    for (src, tgt) in [indices[0]]:
        for s, t in zip(src.tolist(), tgt.tolist()):
            target_classes[0][s] = int(targets[0]["labels"][t])
    ref = _focal_reference(outputs["pred_logits"].detach(), target_classes, num_boxes)
    assert losses["loss_ce"].item() == pytest.approx(2.0 * ref, rel=1e-5)
    src, tgt = indices[0]
    pred = outputs["pred_boxes"][0, src].detach()
    gt = targets[0]["boxes"][tgt]
    l1 = (pred - gt).abs().sum() / num_boxes
    giou = (1 - torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt)))).sum() / num_boxes
    assert losses["loss_bbox"].item() == pytest.approx(5.0 * l1.item(), rel=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(2.0 * giou.item(), rel=1e-6)
    sum(losses.values()).backward()
    assert outputs["pred_logits"].grad.abs().sum() > 0
    assert outputs["aux_outputs"][1]["pred_boxes"].grad.abs().sum() > 0


def test_softmax_loss_uses_no_object_weight():
    g = torch.Generator().manual_seed(1)
    outputs = _outputs(2, 4, 4, g)  # 3 classes + no-object
    targets = _targets()
    criterion = SetCriterion(3, HungarianMatcher(1, 5, 2, class_cost_type="softmax"), WEIGHTS,
                             class_loss_type="softmax", eos_coef=0.1)
    losses = criterion(outputs, targets)
    indices = criterion.matcher(outputs, targets)
    target = torch.full((2, 4), 3)
    target[0, indices[0][0]] = targets[0]["labels"][indices[0][1]]
    logp = outputs["pred_logits"].detach().log_softmax(-1)
    w = torch.where(target == 3, 0.1, 1.0)
    ref = -(w * logp.gather(-1, target[..., None])[..., 0]).sum() / w.sum()
    assert losses["loss_ce"].item() == pytest.approx(2.0 * ref.item(), rel=1e-6)


def test_empty_batch_and_encoder_outputs():
    g = torch.Generator().manual_seed(2)
    outputs = _outputs(1, 3, 2, g)
    outputs["enc_outputs"] = _outputs(1, 7, 2, g)
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    losses = SetCriterion(2, HungarianMatcher(), WEIGHTS)(outputs, empty)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    # num_boxes is clamped to 1: every logit is a negative
    ref = _focal_reference(outputs["pred_logits"].detach(), [[2] * 3], 1.0)
    assert losses["loss_ce"].item() == pytest.approx(2.0 * ref, rel=1e-5)
    assert {"loss_ce_enc", "loss_bbox_enc", "loss_giou_enc"} <= set(losses)


def test_encoder_targets_are_class_agnostic():
    torch.manual_seed(3)
    outputs = _outputs(1, 3, 4, torch.Generator().manual_seed(3))
    enc = _outputs(1, 6, 4, torch.Generator().manual_seed(4))
    outputs["enc_outputs"] = enc
    targets = [{"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])}]
    criterion = SetCriterion(4, HungarianMatcher(), WEIGHTS)
    losses = criterion(outputs, targets)
    binary = [{"labels": torch.tensor([0]), "boxes": targets[0]["boxes"]}]
    expected = criterion.layer_losses(enc, binary, 1.0, criterion.matcher(enc, binary), WEIGHTS, suffix="_enc")
    for k, v in expected.items():
        torch.testing.assert_close(losses[k], v)


class _RecordingMatcher(HungarianMatcher):
    """The Hungarian matcher, recording what it was asked to match."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, outputs, targets):
        self.calls.append((outputs["pred_boxes"], [t["labels"] for t in targets]))
        return super().forward(outputs, targets)


def test_loss_groups_are_data():
    """A further group (e.g. one-to-many) has its own key, suffix, matcher, matched boxes, target repeats
    and weights; its aux layers are supervised too, and its num_boxes counts its own targets."""
    g = torch.Generator().manual_seed(5)
    outputs = _outputs(2, 6, 4, g, aux=1)
    outputs["o2m_outputs"] = _outputs(2, 9, 4, g, aux=2)
    for layer in [outputs["o2m_outputs"]] + outputs["o2m_outputs"]["aux_outputs"]:
        layer["anchors"] = layer["pred_boxes"].detach().flip(1)
    matcher = _RecordingMatcher()
    o2m_weights = {"loss_ce": 3.0, "loss_bbox": 1.0, "loss_giou": 1.0}
    group = LossGroup(key="o2m_outputs", suffix="_o2m", target_repeats=3, matcher=matcher,
                      match_boxes="anchors", weight_dict=o2m_weights)
    criterion = SetCriterion(4, HungarianMatcher(), WEIGHTS, groups=[LossGroup(), group])
    targets = _targets()
    losses = criterion(outputs, targets)
    suffixes = ("", "_0", "_o2m", "_0_o2m", "_1_o2m")
    assert set(losses) == {f"{k}{s}" for k in WEIGHTS for s in suffixes}
    # the final o2m layer is matched on its anchors, against each image's targets repeated 3 times
    boxes, labels = matcher.calls[0]
    assert torch.equal(boxes, outputs["o2m_outputs"]["anchors"])
    assert labels[0].tolist() == [2, 0] * 3 and len(labels[1]) == 0
    assert len(matcher.calls) == 3
    repeated = group.targets(targets)
    indices = HungarianMatcher()(
        {"pred_logits": outputs["o2m_outputs"]["pred_logits"], "pred_boxes": outputs["o2m_outputs"]["anchors"]},
        repeated)
    expected = criterion.layer_losses(outputs["o2m_outputs"], repeated, 6.0, indices, o2m_weights, "_o2m")
    for k, v in expected.items():
        torch.testing.assert_close(losses[k], v)


def test_sigmoid_focal_loss_is_sum_over_queries():
    logits = torch.randn(2, 5, 3)
    targets = torch.zeros(2, 5, 3)
    targets[0, 1, 2] = 1
    loss = sigmoid_focal_loss(logits, targets, num_boxes=4.0)
    p = logits.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = 0.25 * targets + 0.75 * (1 - targets)
    torch.testing.assert_close(loss, (a_t * ce * (1 - p_t) ** 2).sum() / 4.0)


def test_configuration_errors():
    with pytest.raises(ValueError, match="no weight"):
        SetCriterion(3, HungarianMatcher(), {"loss_ce": 1.0})
    with pytest.raises(ValueError, match="unknown loss"):
        SetCriterion(3, HungarianMatcher(), WEIGHTS, losses=("class", "masks"))
    with pytest.raises(ValueError, match="'o2m'.*no weight"):
        SetCriterion(3, HungarianMatcher(), WEIGHTS, groups=[LossGroup(), LossGroup("o2m", weight_dict={})])
    with pytest.raises(ValueError, match="first loss group"):
        SetCriterion(3, HungarianMatcher(), WEIGHTS, groups=[LossGroup("enc_outputs")])


def test_degenerate_predicted_boxes_give_finite_losses_and_gradients():
    """Predicted boxes of zero size, on a target of zero size at the same place: finite GIoU loss and gradients,
    where the official GIoU divides zero by zero."""
    criterion = SetCriterion(3, HungarianMatcher(), WEIGHTS)
    boxes = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.2, 0.2, 0.0, 0.1]]], requires_grad=True)
    logits = torch.randn(1, 2, 3, requires_grad=True)
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.0, 0.0]])}]
    losses = criterion({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert torch.isfinite(boxes.grad).all() and torch.isfinite(logits.grad).all()


def test_non_finite_predictions_give_non_finite_losses_not_an_error():
    """What the trainer then stops at, naming the terms (tests/tools/test_resume.py)."""
    criterion = SetCriterion(3, HungarianMatcher(), WEIGHTS)
    outputs = _outputs(2, 4, 3, torch.Generator().manual_seed(0))
    outputs["pred_boxes"] = torch.full_like(outputs["pred_boxes"], float("nan"))
    losses = criterion(outputs, _targets())
    assert torch.isfinite(losses["loss_ce"]) and not torch.isfinite(losses["loss_bbox"])


def test_denoising_group_is_matched_by_construction_and_normalised_per_copy():
    """DINO's denoising group: queries matched to the targets they copy, the losses divided by the targets
    times the number of copies (groups), named `<loss>_dn_{i}` for aux layers, and zeros (same keys) when a
    batch without targets has no such group."""
    from sam_detr.modeling import DenoisingMatcher

    g = torch.Generator().manual_seed(7)
    outputs = _outputs(2, 6, 4, g, aux=1)
    outputs["dn_outputs"] = _outputs(2, 12, 4, g, aux=1)  # 3 groups of 2 x 2 (the most targets of an image)
    dn = LossGroup(key="dn_outputs", suffix="_dn", matcher=DenoisingMatcher(), zeros_when_absent=True,
                   index_after_suffix=True)
    criterion = SetCriterion(4, HungarianMatcher(), WEIGHTS, groups=[LossGroup(), dn])
    targets = _targets()
    losses = criterion(outputs, targets)
    assert set(losses) == {f"{k}{s}" for k in WEIGHTS for s in ("", "_0", "_dn", "_dn_0")}
    # positives: queries 0, 1 of each group of 4 (g * 4 + j) reconstruct targets j; normaliser 2 targets x 3
    indices = [(torch.tensor([0, 1, 4, 5, 8, 9]), torch.tensor([0, 1, 0, 1, 0, 1])), (torch.tensor([]).long(),) * 2]
    expected = criterion.layer_losses(outputs["dn_outputs"], targets, 6.0, indices, WEIGHTS, "_dn")
    for k, v in expected.items():
        torch.testing.assert_close(losses[k], v)
    del outputs["dn_outputs"]
    zeros = {k: v for k, v in criterion(outputs, targets).items() if "_dn" in k}
    assert set(zeros) == {f"{k}{s}" for k in WEIGHTS for s in ("_dn", "_dn_0")}
    assert all(v == 0 for v in zeros.values())


def test_giou_eps_is_added_to_both_denominators_in_the_loss_and_the_cost():
    """DINO's GIoU (util/box_ops.py): iou = inter / (union + 1e-6), giou = iou - (C - union) / (C + 1e-6)."""
    pred = torch.tensor([[[0.30, 0.40, 0.20, 0.10], [0.50, 0.50, 0.02, 0.03]]], dtype=torch.float64)
    gt = torch.tensor([[0.32, 0.41, 0.18, 0.12], [0.52, 0.49, 0.01, 0.02]], dtype=torch.float64)
    a, b = box_cxcywh_to_xyxy(pred[0]), box_cxcywh_to_xyxy(gt)
    inter = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    union = (a[:, 2:] - a[:, :2]).prod(-1) + (b[:, 2:] - b[:, :2]).prod(-1) - inter
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(-1)
    dino = inter / (union + 1e-6) - (hull - union) / (hull + 1e-6)
    weights = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    targets = [{"labels": torch.tensor([1, 2]), "boxes": gt}]
    outputs = {"pred_logits": torch.zeros(1, 2, 3, dtype=torch.float64), "pred_boxes": pred}
    indices = [(torch.tensor([0, 1]), torch.tensor([0, 1]))]
    for eps, expected in ((1e-6, dino), (0.0, inter / union - (hull - union) / hull)):
        criterion = SetCriterion(3, HungarianMatcher(giou_eps=eps), weights, giou_eps=eps)
        loss = criterion.loss_boxes(outputs, targets, indices, num_boxes=2.0)["loss_giou"]
        torch.testing.assert_close(loss, (1 - expected).sum() / 2, rtol=0, atol=1e-15)
        assert not torch.isclose(loss, (1 - (dino if eps == 0 else inter / union - (hull - union) / hull)).sum() / 2)
        cost = generalized_box_iou(a, b, eps).diagonal()
        torch.testing.assert_close(cost, expected, rtol=0, atol=1e-15)

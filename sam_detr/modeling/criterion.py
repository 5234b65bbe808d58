"""The set-prediction loss shared by every DETR-style method."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..layers.box_ops import box_cxcywh_to_xyxy, paired_generalized_box_iou
from .box_coder import BoxCoder, SigmoidBoxCoder, check_same_coder
from .matcher import HungarianMatcher

__all__ = ["SetCriterion", "LossGroup", "hybrid_matching_groups", "sigmoid_focal_loss"]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, num_boxes: float, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss of (B, Q, K) logits against (B, Q, K) one-hot targets, normalised as the official code.

    The official code takes the mean over queries, sums over batch and classes, divides by num_boxes and
    then multiplies by Q: in effect a sum over (batch, query, class) divided by num_boxes.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_boxes * logits.shape[1]


def _event_storage():
    """The active Detectron2 EventStorage, or None outside a trainer."""
    from detectron2.utils.events import get_event_storage

    try:
        return get_event_storage()
    except AssertionError:
        return None


@dataclass
class LossGroup:
    """One group of predictions the criterion supervises, with its own targets, matching and weights.

    A group is the dict `outputs[key]` (the top-level outputs when `key` is None) with "pred_logits" and
    "pred_boxes" and optionally "aux_outputs" (one such dict per earlier decoder layer). Its losses are
    named `<loss><suffix>` and `<loss>_{i}<suffix>` for aux layer i. A group absent from the outputs is
    skipped (e.g. "enc_outputs" of a one-stage model).

    Args:
        key: where the group's predictions are in the model's outputs.
        suffix: appended to the group's loss names.
        class_agnostic: every target gets label 0 (the two-stage encoder's proposals).
        target_repeats: the targets of each image repeated this many times (H-DETR's hybrid queries).
        matcher: matches this group (default: the criterion's Hungarian matcher).
        match_boxes: the key of the boxes the matcher compares with the targets ("pred_boxes"; MS-DETR
            matches its encoder's proposals on their fixed "anchors").
        weight_dict: the weight of each loss in this group (default: the criterion's).
    """

    key: Optional[str] = None
    suffix: str = ""
    class_agnostic: bool = False
    target_repeats: int = 1
    matcher: Optional[nn.Module] = None
    match_boxes: str = "pred_boxes"
    weight_dict: Optional[Dict[str, float]] = None

    def targets(self, targets: List[Dict[str, torch.Tensor]]) -> List[Dict[str, torch.Tensor]]:
        """The group's version of the targets: class-agnostic and/or repeated."""
        out = []
        for t in targets:
            labels = torch.zeros_like(t["labels"]) if self.class_agnostic else t["labels"]
            out.append({"labels": labels.repeat(self.target_repeats), "boxes": t["boxes"].repeat(self.target_repeats, 1)})
        return out


# the final decoder layer with its auxiliary layers, and the two-stage encoder's proposals
DEFAULT_GROUPS = (LossGroup(), LossGroup(key="enc_outputs", suffix="_enc", class_agnostic=True))


def hybrid_matching_groups(target_repeats: int = 6) -> List[LossGroup]:
    """H-DETR's hybrid matching for a two-stage model (Plain-DETR): the one-to-one queries, the proposals,
    and the extra hybrid queries ("hybrid_outputs") matched one-to-one against every image's targets
    repeated `target_repeats` times (the official `k_one2many`; `<loss>_hybrid`)."""
    return [*DEFAULT_GROUPS, LossGroup(key="hybrid_outputs", suffix="_hybrid", target_repeats=target_repeats)]


class SetCriterion(nn.Module):
    """Matches every decoder layer's predictions to the targets and computes the weighted losses.

    Losses: "class" (`loss_ce`: sigmoid focal loss, or softmax cross-entropy with a down-weighted
    no-object class) and "boxes" (`loss_bbox`: the box coder's L1, on normalised (cx, cy, w, h) by default;
    `loss_giou`: 1 - GIoU),
    each divided by the number of target boxes of its group averaged over all workers. The predictions
    supervised come in groups (`LossGroup`): by default the final decoder layer with its auxiliary layers
    (`<loss>`, `<loss>_{i}`) and a two-stage encoder's proposals (`enc_outputs`, matched against
    class-agnostic targets: `<loss>_enc`); one-to-many supervision adds a group of its own.

    Args:
        num_classes: K. Focal models predict K logits; softmax models K + 1, the last being "no object".
        weight_dict: weight of each loss ("loss_ce", "loss_bbox", "loss_giou").
        class_loss_type: "focal" or "softmax".
        eos_coef: weight of the no-object class in the softmax cross-entropy.
        box_coder: the box space of the predictions and targets, whose L1 loss is used (`BoxCoder.l1_loss`);
            the matchers must code alike.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: Dict[str, float],
        losses: Sequence[str] = ("class", "boxes"),
        class_loss_type: str = "focal",
        eos_coef: float = 0.1,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        groups: Sequence[LossGroup] = DEFAULT_GROUPS,
        box_coder: BoxCoder = SigmoidBoxCoder(),
    ):
        super().__init__()
        # a LazyConfig list of LossGroups arrives as omegaconf's structured configs of them
        groups = [OmegaConf.to_object(g) if isinstance(g, DictConfig) else g for g in groups]
        matchers = [("its matcher", matcher)] + [(f"loss group {g.key!r}'s matcher", g.matcher) for g in groups]
        check_same_coder("the criterion", box_coder, [(name, getattr(m, "box_coder", None)) for name, m in matchers])
        if not groups or groups[0].key is not None:
            raise ValueError("the first loss group must be the top-level outputs (key=None)")
        if class_loss_type not in ("focal", "softmax"):
            raise ValueError(f"class_loss_type must be 'focal' or 'softmax', got {class_loss_type!r}")
        loss_keys = {"class": ["loss_ce"], "boxes": ["loss_bbox", "loss_giou"]}
        for name in losses:
            if name not in loss_keys:
                raise ValueError(f"unknown loss {name!r}; choose from {sorted(loss_keys)}")
            missing = [k for k in loss_keys[name] if k not in weight_dict]
            if missing:
                raise ValueError(f"weight_dict has no weight for {missing}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.losses = tuple(losses)
        self.class_loss_type = class_loss_type
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.groups = list(groups)
        self.box_coder = box_coder
        for group in self.groups:
            weights = self.weight_dict if group.weight_dict is None else group.weight_dict
            missing = [k for name in losses for k in loss_keys[name] if k not in weights]
            if missing:
                raise ValueError(f"the weights of loss group {group.key!r} have no weight for {missing}")
        if class_loss_type == "softmax":
            empty_weight = torch.ones(num_classes + 1)
            empty_weight[-1] = eos_coef
            self.register_buffer("empty_weight", empty_weight, persistent=False)

    def loss_class(self, outputs, targets, indices: Indices, num_boxes: float) -> Dict[str, torch.Tensor]:
        logits = outputs["pred_logits"]  # (B, Q, K) or (B, Q, K + 1)
        batch_idx, src_idx = _src_permutation_idx(indices)
        matched = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[batch_idx, src_idx] = matched
        if self.class_loss_type == "softmax":
            loss = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        else:
            onehot = torch.zeros(
                (*logits.shape[:2], logits.shape[2] + 1), dtype=logits.dtype, device=logits.device
            )
            onehot.scatter_(2, target_classes.unsqueeze(-1), 1)
            loss = sigmoid_focal_loss(logits, onehot[:, :, :-1], num_boxes, self.focal_alpha, self.focal_gamma)
        return {"loss_ce": loss}

    def loss_boxes(self, outputs, targets, indices: Indices, num_boxes: float) -> Dict[str, torch.Tensor]:
        batch_idx, src_idx = _src_permutation_idx(indices)
        src_boxes = outputs["pred_boxes"][batch_idx, src_idx]
        target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)], dim=0)
        loss_bbox = self.box_coder.l1_loss(outputs, (batch_idx, src_idx), target_boxes).sum() / num_boxes
        giou = paired_generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes))
        return {"loss_bbox": loss_bbox, "loss_giou": (1 - giou).sum() / num_boxes}

    def num_boxes(self, targets: List[Dict[str, torch.Tensor]], device: torch.device) -> float:
        """The number of target boxes per worker, averaged over all workers, at least 1."""
        num = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world_size = 1
        if dist.is_available() and dist.is_initialized():
            world_size = dist.get_world_size()
            dist.all_reduce(num)
        return torch.clamp(num / world_size, min=1).item()

    def layer_losses(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        num_boxes: float,
        indices: Indices,
        weight_dict: Dict[str, float],
        suffix: str = "",
    ) -> Dict[str, torch.Tensor]:
        """Weighted losses of one set of predictions ("pred_logits", "pred_boxes"), keys ending in suffix."""
        losses = {}
        for name in self.losses:
            fn = self.loss_class if name == "class" else self.loss_boxes
            for key, value in fn(outputs, targets, indices, num_boxes).items():
                losses[key + suffix] = value * weight_dict[key]
        return losses

    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: "pred_logits" (B, Q, K[+1]), "pred_boxes" (B, Q, 4) (cx, cy, w, h) in the coder's space,
                "aux_outputs" (a list of such dicts, one per earlier decoder layer), and the dict of each
                further loss group (e.g. "enc_outputs").
            targets: per image, "labels" (T,) int64 and "boxes" (T, 4) normalised (cx, cy, w, h).
        Returns:
            the weighted losses, to be summed.
        """
        losses = {}
        for group in self.groups:
            group_outputs = outputs if group.key is None else outputs.get(group.key)
            if group_outputs is None:
                continue
            group_targets = group.targets(targets)
            num_boxes = self.num_boxes(group_targets, outputs["pred_logits"].device)
            matcher = self.matcher if group.matcher is None else group.matcher
            weights = self.weight_dict if group.weight_dict is None else group.weight_dict
            layers = [(group.suffix, group_outputs)]
            layers += [(f"_{i}{group.suffix}", aux) for i, aux in enumerate(group_outputs.get("aux_outputs", []))]
            for suffix, layer in layers:
                if group.match_boxes not in layer:
                    raise KeyError(f"loss group {group.key!r}: outputs{suffix} have no {group.match_boxes!r} to match")
                to_match = {**layer, "pred_boxes": layer[group.match_boxes]}
                indices = matcher(to_match, group_targets)
                losses.update(self.layer_losses(layer, group_targets, num_boxes, indices, weights, suffix))
                if group.key is None and suffix == "":
                    self._log_metrics(layer, group_targets, indices)
        return losses

    @torch.no_grad()
    def _log_metrics(self, outputs, targets, indices: Indices) -> None:
        storage = _event_storage()
        if storage is None or "class" not in self.losses:
            return
        batch_idx, src_idx = _src_permutation_idx(indices)
        matched = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        if len(matched):
            pred = outputs["pred_logits"][batch_idx, src_idx].argmax(-1)
            storage.put_scalar("class_error", 100.0 - 100.0 * (pred == matched).float().mean().item())

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, class_loss_type={self.class_loss_type!r}, weights={self.weight_dict}"


def _src_permutation_idx(indices: Indices) -> Tuple[torch.Tensor, torch.Tensor]:
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for src, _ in indices])
    return batch_idx, src_idx

"""The prediction heads of every DETR-style method: a class head and a box head per decoder layer."""
import copy
import math
from typing import Optional, Tuple

from torch import nn

from ..layers import MLP

__all__ = ["class_head", "box_head", "per_layer", "prediction_heads"]


def class_head(d_model: int, num_classes: int, prior_prob: Optional[float] = 0.01) -> nn.Linear:
    """Linear(d_model, num_classes); with `prior_prob`, its bias starts at the logit of that probability (the
    focal-loss models' prior 0.01), else at PyTorch's default initialisation (DETR's softmax head)."""
    head = nn.Linear(d_model, num_classes)
    if prior_prob is not None:
        nn.init.constant_(head.bias, -math.log((1 - prior_prob) / prior_prob))
    return head


def box_head(d_model: int, num_layers: int = 3, zero_last: bool = True) -> MLP:
    """MLP(d_model -> d_model -> ... -> 4) of `num_layers` Linear layers; `zero_last`: the last one starts at
    zero, so that a refining layer's first boxes are its references."""
    head = MLP(d_model, d_model, 4, num_layers)
    if zero_last:
        nn.init.zeros_(head.layers[-1].weight)
        nn.init.zeros_(head.layers[-1].bias)
    return head


def per_layer(head: nn.Module, num: int, shared: bool = False) -> nn.ModuleList:
    """`num` heads: deep copies of one initialisation (as every official refining model), or with `shared`
    the one module under every index (its parameters listed once, the state dict under every index)."""
    if shared:
        return nn.ModuleList([head] * num)
    return nn.ModuleList(copy.deepcopy(head) for _ in range(num))


def prediction_heads(
    d_model: int,
    num_classes: int,
    num_layers: int,
    *,
    shared: bool = False,
    proposal_heads: bool = False,
    prior_prob: Optional[float] = 0.01,
) -> Tuple[nn.ModuleList, nn.ModuleList]:
    """The class heads and box heads of a refining decoder (`class_head`, `box_head`, `per_layer`): one pair
    per decoder layer, and with `proposal_heads` one more, last, that scores and refines a two-stage
    encoder's proposals. Names: `class_embed.{i}`, `bbox_embed.{i}` under the model."""
    num = num_layers + int(proposal_heads)
    classes = class_head(d_model, num_classes, prior_prob)
    boxes = box_head(d_model)
    return per_layer(classes, num, shared), per_layer(boxes, num, shared)

"""Conditional DETR (Meng et al., ICCV 2021), as Atten4Vis/ConditionalDETR: the conditional spatial query."""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...layers import InputProjection, PositionEmbeddingSine
from ..heads import box_head, class_head
from ..query_groups import layer_outputs
from ..transformer import ConditionalDETRTransformer
from .detr_base import DETRBase

__all__ = ["ConditionalDETR"]


@META_ARCH_REGISTRY.register()
class ConditionalDETR(DETRBase):
    """DETR whose decoder cross-attention is steered by a spatial query from each query's reference point;
    focal classes, one class head and one box head shared by every decoder layer.

    Every layer predicts its box centre as an offset (in logit space) from the query's reference point,
    and its width and height directly: `sigmoid(bbox_embed(h) + (inverse_sigmoid(s), 0, 0))`.

    Args:
        transformer: the encoder-decoder; its width is the model's.
        num_queries: learned query positions.
        (the other arguments: see `DETRBase`; `criterion` must use the focal class loss.)
    """

    @configurable
    def __init__(self, *, transformer: ConditionalDETRTransformer, num_queries: int = 300, **kwargs):
        super().__init__(**kwargs)
        if self.box_coder.pixels:
            raise ValueError(f"Conditional DETR predicts normalised boxes, not pixels: got box_coder {self.box_coder!r}")
        if self.criterion.class_loss_type != "focal":
            raise ValueError("Conditional DETR has no 'no object' class: its criterion needs class_loss_type='focal'")
        if len(self.in_features) != 1:
            raise ValueError(f"Conditional DETR runs on one feature level; in_features is {self.in_features}")
        hidden = transformer.d_model
        self.transformer = transformer
        self.position_embedding = PositionEmbeddingSine(hidden // 2, normalize=True)
        self.input_proj = InputProjection(self.in_channels, hidden, norm=False)
        self.query_embed = nn.Embedding(num_queries, hidden)
        self.class_embed = class_head(hidden, self.num_classes)
        self.bbox_embed = box_head(hidden)

    def forward_head(
        self, features: List[torch.Tensor], masks: List[torch.Tensor], targets: Optional[List[Dict]] = None
    ) -> Dict:
        src, mask = features[-1], masks[-1]
        pos = self.position_embedding(mask).to(src.dtype)
        hs, reference = self.transformer(src, mask, self.query_embed.weight, pos)  # (L, B, Q, C), (B, Q, 2)
        boxes = self.box_coder.decode(reference, self.bbox_embed(hs))  # the centre refined, the size predicted
        return layer_outputs({"pred_logits": self.class_embed(hs), "pred_boxes": boxes})

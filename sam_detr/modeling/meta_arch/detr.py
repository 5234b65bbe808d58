"""DETR (Carion et al. 2020), as facebookresearch/detr: the baseline of every method here."""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...layers import InputProjection, PositionEmbeddingSine
from ..heads import box_head, class_head
from ..transformer import DetrTransformer
from ..query_groups import layer_outputs
from .detr_base import DETRBase

__all__ = ["DETR"]


@META_ARCH_REGISTRY.register()
class DETR(DETRBase):
    """Learned queries decoded by a plain encoder-decoder over the last backbone level; softmax classes.

    Args:
        transformer: the encoder-decoder; its width is the model's.
        num_queries: detection slots per image.
        (the other arguments: see `DETRBase`; `criterion` must use the softmax class loss.)
    """

    @configurable
    def __init__(self, *, transformer: DetrTransformer, num_queries: int = 100, **kwargs):
        super().__init__(**kwargs)
        if self.box_coder.pixels:
            raise ValueError(f"DETR predicts normalised boxes, not pixels: got box_coder {self.box_coder!r}")
        if self.criterion.class_loss_type != "softmax":
            raise ValueError("DETR predicts a 'no object' class: its criterion needs class_loss_type='softmax'")
        hidden = transformer.d_model
        self.transformer = transformer
        self.position_embedding = PositionEmbeddingSine(hidden // 2, normalize=True)
        self.input_proj = InputProjection(self.in_channels, hidden, norm=False)
        self.query_embed = nn.Embedding(num_queries, hidden)
        self.class_embed = class_head(hidden, self.num_classes + 1, prior_prob=None)
        self.bbox_embed = box_head(hidden, zero_last=False)

    def forward_head(
        self, features: List[torch.Tensor], masks: List[torch.Tensor], targets: Optional[List[Dict]] = None
    ) -> Dict:
        src, mask = features[-1], masks[-1]
        pos = self.position_embedding(mask).to(src.dtype)
        hs = self.transformer(src, mask, self.query_embed.weight, pos)  # (L, B, Q, C)
        logits = self.class_embed(hs)
        boxes = self.bbox_embed(hs).sigmoid()
        return layer_outputs({"pred_logits": logits, "pred_boxes": boxes})

"""SAM-DETR (Zhang et al., CVPR 2022), as ZhangGongjie/SAM-DETR: semantic-aligned matching."""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...layers import InputProjection, PositionEmbeddingSine
from ..heads import prediction_heads
from ..query_groups import QueryGroups
from ..transformer import BoxRefinement, SAMDETRTransformer
from .detr_base import DETRBase

__all__ = ["SAMDETR"]


@META_ARCH_REGISTRY.register()
class SAMDETR(DETRBase):
    """Learned reference boxes refined by a decoder whose Semantics Aligners resample the queries from the
    memory at salient points; focal classes, one box and class head per decoder layer.

    Single-scale (one backbone level, optionally DC5) or multi-scale (several levels, deformable encoder),
    as the transformer is built; with or without SMCA (set on its decoder layers).

    Args:
        transformer: the encoder-decoder; it fixes the width, the number of decoder layers and of levels
            (one per entry of `in_features`).
        num_queries: learned reference boxes, stored as unactivated (cx, cy, w, h).
        input_proj_norm: GroupNorm(32) after each level's 1x1 input projection. The official code has it in
            the multi-scale models and, by accident, in the 12-epoch single-scale ones (`--epochs < 25`) but
            not in the 50-epoch ones; the configs set it per model.
        (the other arguments: see `DETRBase`; `criterion` must use the focal class loss.)
    """

    @configurable
    def __init__(self, *, transformer: SAMDETRTransformer, input_proj_norm: bool, num_queries: int = 300, **kwargs):
        super().__init__(**kwargs)
        if self.box_coder.pixels:
            raise ValueError(f"SAM-DETR predicts normalised boxes, not pixels: got box_coder {self.box_coder!r}")
        if self.criterion.class_loss_type != "focal":
            raise ValueError("SAM-DETR has no 'no object' class: its criterion needs class_loss_type='focal'")
        if len(self.in_features) != transformer.num_feature_levels:
            raise ValueError(
                f"in_features {self.in_features} must give the {transformer.num_feature_levels} level(s) "
                "of the transformer"
            )
        hidden = transformer.d_model
        num_layers = len(transformer.decoder.layers)
        self.transformer = transformer
        self.position_embedding = PositionEmbeddingSine(
            hidden // 2, normalize=True, offset=-0.5, shifted_denominator=True
        )
        self.input_proj = InputProjection(self.in_channels, hidden, norm=input_proj_norm)
        self.query_embed = nn.Embedding(num_queries, 4)
        self.class_embed, self.bbox_embed = prediction_heads(hidden, self.num_classes, num_layers)
        # the reference boxes refined as running logits (see `SAMDETRDecoder`)
        self.refinement = BoxRefinement("logit")

    def forward_head(
        self, features: List[torch.Tensor], masks: List[torch.Tensor], targets: Optional[List[Dict]] = None
    ) -> Dict:
        pos = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)]
        memory = self.transformer.encode(features, masks, pos)
        ref_logits = self.query_embed.weight  # (Q, 4) unactivated (cx, cy, w, h)
        B, (Q, _) = memory.src.shape[0], ref_logits.shape
        reference = self.refinement.start(ref_logits[None].expand(B, -1, -1), self.box_coder)
        groups = QueryGroups.single(Q)
        out = self.transformer.decoder(
            ref_logits.new_zeros((B, Q, self.transformer.d_model)), None, reference, memory, self.bbox_embed,
            self.refinement, groups.attention_mask(ref_logits.device),
        )
        return groups.outputs(out.predictions(self.class_embed, self.box_coder))


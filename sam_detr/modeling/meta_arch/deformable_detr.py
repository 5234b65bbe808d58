"""Deformable DETR (Zhu et al., ICLR 2021), as fundamentalvision/Deformable-DETR: every published variant."""
import copy
import math
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...layers import MLP, InputProjection, PositionEmbeddingSine
from ..query_groups import layer_outputs
from ..transformer import BoxRefinement, DeformableTransformer, one_to_many_predictions
from .detr_base import DETRBase

__all__ = ["DeformableDETR"]


@META_ARCH_REGISTRY.register()
class DeformableDETR(DETRBase):
    """Multi-scale deformable attention in the encoder and the decoder; focal classes.

    The published variants are configurations: single scale (one backbone level, optionally DC5),
    multi-scale (C3-C5 and extra stride-2 levels on C5, `transformer.num_feature_levels` in all), with
    iterative box refinement, and two-stage (the transformer's `proposals`; needs refinement, as the official
    code). Without refinement one class head and one box head serve every decoder layer; with it each layer
    has its own copy (and two-stage adds one for the proposals). The box head's last layer starts at zero with
    a (w, h) bias of -2 on the shared head or on the first copy only; two-stage sets it back to 0.

    MS-DETR (configs/ms_detr_*.py) is two-stage with refinement and `MSDETRDecoderLayer`s: in training their
    one-to-many features give "o2m_outputs" through the same heads, which the criterion's "o2m_outputs" group
    supervises (`OneToManyMatcher`).

    Args:
        transformer: the encoder-decoder; its levels are the `in_features` then extra ones.
        num_queries: Q, one-stage learned queries, or two-stage selected proposals.
        with_box_refine: iterative box refinement (per-layer heads).
        mixed_selection: two-stage: learned content queries, positions from the proposals (MS-DETR++).
        look_forward_twice: with refinement, each layer's head refines the previous layer's boxes before
            they are detached (MS-DETR++).
        (the other arguments: see `DETRBase`; `criterion` must use the focal class loss.)
    """

    @configurable
    def __init__(
        self,
        *,
        transformer: DeformableTransformer,
        num_queries: int = 300,
        with_box_refine: bool = False,
        mixed_selection: bool = False,
        look_forward_twice: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.criterion.class_loss_type != "focal":
            raise ValueError("Deformable DETR has no 'no object' class: its criterion needs class_loss_type='focal'")
        if transformer.two_stage and not with_box_refine:
            raise ValueError("two-stage Deformable DETR needs with_box_refine=True, as the official code")
        if mixed_selection and not transformer.two_stage:
            raise ValueError("mixed_selection selects queries from two-stage proposals: give the transformer proposals")
        extra_levels = transformer.num_feature_levels - len(self.in_features)
        if extra_levels < 0:
            raise ValueError(
                f"in_features {self.in_features} are more levels than the transformer's "
                f"{transformer.num_feature_levels}"
            )
        hidden = transformer.d_model
        self.transformer = transformer
        self.num_queries = num_queries
        self.position_embedding = PositionEmbeddingSine(hidden // 2, normalize=True, offset=-0.5)
        self.input_proj = InputProjection(self.in_channels, hidden, extra_levels, norm=True, xavier_init=True)
        self.query_embed = None
        if not transformer.two_stage or mixed_selection:
            self.query_embed = nn.Embedding(num_queries, hidden if mixed_selection else 2 * hidden)
        self.refinement = BoxRefinement(iterative=with_box_refine, look_forward_twice=look_forward_twice)

        class_embed = nn.Linear(hidden, self.num_classes)
        nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01
        bbox_embed = MLP(hidden, hidden, 4, 3)
        nn.init.zeros_(bbox_embed.layers[-1].weight)
        nn.init.zeros_(bbox_embed.layers[-1].bias)
        num_heads = len(transformer.decoder.layers) + int(transformer.two_stage)
        if with_box_refine:
            self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(num_heads))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(num_heads))
        else:  # one module under every index: its parameters are shared (and listed once)
            self.class_embed = nn.ModuleList([class_embed] * num_heads)
            self.bbox_embed = nn.ModuleList([bbox_embed] * num_heads)
        if not transformer.two_stage:
            # boxes start 0.12 wide and high (the copies of refinement were made before: bias 0)
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)


    def forward_head(
        self, features: List[torch.Tensor], masks: List[torch.Tensor], targets: Optional[List[Dict]] = None
    ) -> Dict:
        pos = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)]
        query_embed = None if self.query_embed is None else self.query_embed.weight
        out, proposals = self.transformer(
            features, masks, pos, query_embed, self.class_embed, self.bbox_embed, self.refinement,
            self.num_queries, exclude_padding=self.batch_invariant,
        )
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, out.hs)])
        outputs = layer_outputs({"pred_logits": logits, "pred_boxes": out.boxes})
        if out.hs_o2m is not None:  # MS-DETR decoder layers in training
            predictions = one_to_many_predictions(out.hs_o2m, out.references, self.class_embed, self.bbox_embed)
            outputs["o2m_outputs"] = layer_outputs(dict(zip(("pred_logits", "pred_boxes"), predictions)))
        if proposals is not None:
            outputs["enc_outputs"] = {
                "pred_logits": proposals.logits, "pred_boxes": proposals.boxes, "anchors": proposals.anchors
            }
        return outputs

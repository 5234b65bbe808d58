"""Deformable DETR (Zhu et al., ICLR 2021), as fundamentalvision/Deformable-DETR: every published variant."""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...layers import InputProjection, PositionEmbeddingSine
from ..heads import prediction_heads
from ..query_groups import QueryGroups
from ..transformer import BoxRefinement, DecoderOutput, DeformableTransformer, Proposals
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

    The head runs `transformer.encode` (the memory), `transformer.queries` (learned or selected), the
    decoder (a `RefiningDecoder`, with this model's box heads and refinement) over the query groups (one
    here), and `head_outputs`, which MS-DETR (sam_detr/modeling/meta_arch/ms_detr.py) extends.

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
        # without refinement one head pair serves every layer (its parameters listed once)
        self.class_embed, self.bbox_embed = prediction_heads(
            hidden, self.num_classes, len(transformer.decoder.layers), shared=not with_box_refine,
            proposal_heads=transformer.two_stage,
        )
        if not transformer.two_stage:
            # boxes start 0.12 wide and high (the copies of refinement were made before: bias 0)
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)

    def forward_head(
        self, features: List[torch.Tensor], masks: List[torch.Tensor], targets: Optional[List[Dict]] = None
    ) -> Dict:
        pos = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)]
        memory = self.transformer.encode(features, masks, pos)
        L = len(self.transformer.decoder.layers)
        query_embed = None if self.query_embed is None else self.query_embed.weight
        proposal_heads = (self.class_embed[L], self.bbox_embed[L]) if self.transformer.two_stage else None
        tgt, query_pos, reference, proposals = self.transformer.queries(
            memory, query_embed, self.num_queries, proposal_heads, self.box_coder, self.batch_invariant
        )
        groups = QueryGroups.single(self.num_queries)
        out = self.transformer.decoder(
            tgt, query_pos, self.refinement.start(reference, self.box_coder), memory, self.bbox_embed[:L],
            self.refinement, groups.attention_mask(tgt.device),
        )
        return self.head_outputs(out, groups, proposals)

    def head_outputs(self, out: DecoderOutput, groups: QueryGroups, proposals: Optional[Proposals]) -> Dict:
        """The outputs of the decoder's query groups, and "enc_outputs": the two-stage proposals."""
        outputs = groups.outputs(out.predictions(self.class_embed, self.box_coder))
        if proposals is not None:
            outputs["enc_outputs"] = proposals.outputs(self.box_coder)
        return outputs

"""Plain-DETR (Lin et al., ICCV 2023, "DETR Doesn't Need Multi-Scale or Locality Design"), as impiga/Plain-DETR."""
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...layers import InputProjection, PositionEmbeddingSine
from ..heads import prediction_heads
from ..query_groups import QueryGroup, QueryGroups
from ..transformer import BoxRefinement, TwoStageProposals, flatten_levels, reset_deformable_parameters
from ..transformer.plain_detr_decoder import GlobalDecoder
from ..transformer.plain_detr_proposals import image_extent, proposal_maps, proposal_projections
from .detr_base import DETRBase

__all__ = ["PlainDETR"]


@META_ARCH_REGISTRY.register()
class PlainDETR(DETRBase):
    """No encoder: the backbone's one stride-16 map, projected, is the memory of a pre-norm global decoder
    (`GlobalDecoder`, with BoxRPB or the APE baseline). Two-stage queries (`TwoStageProposals`) from
    proposal maps at strides 8/16/32/64 made from that map (`proposal_projections`), with mixed selection;
    refinement with look-forward-twice; focal class heads. Hybrid matching (H-DETR): in training
    `num_hybrid_queries` more queries are decoded with the one-to-one ones, the two query groups unseen by
    each other ("hybrid_outputs", matched one-to-many against repeated targets); inference decodes the
    `num_queries` one-to-one queries. Box reparameterisation: `box_coder=PixelDeltaBoxCoder()` (boxes and
    targets in input pixels, proposals from pixel anchors, the L1 on deltas; the criterion and its matcher
    take the same coder).

    Args:
        decoder: the global decoder; its width and feature stride fix the model's.
        proposal_strides: of the proposal maps, finest first.
        num_queries, num_hybrid_queries: the one-to-one queries, the extra ones of training (0: none).
        look_forward_twice: see `BoxRefinement`.
        position_embedding: of the memory (default: normalised sine with offset -0.5).
        (the others: see `DETRBase`; the criterion uses the focal loss and has a "hybrid_outputs" group.)
    """

    @configurable
    def __init__(
        self,
        *,
        decoder: GlobalDecoder,
        proposal_strides: Sequence[int] = (8, 16, 32, 64),
        num_queries: int = 300,
        num_hybrid_queries: int = 1500,
        look_forward_twice: bool = True,
        position_embedding: Optional[nn.Module] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.criterion.class_loss_type != "focal":
            raise ValueError("Plain-DETR has no 'no object' class: its criterion needs class_loss_type='focal'")
        if len(self.in_features) != 1:
            raise ValueError(f"Plain-DETR reads one backbone level, got in_features {self.in_features}")
        if num_hybrid_queries and "hybrid_outputs" not in {g.key for g in self.criterion.groups}:
            raise ValueError("num_hybrid_queries > 0 needs a criterion group with key 'hybrid_outputs'")
        hidden = decoder.d_model
        self.proposal_strides = tuple(proposal_strides)
        self.num_queries, self.num_hybrid_queries = num_queries, num_hybrid_queries
        self.position_embedding = position_embedding or PositionEmbeddingSine(hidden // 2, normalize=True, offset=-0.5)
        self.input_proj = InputProjection(self.in_channels, hidden, 0, norm=True, xavier_init=True)
        self.level_embed = nn.Parameter(torch.empty(1, hidden))
        stride = decoder.layers[0].cross_attn.feature_stride
        self.proposal_proj = proposal_projections(hidden, stride, proposal_strides)
        self.proposals = TwoStageProposals(hidden)
        self.decoder = decoder
        # the official transformer-wide xavier, then the decoder's own re-initialisation
        for part in (self.proposal_proj, self.proposals, self.decoder):
            reset_deformable_parameters(part)
        self.decoder.reset_parameters()
        nn.init.normal_(self.level_embed)
        self.query_embed = nn.Embedding(num_queries + num_hybrid_queries, hidden)
        self.refinement = BoxRefinement(look_forward_twice=look_forward_twice)
        # the last pair scores and refines the proposals
        self.class_embed, self.bbox_embed = prediction_heads(
            hidden, self.num_classes, len(decoder.layers), proposal_heads=True
        )

    def query_groups(self) -> QueryGroups:
        """The one-to-one queries, and in training the hybrid (one-to-many) ones, which neither see."""
        groups = [QueryGroup(self.num_queries)]
        if self.training and self.num_hybrid_queries:
            groups.append(QueryGroup(self.num_hybrid_queries, "hybrid_outputs"))
        return QueryGroups(groups)

    def forward_head(
        self, features: List[torch.Tensor], masks: List[torch.Tensor], targets: Optional[List[Dict]] = None
    ) -> Dict:
        src, mask = features[0], masks[0]
        pos = self.position_embedding(mask).to(src.dtype)
        memory = flatten_levels([src], [mask], [pos], self.level_embed, copy=False)
        memory = memory._replace(batch_invariant=self.batch_invariant)
        maps, map_masks = proposal_maps(self.proposal_proj, src, mask, self.batch_invariant)
        tokens = flatten_levels(maps, map_masks)
        coder = self.box_coder.for_batch(image_extent(tokens.mask, tokens.spatial_shapes, self.proposal_strides))
        groups = self.query_groups()
        L = len(self.decoder.layers)
        proposals = self.proposals(
            tokens, self.class_embed[L], self.bbox_embed[L], groups.num_queries, coder,
            content=self.query_embed.weight[: groups.num_queries], batch_invariant=self.batch_invariant,
            strides=self.proposal_strides,
        )
        out = self.decoder(
            proposals.tgt, proposals.query_pos, self.refinement.start(proposals.reference, coder), memory,
            self.bbox_embed[:L], self.refinement, groups.attention_mask(src.device),
        )
        outputs = groups.outputs(out.predictions(self.class_embed, coder))
        outputs["enc_outputs"] = proposals.outputs(coder)
        return outputs

"""The Deformable DETR encoder-decoder: one-stage (learned queries) or two-stage (queries from the encoder).

Batch-first: levels (B, C, H_l, W_l) in, flattened to (B, S, C) tokens; queries (B, Q, C).
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...layers import MSDeformAttn
from .box_refinement import BoxRefinement
from .deformable_decoder import DecoderOutput, DeformableTransformerDecoder
from .deformable_encoder import DeformableTransformerEncoder
from .levels import flatten_levels
from .proposals import Proposals, TwoStageProposals

__all__ = ["DeformableTransformer", "reset_deformable_parameters"]


def reset_deformable_parameters(module: nn.Module) -> None:
    """The official initialisation of a deformable transformer: xavier_uniform over every parameter of more
    than one dimension, then each MSDeformAttn's own initialisation again."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    for m in module.modules():
        if isinstance(m, MSDeformAttn):
            m._reset_parameters()


class DeformableTransformer(nn.Module):
    """A deformable encoder over all levels, then a deformable decoder.

    Every level's position embedding is offset by a learned `level_embed` (N(0, 1)). One-stage: the
    learned queries' position half predicts each query's reference point (`reference_points`, a Linear
    to (x, y), sigmoid). Two-stage (`proposals` given): the encoder's best proposals give the queries and
    their reference boxes (`TwoStageProposals`).

    Args:
        encoder, decoder: their layers fix the width and the number of levels, which must agree.
        proposals: the two-stage query selection, or None for one stage.
    """

    def __init__(
        self,
        encoder: DeformableTransformerEncoder,
        decoder: DeformableTransformerDecoder,
        proposals: Optional[TwoStageProposals] = None,
    ):
        super().__init__()
        d_model = decoder.d_model
        levels = encoder.num_levels
        decoder_levels = {layer.cross_attn.n_levels for layer in decoder.layers}
        if decoder_levels != {levels}:
            raise ValueError(f"the encoder reads {levels} level(s), the decoder layers {sorted(decoder_levels)}")
        if proposals is not None and proposals.d_model != d_model:
            raise ValueError(f"proposals have width {proposals.d_model}, the decoder {d_model}")
        self.d_model = d_model
        self.level_embed = nn.Parameter(torch.empty(levels, d_model))
        self.encoder = encoder
        self.decoder = decoder
        self.proposals = proposals
        if proposals is None:
            self.reference_points = nn.Linear(d_model, 2)
        reset_deformable_parameters(self)
        if proposals is None:
            nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    @property
    def num_feature_levels(self) -> int:
        return self.level_embed.shape[0]

    @property
    def two_stage(self) -> bool:
        return self.proposals is not None

    def forward(
        self,
        srcs: List[torch.Tensor],
        masks: List[torch.Tensor],
        pos: List[torch.Tensor],
        query_embed: Optional[torch.Tensor],
        class_embed: Sequence[nn.Module],
        bbox_embed: Sequence[nn.Module],
        refinement: BoxRefinement,
        num_queries: int,
        exclude_padding: bool = False,
    ) -> Tuple[DecoderOutput, Optional[Proposals]]:
        """
        Args:
            srcs, pos: per level, (B, C, H_l, W_l) projected features and sine position embeddings;
                masks: per level, (B, H_l, W_l) bool, True on padding.
            query_embed: one-stage: (Q, 2C) learned queries, position then content; two-stage: None, or
                (Q, C) learned content queries (mixed selection).
            class_embed, bbox_embed: per decoder layer, the heads, then (two-stage) the proposal heads.
            refinement: between the decoder layers.
            num_queries: Q.
            exclude_padding: two-stage: never select a padded token.
        Returns:
            the decoder's output, and the two-stage proposals (None for one stage).
        """
        if len(srcs) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(srcs)}")
        levels = flatten_levels(srcs, masks, pos, self.level_embed)
        memory = levels._replace(src=self.encoder(levels))
        num_layers = len(self.decoder.layers)
        B = memory.src.shape[0]
        proposals = None
        if self.proposals is None:
            query_pos, tgt = query_embed[None].expand(B, -1, -1).split(self.d_model, -1)
            reference = self.reference_points(query_pos).sigmoid()
        else:
            proposals = self.proposals(
                memory.src, memory.mask, memory.spatial_shapes, class_embed[num_layers], bbox_embed[num_layers],
                num_queries, content=query_embed, exclude_padding=exclude_padding,
            )
            query_pos, tgt, reference = proposals.query_pos, proposals.tgt, proposals.reference
        out = self.decoder(tgt, query_pos, reference, memory, bbox_embed[:num_layers], refinement)
        return out, proposals

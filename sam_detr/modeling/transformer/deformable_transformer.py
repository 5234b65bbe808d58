"""The Deformable DETR encoder-decoder: one-stage (learned queries) or two-stage (queries from the encoder).

Batch-first: levels (B, C, H_l, W_l) in, flattened to (B, S, C) tokens; queries (B, Q, C).
"""
from typing import List, Optional, Tuple

import torch
from torch import nn

from ...layers import MSDeformAttn
from ..box_coder import BoxCoder
from .deformable_decoder import DeformableTransformerDecoder
from .deformable_encoder import DeformableTransformerEncoder
from .levels import FlattenedLevels, flatten_levels
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
    """A deformable encoder over all levels (`encode`), the decoder's queries from it (`queries`), and a
    deformable decoder (`decoder`, run by the meta-architecture with its heads).

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

    def encode(self, srcs: List[torch.Tensor], masks: List[torch.Tensor], pos: List[torch.Tensor]) -> FlattenedLevels:
        """The memory: per level (B, C, H_l, W_l) features and sine positions, (B, H_l, W_l) masks (True on
        padding) -> the encoded levels, flattened (their `pos` with the level embedding)."""
        if len(srcs) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(srcs)}")
        levels = flatten_levels(srcs, masks, pos, self.level_embed)
        return levels._replace(src=self.encoder(levels))

    def queries(
        self,
        memory: FlattenedLevels,
        query_embed: Optional[torch.Tensor],
        num_queries: int,
        proposal_heads: Tuple[nn.Module, nn.Module],
        coder: BoxCoder,
        batch_invariant: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[Proposals]]:
        """The decoder's queries: content (B, Q, C), position (B, Q, C), the first reference (B, Q, 2) points
        (one stage) or (B, Q, 4) boxes (two-stage), and the two-stage proposals (None for one stage).

        Args:
            memory: `encode`'s.
            query_embed: one-stage: (Q, 2C) learned queries, position then content; two-stage: None, or
                (Q, C) learned content queries (mixed selection).
            num_queries: Q.
            proposal_heads: two-stage: the (class, box) heads of the proposals.
            coder: the box coding.
            batch_invariant: two-stage: never select a padded token.
        """
        if self.proposals is None:
            B = memory.src.shape[0]
            query_pos, tgt = query_embed[None].expand(B, -1, -1).split(self.d_model, -1)
            return tgt, query_pos, self.reference_points(query_pos).sigmoid(), None
        proposals = self.proposals(
            memory, *proposal_heads, num_queries, coder, content=query_embed, batch_invariant=batch_invariant
        )
        return proposals.tgt, proposals.query_pos, proposals.reference, proposals

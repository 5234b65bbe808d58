"""DINO's encoder-decoder (IDEA-Research/DINO `DeformableTransformer`, two_stage_type "standard"): the deformable
encoder, mixed query selection from the encoder's proposals, and DINO's decoder.

Batch-first: levels (B, C, H_l, W_l) in, flattened to (B, S, C) tokens; queries (B, Q, C).
"""
from torch import nn

from .deformable_encoder import DeformableTransformerEncoder
from .deformable_transformer import DeformableTransformer
from .dino_decoder import DINODecoder
from .proposals import TwoStageProposals

__all__ = ["DINOTransformer"]


class DINOTransformer(DeformableTransformer):
    """A `DeformableTransformer` (the deformable encoder over all levels, each level's position offset by a
    learned `level_embed`; the query selection from the encoder's proposals) with DINO's decoder and learned
    content queries (`tgt_embed`, mixed query selection: the queries' content is learned, their anchors are
    the selected proposals).

    Args:
        encoder, decoder: their layers fix the width and the number of levels, which must agree.
        proposals: the query selection: DINO's selects by the best class and gives no position queries
            (`TwoStageProposals(position_queries=False, select_by="best_class")`).
        num_queries: Q, the matching queries (900 in DINO).
    """

    def __init__(
        self,
        encoder: DeformableTransformerEncoder,
        decoder: DINODecoder,
        proposals: TwoStageProposals,
        num_queries: int = 900,
    ):
        super().__init__(encoder, decoder, proposals)
        # the official tgt_embed is created before the transformer's xavier initialisation, which it gets
        self.tgt_embed = nn.Embedding(num_queries, self.d_model)
        nn.init.xavier_uniform_(self.tgt_embed.weight)

    @property
    def num_queries(self) -> int:
        return self.tgt_embed.num_embeddings

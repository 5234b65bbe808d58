"""The Deformable DETR decoder (post-norm, no final norm), with the official parameter names.

Batch-first throughout: queries (B, Q, C); the memory is the encoder's output over the flattened levels,
(B, S, C) with S = sum_l H_l * W_l, finest level first.
"""
from typing import Optional

import torch
from torch import nn

from ...layers import FFN, MSDeformAttn
from .box_refinement import Reference
from .levels import FlattenedLevels
from .refining_decoder import RefiningDecoder

__all__ = ["DeformableTransformerDecoderLayer", "DeformableTransformerDecoder"]


class DeformableTransformerDecoderLayer(nn.Module):
    """Self-attention among the queries, deformable cross-attention to the memory, FFN; each add & norm.

    Queries and keys of both attentions carry the query position; the cross-attention samples around the
    reference, scaled into every padded level (`Reference.in_levels`). Official names: `self_attn` with
    `norm2`, `cross_attn` with `norm1`, the FFN's `linear1`, `linear2` and `norm3` (here `ffn.*`).

    Args:
        d_model: C; nhead: the heads of both attentions; dim_feedforward: the FFN's hidden width; dropout: of
        the attentions' outputs and the FFN; n_levels, n_points: of the deformable cross-attention.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        *,
        n_levels: int = 4,
        n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.cross_attn = MSDeformAttn(d_model, n_levels, nhead, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def self_attention(
        self, tgt: torch.Tensor, query_pos: torch.Tensor, self_attn_mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """(B, Q, C) -> (B, Q, C): self-attention, add & norm."""
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        return self.norm2(tgt + self.dropout2(attn))

    def cross_attention(
        self, tgt: torch.Tensor, query_pos: torch.Tensor, reference: Reference, memory: FlattenedLevels
    ) -> torch.Tensor:
        """(B, Q, C) -> (B, Q, C): deformable cross-attention around the reference, add & norm."""
        attn = self.cross_attn(
            tgt + query_pos, reference.in_levels(memory.valid_ratios), memory.src, memory.spatial_shapes,
            memory.level_start_index, memory.mask,
        )
        return self.norm1(tgt + self.dropout1(attn))

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference: Reference,
        memory: FlattenedLevels,
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The common decoder-layer call (see `RefiningDecoder`): tgt, query_pos (B, Q, C) -> (B, Q, C)."""
        tgt = self.self_attention(tgt, query_pos, self_attn_mask)
        return self.ffn(self.cross_attention(tgt, query_pos, reference, memory))


class DeformableTransformerDecoder(RefiningDecoder):
    """Deformable decoder layers, each attending around the reference of its queries, with per-layer box
    refinement (`RefiningDecoder` as it is: no final norm, positions as given)."""

"""MS-DETR (Zhao et al., CVPR 2024, Atten4Vis/MS-DETR): one-to-many supervision on the primary decoder's own
queries. What it adds to (two-stage, refined) Deformable DETR:

* the decoder layer of `--use_ms_detr`: cross-attention first, then self-attention, then the FFN; the
  cross-attention's output, through an auxiliary FFN, gives the layer's one-to-many features;
* the one-to-many predictions: those features through the same heads and from the same references as the
  one-to-one ones (`one_to_many_predictions`); `OneToManyMatcher` (sam_detr/modeling/o2m_matcher.py) assigns
  them in the criterion's "o2m_outputs" `LossGroup`.

Batch-first: queries (B, Q, C).
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ...layers import FFN
from .box_refinement import BoxRefinement
from .deformable_decoder import DeformableTransformerDecoderLayer
from .levels import FlattenedLevels

__all__ = ["MSDETRDecoderLayer", "one_to_many_predictions"]


class MSDETRDecoderLayer(DeformableTransformerDecoderLayer):
    """Deformable cross-attention, then self-attention among the queries, then the FFN; each add & norm.

    Attending to the image before the queries see each other leaves the cross-attention's output free of
    the self-attention's duplicate suppression: it suits one-to-many supervision, which the auxiliary FFN
    (`aux_ffn`; official `linear3`, `linear4`, `norm4`) reads. Only the one-to-one features go on to the
    next layer and the box refinement. Official names otherwise as `DeformableTransformerDecoderLayer`.

    Args:
        use_aux_ffn: one-to-many features through their own FFN (all published models); without it they
            are the cross-attention's output itself.
        (the other arguments: see `DeformableTransformerDecoderLayer`; the auxiliary FFN has width d_ffn.)
    """

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 2048,
        dropout: float = 0.1,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        use_aux_ffn: bool = True,
    ):
        super().__init__(d_model, d_ffn, dropout, n_levels, n_heads, n_points)
        self.aux_ffn = FFN(d_model, d_ffn, dropout) if use_aux_ffn else None

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: FlattenedLevels,
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """
        Args: see `DeformableTransformerDecoderLayer.forward`.
        Returns:
            the one-to-one features (B, Q, C), and in training the one-to-many features (B, Q, C), else None
            (inference reads only the one-to-one predictions).
        """
        attn = self.cross_attn(
            tgt + query_pos, reference_points, memory.src, memory.spatial_shapes, memory.level_start_index, memory.mask
        )
        tgt = self.norm1(tgt + self.dropout1(attn))
        o2m = None
        if self.training:
            o2m = tgt if self.aux_ffn is None else self.aux_ffn(tgt)
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        return self.ffn(tgt), o2m


def one_to_many_predictions(
    hs_o2m: torch.Tensor,
    references: Sequence[torch.Tensor],
    class_embed: Sequence[nn.Module],
    bbox_embed: Sequence[nn.Module],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every layer's one-to-many predictions, by the heads and from the references of its one-to-one ones.

    Args:
        hs_o2m: (num_layers, B, Q, C) the one-to-many features.
        references: per layer, the (B, Q, 2|4) reference its one-to-one box head refined.
        class_embed, bbox_embed: per layer (at least num_layers), the heads.
    Returns:
        logits (num_layers, B, Q, K) and boxes (num_layers, B, Q, 4) normalised (cx, cy, w, h).
    """
    if len(references) != len(hs_o2m):
        raise ValueError(f"got {len(references)} references for {len(hs_o2m)} layers of one-to-many features")
    logits = torch.stack([head(h) for head, h in zip(class_embed, hs_o2m)])
    boxes = torch.stack([BoxRefinement.predict(r, head(h)) for head, r, h in zip(bbox_embed, references, hs_o2m)])
    return logits, boxes

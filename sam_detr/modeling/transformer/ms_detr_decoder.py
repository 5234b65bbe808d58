"""MS-DETR (Zhao et al., CVPR 2024, Atten4Vis/MS-DETR): one-to-many supervision on the primary decoder's own
queries. Its decoder (what it adds to a two-stage, refined Deformable DETR):

* the decoder layer of `--use_ms_detr`: cross-attention first, then self-attention, then the FFN; the
  cross-attention's output, through an auxiliary FFN, gives the layer's one-to-many features;
* the decoder collects those features in training (`MSDETRDecoderOutput.hs_o2m`); their predictions, by the
  same heads and from the same references as the one-to-one ones (`one_to_many_predictions`), are what
  `OneToManyMatcher` (sam_detr/modeling/o2m_matcher.py) assigns in the criterion's "o2m_outputs" group.

Batch-first: queries (B, Q, C).
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ...layers import FFN
from ..box_coder import BoxCoder
from .box_refinement import Reference
from .deformable_decoder import DeformableTransformerDecoder, DeformableTransformerDecoderLayer
from .levels import FlattenedLevels
from .refining_decoder import DecoderOutput

__all__ = ["MSDETRDecoderLayer", "MSDETRDecoder", "MSDETRDecoderOutput"]


class MSDETRDecoderLayer(DeformableTransformerDecoderLayer):
    """Deformable cross-attention, then self-attention among the queries, then the FFN; each add & norm.

    Attending to the image before the queries see each other leaves the cross-attention's output free of
    the self-attention's duplicate suppression: it suits one-to-many supervision, which the auxiliary FFN
    (`aux_ffn`; official `linear3`, `linear4`, `norm4`) reads. Only the one-to-one features go on to the
    next layer and the box refinement. Official names otherwise as `DeformableTransformerDecoderLayer`.

    Args:
        use_aux_ffn: one-to-many features through their own FFN (all published models); without it they
            are the cross-attention's output itself.
        (the other arguments: see `DeformableTransformerDecoderLayer`; the auxiliary FFN has width
        dim_feedforward.)
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        *,
        n_levels: int = 4,
        n_points: int = 4,
        use_aux_ffn: bool = True,
    ):
        super().__init__(d_model, nhead, dim_feedforward, dropout, n_levels=n_levels, n_points=n_points)
        self.aux_ffn = FFN(d_model, dim_feedforward, dropout) if use_aux_ffn else None

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference: Reference,
        memory: FlattenedLevels,
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The common decoder-layer call: the one-to-one features (B, Q, C)."""
        return self.forward_features(tgt, query_pos, reference, memory, self_attn_mask)[0]

    def forward_features(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference: Reference,
        memory: FlattenedLevels,
        self_attn_mask: Optional[torch.Tensor] = None,
        one_to_many: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The one-to-one features (B, Q, C), and with `one_to_many` the one-to-many ones (B, Q, C), else None."""
        tgt = self.cross_attention(tgt, query_pos, reference, memory)
        o2m = None
        if one_to_many:
            o2m = tgt if self.aux_ffn is None else self.aux_ffn(tgt)
        tgt = self.self_attention(tgt, query_pos, self_attn_mask)
        return self.ffn(tgt), o2m


@dataclass
class MSDETRDecoderOutput(DecoderOutput):
    hs_o2m: Optional[torch.Tensor] = None  # (L, B, Q, C) the one-to-many features (training), else None

    def one_to_many_predictions(
        self, class_heads: Sequence[nn.Module], box_heads: Sequence[nn.Module], coder: BoxCoder
    ) -> Dict[str, torch.Tensor]:
        """Every layer's one-to-many predictions, by the heads and from the references of its one-to-one
        ones: "pred_logits" (L, B, Q, K) and "pred_boxes" (L, B, Q, 4)."""
        logits = torch.stack([head(h) for head, h in zip(class_heads, self.hs_o2m)])
        boxes = torch.stack([coder.decode(r, head(h)) for head, r, h in zip(box_heads, self.references, self.hs_o2m)])
        return {"pred_logits": logits, "pred_boxes": boxes}


class MSDETRDecoder(DeformableTransformerDecoder):
    """`MSDETRDecoderLayer`s; in training the output also holds every layer's one-to-many features."""

    output_type = MSDETRDecoderOutput

    def layer_forward(self, index, tgt, query_pos, reference, memory, self_attn_mask):
        if not self.training:  # inference reads only the one-to-one predictions
            return super().layer_forward(index, tgt, query_pos, reference, memory, self_attn_mask)
        tgt, o2m = self.layers[index].forward_features(tgt, query_pos, reference, memory, self_attn_mask, True)
        return tgt, {"hs_o2m": o2m}

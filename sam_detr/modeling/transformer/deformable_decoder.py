"""The Deformable DETR decoder (post-norm, no final norm), with the official parameter names.

Batch-first throughout: queries (B, Q, C); the memory is the encoder's output over the flattened levels,
(B, S, C) with S = sum_l H_l * W_l, finest level first.
"""
import copy
from typing import List, NamedTuple, Optional, Sequence

import torch
from torch import nn

from ...layers import FFN, MSDeformAttn
from .box_refinement import BoxRefinement
from .levels import FlattenedLevels

__all__ = ["DeformableTransformerDecoderLayer", "DeformableTransformerDecoder", "DecoderOutput"]


class DeformableTransformerDecoderLayer(nn.Module):
    """Self-attention among the queries, deformable cross-attention to the memory, FFN; each add & norm.

    Queries and keys of both attentions carry the query position. Official names: `self_attn` with
    `norm2`, `cross_attn` with `norm1`, the FFN's `linear1`, `linear2` and `norm3` (here `ffn.*`).

    Args:
        d_model: C; d_ffn: the FFN's hidden width; dropout: of the attentions' outputs and the FFN;
        n_levels, n_heads, n_points: of the deformable cross-attention (n_heads also for self-attention).
    """

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, d_ffn, dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: FlattenedLevels,
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            tgt, query_pos: (B, Q, C).
            reference_points: (B, Q, L, 2|4) points or boxes, normalised over each padded level.
            memory: the encoded levels (`memory.src`, (B, S, C)), their shapes and padding mask.
            self_attn_mask: (Q, Q) bool, True where query i may not attend to query j (`QueryGroups`).
        Returns:
            (B, Q, C)
        """
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        attn = self.cross_attn(
            tgt + query_pos, reference_points, memory.src, memory.spatial_shapes, memory.level_start_index, memory.mask
        )
        return self.ffn(self.norm1(tgt + self.dropout1(attn)))


class DecoderOutput(NamedTuple):
    hs: torch.Tensor  # (num_layers, B, Q, C) every layer's output
    boxes: torch.Tensor  # (num_layers, B, Q, 4) every layer's boxes (cx, cy, w, h) in [0, 1]
    references: List[torch.Tensor]  # per layer, the (B, Q, 2|4) reference its box head refined
    hs_o2m: Optional[torch.Tensor] = None  # (num_layers, B, Q, C) one-to-many features (MS-DETR, training)


class DeformableTransformerDecoder(nn.Module):
    """Decoder layers, each attending around the reference of its queries, with per-layer box refinement.

    Layer l's reference enters the deformable attention scaled into every padded level by the level's valid
    ratio; its box head (`bbox_embed[l]`, owned by the caller) predicts layer l's boxes, which with
    iterative refinement become layer l + 1's reference (see `BoxRefinement`).

    A layer may return (features, one-to-many features or None) (`MSDETRDecoderLayer`): only the features
    go on; the others are collected as `hs_o2m`.

    Args:
        layer: one decoder layer, deep-copied `num_layers` times.
    """

    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.d_model = layer.d_model

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference: torch.Tensor,
        memory: FlattenedLevels,
        bbox_embed: Sequence[nn.Module],
        refinement: BoxRefinement,
    ) -> DecoderOutput:
        """
        Args:
            tgt, query_pos: (B, Q, C) the content and position queries.
            reference: (B, Q, 2) points or (B, Q, 4) boxes in [0, 1] of the unpadded image.
            memory: the encoded levels (`memory.src`, (B, S, C)).
            bbox_embed: per layer, the box head (C -> 4).
            refinement: how a layer's boxes become the next layer's reference.
        """
        if len(bbox_embed) != len(self.layers):
            raise ValueError(f"got {len(bbox_embed)} box heads for {len(self.layers)} decoder layers")
        ratios = memory.valid_ratios[:, None]  # (B, 1, L, 2)
        ref = refinement.start(reference)
        hs, boxes, references, hs_o2m = [], [], [], []
        for layer, head in zip(self.layers, bbox_embed):
            scale = ratios if ref.boxes.shape[-1] == 2 else torch.cat([ratios, ratios], -1)
            tgt = layer(tgt, query_pos, ref.boxes[:, :, None] * scale, memory)
            if isinstance(tgt, tuple):
                tgt, o2m = tgt
                if o2m is not None:
                    hs_o2m.append(o2m)
            references.append(ref.head)
            layer_boxes, ref = refinement.step(ref, head(tgt))
            hs.append(tgt)
            boxes.append(layer_boxes)
        return DecoderOutput(torch.stack(hs), torch.stack(boxes), references, torch.stack(hs_o2m) if hs_o2m else None)

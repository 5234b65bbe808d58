"""Plain-DETR's decoder: pre-norm layers of global cross-attention (with BoxRPB) over one stride-16 map.

Batch-first: queries (B, Q, C); the memory is the flattened map, a one-level `FlattenedLevels` (B, S, C),
S = H * W.
"""
from typing import Optional

import torch
from torch import nn

from ...layers import FFN
from ...layers.init import trunc_normal_init_
from ...layers.level_shapes import level_shapes
from .box_refinement import Reference
from .box_rpb import GlobalCrossAttention
from .levels import FlattenedLevels
from .refining_decoder import RefiningDecoder

__all__ = ["GlobalDecoderLayer", "GlobalDecoder"]


class GlobalDecoderLayer(nn.Module):
    """Pre-norm: self-attention among the queries, global cross-attention to the memory, FFN, each as
    `x + f(norm(x))`. Queries and keys of the self-attention and the cross-attention's queries carry the
    query position; the cross-attention's keys carry the memory position. The reference boxes enter BoxRPB
    as (x1, y1, x2, y2) in input pixels (`Reference.padded_pixels`).

    Official names: `self_attn` with `norm2`, `cross_attn` with `norm1`, the FFN's `linear1`, `linear2`
    and `norm3` (here `ffn.*`).

    Args:
        d_model: C; nhead: of both attentions; dim_feedforward: the FFN's hidden width; dropout: of the
        residual branches and the FFN; rpe_type, rpe_hidden_dim, feature_stride: see `GlobalCrossAttention`
        (rpe_type None: the APE baseline, no BoxRPB).
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        *,
        rpe_type: Optional[str] = "linear",
        rpe_hidden_dim: int = 512,
        feature_stride: int = 16,
    ):
        super().__init__()
        self.d_model = d_model
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = GlobalCrossAttention(d_model, nhead, rpe_type, rpe_hidden_dim, feature_stride)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout, pre_norm=True)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference: Reference,
        memory: FlattenedLevels,
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The common decoder-layer call (see `RefiningDecoder`): tgt, query_pos (B, Q, C) -> (B, Q, C).
        `memory.batch_invariant`: padded keys at -inf (see `GlobalCrossAttention`)."""
        t = self.norm2(tgt)
        q = t + query_pos
        tgt = tgt + self.dropout2(self.self_attn(q, q, t, attn_mask=self_attn_mask, need_weights=False)[0])
        t = self.norm1(tgt)
        (H, W), stride = level_shapes(memory.spatial_shapes, memory.src.shape[1])[0], self.cross_attn.feature_stride
        # torch.tensor of the sizes, not new_tensor, which torch.export would freeze at the example's sizes
        padded = torch.tensor([W * stride, H * stride], dtype=memory.src.dtype, device=memory.src.device)
        boxes = reference.padded_pixels(memory.valid_ratios[:, 0], padded)
        attn = self.cross_attn(
            t + query_pos, boxes, memory.src + memory.pos, memory.src, (H, W), memory.mask, memory.batch_invariant
        )
        return self.ffn(tgt + self.dropout1(attn))


class GlobalDecoder(RefiningDecoder):
    """Global decoder layers with per-layer box refinement and one final LayerNorm: each layer's output goes
    through the shared `final_layer_norm` before the heads and the box refinement read it; the un-normed
    output feeds the next layer."""

    def __init__(self, layer: GlobalDecoderLayer, num_layers: int):
        super().__init__(layer, num_layers)
        self.final_layer_norm = nn.LayerNorm(layer.d_model)

    def output_norm(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.final_layer_norm(tgt)

    def reset_parameters(self) -> None:
        """The official decoder re-initialisation (after the transformer-wide xavier): every Linear,
        including the attentions' output projections and the BoxRPB MLPs, trunc-normal(0.02) with zero bias,
        every LayerNorm (1, 0); the self-attentions' packed input projections keep their xavier init."""
        for m in self.modules():  # in this order, as the official code draws them
            trunc_normal_init_(m)

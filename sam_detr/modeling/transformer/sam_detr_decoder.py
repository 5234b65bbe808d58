"""The SAM-DETR decoder (post-norm, no final norm), with the official parameter names.

Batch-first: (B, Q, C) queries; the memory is a `FlattenedLevels` (B, S, C), of which each layer reads one
level (the official code is sequence-first).
"""
from typing import Optional, Sequence

import torch
from torch import nn

from ...layers import FFN, MLP, MultiheadAttentionNoProj, points_sine_embed
from .box_refinement import Reference
from .conditional_detr_decoder import ConditionalSelfAttentionLayer
from .levels import FlattenedLevels
from .refining_decoder import RefiningDecoder
from .semantics_aligner import SemanticsAligner
from .smca import smca_gaussian_bias

__all__ = ["SAMDETRDecoderLayer", "SAMDETRDecoder"]


class SAMDETRDecoderLayer(ConditionalSelfAttentionLayer):
    """Self-attention, Semantics Aligner, cross-attention, FFN; each attention and the FFN add & norm.

    Self-attention is Conditional DETR's (`ConditionalSelfAttentionLayer`), positioned by the sine embedding
    of the reference-box centres (the layer positions its queries itself: the common call's query_pos is
    unused). Cross-attention matches per-head queries of all C channels (from the Semantics Aligner) against
    one C-channel key shared by the heads, and returns C / M value channels per head; with `smca`, SMCA's
    Gaussian around each head's salient point is added to its logits.

    Args:
        d_model: C; nhead: M; dim_feedforward, dropout: of the FFN and the attentions.
        smca: modulate cross-attention with SMCA's Gaussian (the "w/ SMCA" models).
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        *,
        smca: bool = False,
    ):
        super().__init__(d_model, nhead, dropout)
        self.smca = smca
        self.semantics_aligner = SemanticsAligner(d_model, nhead, predict_scales=smca)
        self.ca_qcontent_proj = nn.Linear(d_model, d_model)
        self.ca_kcontent_proj = nn.Linear(d_model, d_model)
        self.ca_v_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_sine_proj = MLP(d_model, d_model, d_model, 2)
        self.ca_kpos_sine_proj = MLP(d_model, d_model, d_model, 2)
        self.cross_attn = MultiheadAttentionNoProj(nhead * d_model, nhead, dropout=dropout, vdim=d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: Optional[torch.Tensor],
        reference: Reference,
        memory: FlattenedLevels,
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The common decoder-layer call (see `RefiningDecoder`): tgt (B, Q, C) -> (B, Q, C); `memory` the one
        level attended to, `reference.boxes` (B, Q, 4) normalised to the unpadded image."""
        B, Q, C = tgt.shape
        boxes, valid_ratio = reference.boxes, memory.valid_ratios[:, 0]
        # the official sine embedding runs under no_grad: no gradient through the centres' embedding
        centre_pos = points_sine_embed(boxes[..., :2].detach(), num_feats=C // 2)
        tgt = self.self_attention(tgt, centre_pos, self_attn_mask)

        memory_map = memory.as_map()
        aligned = self.semantics_aligner(tgt, memory_map, boxes, valid_ratio)
        q = (self.ca_qcontent_proj(aligned.content) + self.ca_qpos_sine_proj(aligned.pos)).view(B, Q, self.nhead * C)
        k = self.ca_kcontent_proj(memory.src) + self.ca_kpos_sine_proj(memory.pos)  # shared by the heads
        bias = None
        if self.smca:
            bias = smca_gaussian_bias(aligned.points, aligned.scales, memory_map.shape[-2:], valid_ratio)
        attn = self.cross_attn(q, k, self.ca_v_proj(memory.src), key_padding_mask=memory.mask, attn_bias=bias)
        return self.ffn(self.norm2(tgt + self.dropout2(attn)))


class SAMDETRDecoder(RefiningDecoder):
    """Decoder layers with per-layer box refinement of learned reference boxes, layer l attending to level
    `layer_levels[l]` of the memory.

    With the "logit" form of `BoxRefinement`: layer l's reference boxes are `sigmoid(g_l)`, g_0 the learned
    box logits (not detached, so that they learn through layer 0's box head), and
    `g_{l+1} = detach(g_l + bbox_embed[l](h_l))`, the running logit without inverse_sigmoid's clamp; layer l
    predicts `sigmoid(inverse_sigmoid(sigmoid(g_l)) + bbox_embed[l](h_l))`.

    Args:
        layer: one decoder layer, deep-copied `num_layers` times (so all copies start equal until the
            transformer re-initialises their weights, as in the official code).
        layer_levels: per layer, the index of the feature level it attends to (default: 0 for all).
    """

    def __init__(self, layer: SAMDETRDecoderLayer, num_layers: int, layer_levels: Optional[Sequence[int]] = None):
        super().__init__(layer, num_layers)
        if layer_levels is None:
            layer_levels = [0] * num_layers
        if len(layer_levels) != num_layers:
            raise ValueError(f"layer_levels {list(layer_levels)} must name one level per layer ({num_layers})")
        self.layer_levels = list(layer_levels)

    def layer_forward(self, index, tgt, query_pos, reference, memory, self_attn_mask):
        level = memory.level(self.layer_levels[index])
        return self.layers[index](tgt, query_pos, reference, level, self_attn_mask), {}

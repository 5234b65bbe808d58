"""The SAM-DETR decoder (post-norm, no final norm), with the official parameter names.

Tensors are sequence-first, as in the official code: (Q, B, C) queries, (S, B, C) memory.
"""
import copy
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ...layers import FFN, MLP, MultiheadAttentionNoProj, points_sine_embed
from .box_refinement import BoxRefinement
from .conditional_detr_decoder import ConditionalSelfAttentionLayer
from .semantics_aligner import SemanticsAligner
from .smca import smca_gaussian_bias

__all__ = ["MemoryLevel", "SAMDETRDecoderLayer", "SAMDETRDecoder"]


class MemoryLevel(NamedTuple):
    """One encoded feature level, as the decoder layers attend to it."""

    memory: torch.Tensor  # (S, B, C), S = H * W
    memory_2d: torch.Tensor  # (B, C, H, W), the same memory, contiguous
    mask: torch.Tensor  # (B, S) bool, True on padding
    pos: torch.Tensor  # (S, B, C)
    valid_ratio: torch.Tensor  # (B, 2) unpadded fraction (w, h)


class SAMDETRDecoderLayer(ConditionalSelfAttentionLayer):
    """Self-attention, Semantics Aligner, cross-attention, FFN; each attention and the FFN add & norm.

    Self-attention is Conditional DETR's (`ConditionalSelfAttentionLayer`), positioned by the sine embedding of the reference-box centres. Cross-attention matches
    per-head queries of all C channels (from the Semantics Aligner) against one C-channel key shared by the
    heads, and returns C / M value channels per head; with `smca`, SMCA's Gaussian around each head's
    salient point is added to its logits.

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
        level: MemoryLevel,
        ref_boxes: torch.Tensor,
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            tgt: (Q, B, C) queries.
            level: the memory attended to.
            ref_boxes: (B, Q, 4) reference boxes (cx, cy, w, h), normalised to the unpadded image.
            self_attn_mask: (Q, Q) bool, True where query i may not attend to query j (`QueryGroups`).
        Returns:
            (Q, B, C)
        """
        Q, B, C = tgt.shape
        # the official sine embedding runs under no_grad: no gradient through the centres' embedding
        centre_pos = points_sine_embed(ref_boxes[..., :2].detach().transpose(0, 1), num_feats=C // 2)
        tgt = self.self_attention(tgt, centre_pos, self_attn_mask)

        aligned = self.semantics_aligner(tgt, level.memory_2d, ref_boxes, level.valid_ratio)
        q = (self.ca_qcontent_proj(aligned.content) + self.ca_qpos_sine_proj(aligned.pos)).view(Q, B, self.nhead * C)
        k = self.ca_kcontent_proj(level.memory) + self.ca_kpos_sine_proj(level.pos)  # shared by the heads
        bias = None
        if self.smca:
            bias = smca_gaussian_bias(aligned.points, aligned.scales, level.memory_2d.shape[-2:], level.valid_ratio)
        attn = self.cross_attn(q, k, self.ca_v_proj(level.memory), key_padding_mask=level.mask, attn_bias=bias)
        return self.ffn(self.norm2(tgt + self.dropout2(attn)))


class SAMDETRDecoder(nn.Module):
    """Decoder layers with per-layer box refinement of learned reference boxes.

    Layer l attends to `levels[layer_levels[l]]` with reference boxes `sigmoid(g_l)`: g_0 are the learned
    box logits (not detached, so that they learn through layer 0's box head), and
    `g_{l+1} = detach(g_l + bbox_embed[l](h_l))`, the running logit without inverse_sigmoid's clamp (the
    "logit" form of `BoxRefinement`). Layer l predicts
    `sigmoid(inverse_sigmoid(sigmoid(g_l)) + bbox_embed[l](h_l))`.

    Args:
        layer: one decoder layer, deep-copied `num_layers` times (so all copies start equal until the
            transformer re-initialises their weights, as in the official code).
        layer_levels: per layer, the index of the feature level it attends to (default: 0 for all).
    """

    def __init__(self, layer: SAMDETRDecoderLayer, num_layers: int, layer_levels: Optional[Sequence[int]] = None):
        super().__init__()
        if layer_levels is None:
            layer_levels = [0] * num_layers
        if len(layer_levels) != num_layers:
            raise ValueError(f"layer_levels {list(layer_levels)} must name one level per layer ({num_layers})")
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.layer_levels = list(layer_levels)
        self.d_model = layer.d_model
        self.refinement = BoxRefinement("logit")

    def forward(
        self, levels: List[MemoryLevel], ref_logits: torch.Tensor, bbox_embed: Sequence[nn.Module]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            levels: the encoded levels.
            ref_logits: (Q, 4) the learned reference boxes, unactivated (cx, cy, w, h).
            bbox_embed: per layer, the box head (C -> 4), owned by the caller.
        Returns:
            (num_layers, B, Q, C) the outputs of every layer, and (num_layers, B, Q, 4) their boxes.
        """
        if len(bbox_embed) != len(self.layers):
            raise ValueError(f"got {len(bbox_embed)} box heads for {len(self.layers)} decoder layers")
        B = levels[0].memory.shape[1]
        reference = self.refinement.start(ref_logits[None].expand(B, -1, -1))
        tgt = ref_logits.new_zeros((ref_logits.shape[0], B, self.d_model))
        hs, boxes = [], []
        for layer, level, head in zip(self.layers, self.layer_levels, bbox_embed):
            tgt = layer(tgt, levels[level], reference.boxes)
            layer_boxes, reference = self.refinement.step(reference, head(tgt).transpose(0, 1))
            boxes.append(layer_boxes)
            hs.append(tgt)
        return torch.stack(hs).transpose(1, 2), torch.stack(boxes)

"""The Conditional DETR decoder (Meng et al., ICCV 2021, as Atten4Vis/ConditionalDETR), with the official
parameter names, and its encoder-decoder.

Batch-first: (B, Q, C) queries, (B, S, C) memory (the official code is sequence-first).
"""
import copy
from typing import Optional, Tuple

import torch
from torch import nn

from ...layers import FFN, MLP, MultiheadAttentionNoProj, points_sine_embed
from .detr_transformer import TransformerEncoder

__all__ = [
    "ConditionalSelfAttentionLayer",
    "ConditionalDETRDecoderLayer",
    "ConditionalDETRDecoder",
    "ConditionalDETRTransformer",
]


class ConditionalSelfAttentionLayer(nn.Module):
    """A decoder layer that opens with Conditional DETR's self-attention (SAM-DETR's is the same):
    content and position get separate projections that are summed for queries and keys, the values are
    projected content, and the attention has no projection of its own; then add & norm.

    Args:
        d_model: C; nhead: M; dropout: of the attention weights and of the residual branch.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, dropout: float = 0.1):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.sa_qcontent_proj = nn.Linear(d_model, d_model)
        self.sa_qpos_proj = nn.Linear(d_model, d_model)
        self.sa_kcontent_proj = nn.Linear(d_model, d_model)
        self.sa_kpos_proj = nn.Linear(d_model, d_model)
        self.sa_v_proj = nn.Linear(d_model, d_model)
        self.self_attn = MultiheadAttentionNoProj(d_model, nhead, dropout=dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)

    def self_attention(
        self, tgt: torch.Tensor, query_pos: torch.Tensor, attn_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """tgt, query_pos: (B, Q, C); attn_mask: (Q, Q) bool, True where query i may not attend to query j
        (`QueryGroups`) -> (B, Q, C)"""
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        attn = self.self_attn(q, k, self.sa_v_proj(tgt), attn_mask=attn_mask)
        return self.norm1(tgt + self.dropout1(attn))


class ConditionalDETRDecoderLayer(ConditionalSelfAttentionLayer):
    """Self-attention, conditional cross-attention, FFN; post-norm.

    Cross-attention: each head matches the concatenation of its C / M content channels and its C / M
    position channels (2C / M in all, hence the scale (2C / M)^-0.5), query against key. The query's
    position part is the conditional spatial query (`query_sine`, from the decoder); the key's is the
    projected memory position. The layer that holds `ca_qpos_proj` (the first; the decoder sets it to None
    in the others, as the official code, so that the key exists only there) also adds the positions to the
    content parts, as DETR does.

    Args:
        d_model: C; nhead: M; dim_feedforward, dropout: of the FFN and the attentions.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__(d_model, nhead, dropout)
        self.ca_qcontent_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_proj: Optional[nn.Linear] = nn.Linear(d_model, d_model)
        self.ca_kcontent_proj = nn.Linear(d_model, d_model)
        self.ca_kpos_proj = nn.Linear(d_model, d_model)
        self.ca_v_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_sine_proj = nn.Linear(d_model, d_model)
        self.cross_attn = MultiheadAttentionNoProj(2 * d_model, nhead, dropout=dropout, vdim=d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, tgt, memory, memory_mask, pos, query_pos, query_sine, self_attn_mask=None):
        """
        Args:
            tgt, query_pos: (B, Q, C) queries and their learned positions.
            memory, pos: (B, S, C) encoder output and its sine positions; memory_mask: (B, S) True on padding.
            query_sine: (B, Q, C) the conditional spatial query before `ca_qpos_sine_proj`.
            self_attn_mask: (Q, Q) bool, True where query i may not attend to query j (`QueryGroups`).
        Returns:
            (B, Q, C)
        """
        tgt = self.self_attention(tgt, query_pos, self_attn_mask)
        B, Q, C = tgt.shape
        S, M = memory.shape[1], self.nhead
        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        k_pos = self.ca_kpos_proj(pos)
        if self.ca_qpos_proj is not None:
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        q = torch.cat([q.view(B, Q, M, -1), self.ca_qpos_sine_proj(query_sine).view(B, Q, M, -1)], 3)
        k = torch.cat([k.view(B, S, M, -1), k_pos.view(B, S, M, -1)], 3)
        attn = self.cross_attn(q.view(B, Q, 2 * C), k.view(B, S, 2 * C), self.ca_v_proj(memory), memory_mask)
        return self.ffn(self.norm2(tgt + self.dropout2(attn)))


class ConditionalDETRDecoder(nn.Module):
    """Decoder layers whose cross-attention is steered by the conditional spatial query.

    The reference point of each query, `s = sigmoid(ref_point_head(query_pos))` (x, y), is computed once
    and never refined. Layer l's spatial query is the sine embedding of s, (y, x) order, scaled element-wise
    by `query_scale(output of layer l - 1)` from layer 1 on (layer 0 has no previous output: scale 1).
    Every layer's output goes through the shared final `norm` to the heads; the un-normed output goes on.

    Args:
        layer: one decoder layer, deep-copied `num_layers` times; `ca_qpos_proj` is kept in the first only.
    """

    def __init__(self, layer: ConditionalDETRDecoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        for later in self.layers[1:]:
            later.ca_qpos_proj = None
        d = self.d_model = layer.d_model
        self.query_scale = MLP(d, d, d, 2)
        self.ref_point_head = MLP(d, d, 2, 2)
        self.norm = nn.LayerNorm(d)

    def forward(self, memory, memory_mask, pos, query_pos, self_attn_mask=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            memory, pos: (B, S, C); memory_mask: (B, S) True on padding; query_pos: (B, Q, C);
            self_attn_mask: (Q, Q) bool, True where query i may not attend to query j.
        Returns:
            (num_layers, B, Q, C) every layer's normed output, and (B, Q, 2) the reference points (x, y).
        """
        reference = self.ref_point_head(query_pos).sigmoid()
        sine = points_sine_embed(reference, num_feats=self.d_model // 2)
        tgt = torch.zeros_like(query_pos)
        hs = []
        for i, layer in enumerate(self.layers):
            query_sine = sine if i == 0 else sine * self.query_scale(tgt)
            tgt = layer(tgt, memory, memory_mask, pos, query_pos, query_sine, self_attn_mask)
            hs.append(self.norm(tgt))
        return torch.stack(hs), reference


class ConditionalDETRTransformer(nn.Module):
    """DETR's encoder over one feature level, then the Conditional DETR decoder; initialised as the
    official code (xavier_uniform over every parameter of more than one dimension, after building)."""

    def __init__(self, encoder: TransformerEncoder, decoder: ConditionalDETRDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.d_model = decoder.d_model
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            src, pos: (B, C, H, W) projected features and their sine positions; mask: (B, H, W) True on
                padding; query_embed: (Q, C) learned query positions.
        Returns:
            (num_decoder_layers, B, Q, C) normed decoder outputs and (B, Q, 2) reference points (x, y).
        """
        B = src.shape[0]
        pos = pos.flatten(2).transpose(1, 2)
        mask = mask.flatten(1)
        memory = self.encoder(src.flatten(2).transpose(1, 2), key_padding_mask=mask, pos=pos)
        return self.decoder(memory, mask, pos, query_embed.unsqueeze(0).repeat(B, 1, 1))

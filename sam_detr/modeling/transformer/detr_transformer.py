"""The DETR encoder-decoder (post-norm), with facebookresearch/detr's parameter names.

Its encoder layer is also the single-scale encoder of Conditional DETR and SAM-DETR. Batch-first: (B, S, C)
for the flattened feature map, (B, Q, C) for queries (the official code is sequence-first; the attentions
compute the same).
"""
import copy
from typing import Optional

import torch
from torch import nn

from ...layers import FFN

__all__ = ["TransformerEncoderLayer", "TransformerEncoder", "DetrTransformer"]


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def _with_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


class TransformerEncoderLayer(nn.Module):
    """Self-attention (queries and keys carry the position) then FFN, each followed by add & norm.

    Attention (here and in DETR's decoder) runs fused in inference (`need_weights=False`:
    F.scaled_dot_product_attention, which never holds the (B * M, S, S) weights; an encoder layer at
    800x1333 takes 61 ms instead of 121), and as the official code in training, where the fused path is
    no faster on the CPU and its backward strays from the official gradients (1e-3 relative in float64
    on Conditional DETR-R101)."""

    def __init__(self, d_model: int = 256, nhead: int = 8, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, src, key_padding_mask=None, pos=None):
        """src, pos: (B, S, C); key_padding_mask: (B, S) True on padding -> (B, S, C)"""
        q = k = _with_pos(src, pos)
        attn = self.self_attn(q, k, src, key_padding_mask=key_padding_mask, need_weights=self.training)[0]
        src = self.norm1(src + self.dropout1(attn))
        return self.ffn(src)


class TransformerEncoder(nn.Module):
    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = _clones(layer, num_layers)

    def forward(self, src, key_padding_mask=None, pos=None):
        """src, pos: (B, S, C); key_padding_mask: (B, S) -> (B, S, C)"""
        for layer in self.layers:
            src = layer(src, key_padding_mask=key_padding_mask, pos=pos)
        return src


class TransformerDecoderLayer(nn.Module):
    """DETR's decoder layer: self-attention, cross-attention to the memory, FFN; post-norm."""

    def __init__(self, d_model: int = 256, nhead: int = 8, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None, self_attn_mask=None):
        """tgt, query_pos: (B, Q, C); memory, pos: (B, S, C); memory_key_padding_mask: (B, S); self_attn_mask:
        (Q, Q) bool, True where query i may not attend to query j (`QueryGroups`) -> (B, Q, C)"""
        q = k = _with_pos(tgt, query_pos)
        attn = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=self.training)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        attn = self.multihead_attn(
            _with_pos(tgt, query_pos), _with_pos(memory, pos), memory, key_padding_mask=memory_key_padding_mask,
            need_weights=self.training,
        )[0]
        return self.ffn(self.norm2(tgt + self.dropout2(attn)))


class TransformerDecoder(nn.Module):
    """Returns every layer's output through the shared final norm: (num_layers, B, Q, C)."""

    def __init__(self, layer: nn.Module, num_layers: int, d_model: int):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None, self_attn_mask=None):
        intermediate = []
        for layer in self.layers:
            tgt = layer(
                tgt, memory, memory_key_padding_mask=memory_key_padding_mask, pos=pos, query_pos=query_pos,
                self_attn_mask=self_attn_mask,
            )
            intermediate.append(self.norm(tgt))
        return torch.stack(intermediate)


class DetrTransformer(nn.Module):
    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.d_model = d_model
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout), num_encoder_layers
        )
        self.decoder = TransformerDecoder(
            TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout), num_decoder_layers, d_model
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos):
        """
        Args:
            src: (B, C, H, W) projected features; mask: (B, H, W) True on padding;
            query_embed: (Q, C) learned query positions; pos: (B, C, H, W).
        Returns:
            (num_decoder_layers, B, Q, C) decoder outputs.
        """
        B = src.shape[0]
        src = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        mask = mask.flatten(1)
        query_pos = query_embed.unsqueeze(0).repeat(B, 1, 1)
        memory = self.encoder(src, key_padding_mask=mask, pos=pos)
        return self.decoder(
            torch.zeros_like(query_pos), memory, memory_key_padding_mask=mask, pos=pos, query_pos=query_pos
        )

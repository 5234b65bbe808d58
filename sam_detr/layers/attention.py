"""Multi-head attention over inputs that are already projected (Conditional DETR, SAM-DETR)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultiheadAttentionNoProj"]


class MultiheadAttentionNoProj(nn.Module):
    """Multi-head attention with no input projections: only `out_proj` (vdim -> vdim) is learned.

    Queries and keys have `embed_dim` channels (`embed_dim // num_heads` per head) and values `vdim`
    (`vdim // num_heads` per head), so a head may match on more channels than it returns (SAM-DETR
    matches on 256 per head and returns 32). A key with only `embed_dim // num_heads` channels is shared
    by all heads without being copied. Batch-first.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, vdim: Optional[int] = None):
        super().__init__()
        vdim = embed_dim if vdim is None else vdim
        if embed_dim % num_heads or vdim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) and vdim ({vdim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.vdim = vdim
        self.num_heads = num_heads
        self.dropout = dropout
        self.out_proj = nn.Linear(vdim, vdim)
        nn.init.constant_(self.out_proj.bias, 0.0)
        # a module, so that a forward hook sees the logits and the weights (sam_detr.visualization)
        self.softmax = nn.Softmax(dim=-1)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
        attn_bias: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, embed_dim).
            key: (N, S, embed_dim), or (N, S, embed_dim // num_heads) for a key shared by all heads.
            value: (N, S, vdim).
            key_padding_mask: (N, S) bool, True where a key is padding.
            attn_mask: (Lq, S) or (N * num_heads, Lq, S); bool (True blocks) or float (added).
            attn_bias: (N * num_heads, Lq, S) float, added after the masks (SMCA's Gaussian).
        Returns:
            (N, Lq, vdim)
        """
        N, Lq, E = query.shape
        S = key.shape[1]
        H = self.num_heads
        head_dim = E // H
        q = (query * float(head_dim) ** -0.5).reshape(N, Lq, H, head_dim).transpose(1, 2)  # (N, H, Lq, hd)
        if key.shape[-1] == head_dim and head_dim != E:
            # (N, H*Lq, hd) @ (N, hd, S): one product per image instead of one per head
            logits = torch.bmm(q.reshape(N, H * Lq, head_dim), key.transpose(1, 2)).view(N * H, Lq, S)
        else:
            k = key.reshape(N, S, H, head_dim).permute(0, 2, 3, 1).reshape(N * H, head_dim, S)
            logits = torch.bmm(q.reshape(N * H, Lq, head_dim), k)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                logits = logits.masked_fill(attn_mask, float("-inf"))
            else:
                logits = logits + attn_mask
        if key_padding_mask is not None:
            logits = logits.view(N, H, Lq, S).masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            logits = logits.view(N * H, Lq, S)
        if attn_bias is not None:
            logits = logits + attn_bias
        weights = self.softmax(logits)
        weights = F.dropout(weights, p=self.dropout, training=self.training)
        v = value.reshape(N, S, H, self.vdim // H).transpose(1, 2).reshape(N * H, S, self.vdim // H)
        out = torch.bmm(weights, v).view(N, H, Lq, self.vdim // H).transpose(1, 2).reshape(N, Lq, self.vdim)
        return self.out_proj(out)

"""Swin Transformer (v1) as DINO runs it (IDEA-Research/DINO `models/dino/swin_transformer.py`, from
Swin-Transformer-Object-Detection), a Detectron2 `Backbone`.

What the official computation has and this file reproduces:

* pre-norm blocks, `x + drop_path(attn(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`, nn.LayerNorm (eps 1e-5);
* scaled dot-product window attention (`head_dim ** -0.5`) plus a learned relative position bias table
  ((2 ws - 1)^2 rows per head) gathered by `relative_position_index`;
* windows as SwinV2's here (`window_order`): the normalised map padded at the bottom/right to whole windows
  (zeros: a padding token's q, k, v are the qkv bias), then cyclically shifted; the shift mask is -100;
* patch merging: 2x2 neighbours concatenated, LayerNorm over 4C, then a linear reduction to 2C (no bias).

Tokens are batch-first, (B, H*W, C), row-major over (H, W), between the layers. The official state dict's
`relative_position_index` buffers are geometry (rebuilt here, not stored).
"""
import functools
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torchvision.ops import stochastic_depth

from .swin_v2 import (
    PatchEmbed, StageWindows, SwinTrunk, _Mlp, gather_2x2, merge_heads, relative_position_index, stage_windows,
)

__all__ = ["SwinTransformer", "WindowAttention"]

NORM_EPS = 1e-5  # nn.LayerNorm's default, the official norm_layer


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows, with a learned relative position bias per head."""

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        index = relative_position_index(window_size, window_size)
        self.register_buffer("relative_position_index", index, persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, windows: StageWindows) -> torch.Tensor:
        """
        Args:
            x: (B, S, C) the tokens of B maps.
            windows: `stage_windows`'s (gather, scatter, shift mask or None): q, k, v are computed for the maps'
                tokens and gathered into windows (a padding token's are the qkv bias), the windows' outputs
                scattered back before the output projection.
        Returns:
            (B, S, C)
        """
        gather, scatter, mask = windows
        b, _, c = x.shape
        n = self.window_size**2
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, self.qkv.bias.to(qkv.dtype).expand(b, 1, -1)], 1).index_select(1, gather)
        q, k, v = qkv.view(-1, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias + mask[:, None]).repeat(q.shape[0] // nw, 1, 1, 1)  # window b' has mask b' % nW
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        out = merge_heads(out).view(b, -1, c).index_select(1, scatter)
        return self.proj(out)


class SwinBlock(nn.Module):
    """A pre-norm Swin block: (shifted) window attention, then the MLP, each added through stochastic depth."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.shift_size = shift_size
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, windows: StageWindows) -> torch.Tensor:
        """(B, H*W, C) -> (B, H*W, C); windows: the stage's windows for this block's shift."""
        x = x + stochastic_depth(self.attn(self.norm1(x), windows), self.drop_path, "row", self.training)
        return x + stochastic_depth(self.mlp(self.norm2(x)), self.drop_path, "row", self.training)


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated ((0,0), (1,0), (0,1), (1,1) of (row, col)), normalised over 4C, reduced to 2C
    (Swin's pre-norm merging). Odd sizes are zero-padded."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """(B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C)"""
        return self.reduction(self.norm(gather_2x2(x, size)))


class SwinStage(nn.Module):
    """The blocks of one resolution (shift on every odd block), then the patch merging if any (the official
    BasicLayer)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        drop_path: Sequence[float],
        mlp_ratio: float,
        downsample: bool,
        use_checkpoint: bool,
    ):
        super().__init__()
        self.window_size = window_size
        self.use_checkpoint = use_checkpoint
        shift = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else shift, mlp_ratio, drop_path[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, size: Tuple[int, int]):
        """(B, H*W, C) -> the stage's output (B, H*W, C) and the next stage's input with its size."""
        h, w = size
        windows = stage_windows(h, w, self.window_size, [blk.shift_size for blk in self.blocks], x.device)
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, windows[blk.shift_size], use_reentrant=False)
            else:
                x = blk(x, windows[blk.shift_size])
        if self.downsample is None:
            return x, x, size
        return x, self.downsample(x, size), ((h + 1) // 2, (w + 1) // 2)


class SwinTransformer(SwinTrunk):
    """Swin (v1) trunk with the official parameter names (`patch_embed`, `layers.i.blocks.j`,
    `layers.i.downsample`, `norm{i}` for each output stage).

    Outputs "res2".."res5" (strides 4, 8, 16, 32; embed_dim * 1, 2, 4, 8 channels), each normalised by its
    `norm{i}`, (B, C, H_s, W_s). Any input size works (the model pads patches, windows and odd merges itself).
    Initialisation as the official DINO backbone before its pretrained weights are loaded: PyTorch's
    defaults, the bias tables trunc-normal(0.02).

    Args:
        embed_dim, depths, num_heads, window_size, mlp_ratio: the architecture (Swin-L 384: 192, (2, 2, 18, 2),
            (6, 12, 24, 48), 12, 4).
        drop_path_rate: stochastic depth, rising linearly from 0 to this over all blocks (DINO: 0.2).
        out_features: among "res2".."res5".
        use_checkpoint: activation checkpointing of every block while gradients are computed.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        drop_path_rate: float = 0.2,
        out_features: Sequence[str] = ("res3", "res4", "res5"),
        mlp_ratio: float = 4.0,
        patch_size: int = 4,
        in_chans: int = 3,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        n = len(depths)
        if len(num_heads) != n:
            raise ValueError(f"num_heads has {len(num_heads)} entries, depths {n}")
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, eps=NORM_EPS)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList(
            SwinStage(
                embed_dim * 2**i, depths[i], num_heads[i], window_size, rates[sum(depths[:i]) : sum(depths[: i + 1])],
                mlp_ratio, downsample=i < n - 1, use_checkpoint=use_checkpoint,
            )
            for i in range(n)
        )
        self._add_outputs(n, embed_dim, patch_size, out_features, functools.partial(nn.LayerNorm, eps=NORM_EPS))

"""The Deformable DETR encoder (post-norm, MSDeformAttn self-attention), with the official parameter names.

Generic over the number of levels, points and FFN width: SAM-DETR-MS uses it with 3 levels, 4 points and
an FFN of 1024; Deformable DETR with 4 levels. Tensors are batch-first, the levels flattened and
concatenated finest first, as in the official code: (B, S, C) with S = sum_l H_l * W_l.
"""
import copy
from typing import List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...layers import MSDeformAttn

__all__ = [
    "DeformableTransformerEncoderLayer",
    "DeformableTransformerEncoder",
    "FlattenedLevels",
    "flatten_levels",
    "valid_ratios",
]


def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) mask, True on padding -> (B, 2): the unpadded fraction (w, h) of the map.

    Counted along the first column and row, as the official code does (padding is bottom/right).
    """
    _, H, W = mask.shape
    valid_h = torch.sum(~mask[:, :, 0], 1)
    valid_w = torch.sum(~mask[:, 0, :], 1)
    return torch.stack([valid_w.float() / W, valid_h.float() / H], -1)


class FlattenedLevels(NamedTuple):
    """Feature levels flattened and concatenated, finest first (see `flatten_levels`)."""

    src: torch.Tensor  # (B, S, C)
    mask: torch.Tensor  # (B, S) bool, True on padding
    pos: torch.Tensor  # (B, S, C)
    spatial_shapes: torch.Tensor  # (L, 2) int64, (H_l, W_l)
    level_start_index: torch.Tensor  # (L,) int64
    valid_ratios: torch.Tensor  # (B, L, 2), (w, h)


def flatten_levels(srcs: List[torch.Tensor], masks: List[torch.Tensor], pos: List[torch.Tensor]) -> FlattenedLevels:
    """
    Args:
        srcs, pos: per level, (B, C, H_l, W_l); masks: per level, (B, H_l, W_l) bool, True on padding.
    """
    spatial_shapes = torch.as_tensor([s.shape[-2:] for s in srcs], dtype=torch.long, device=srcs[0].device)
    level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
    return FlattenedLevels(
        src=torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1),
        mask=torch.cat([m.flatten(1) for m in masks], 1),
        pos=torch.cat([p.flatten(2).transpose(1, 2) for p in pos], 1),
        spatial_shapes=spatial_shapes,
        level_start_index=level_start_index,
        valid_ratios=torch.stack([valid_ratios(m) for m in masks], 1),
    )


class DeformableTransformerEncoderLayer(nn.Module):
    """Deformable self-attention over all levels (queries carry the position), then FFN; post-norm."""

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
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None):
        """
        Args:
            src, pos: (B, S, C); reference_points: (B, S, L, 2) normalised (x, y) over each padded level;
            spatial_shapes: (L, 2); level_start_index: (L,); padding_mask: (B, S) True on padding.
        Returns:
            (B, S, C)
        """
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class DeformableTransformerEncoder(nn.Module):
    def __init__(self, layer: DeformableTransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    @property
    def num_levels(self) -> int:
        return self.layers[0].self_attn.n_levels

    @staticmethod
    def reference_points(spatial_shapes: torch.Tensor, valid_ratios: torch.Tensor) -> torch.Tensor:
        """The centre of every token, normalised over each padded level: (B, S, L, 2) (x, y).

        A token's centre is normalised by the unpadded size of its own level, then scaled by every level's
        valid ratio, so that it lands on the same image point in every level.
        """
        points = []
        for lvl, (H, W) in enumerate(spatial_shapes.tolist()):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, H - 0.5, H, dtype=torch.float32, device=valid_ratios.device),
                torch.linspace(0.5, W - 0.5, W, dtype=torch.float32, device=valid_ratios.device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * H)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * W)
            points.append(torch.stack((ref_x, ref_y), -1))
        return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]

    def forward(
        self,
        src: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        valid_ratios: torch.Tensor,
        pos: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            src, pos: (B, S, C); spatial_shapes: (L, 2); level_start_index: (L,); valid_ratios: (B, L, 2);
            padding_mask: (B, S) True on padding.
        Returns:
            (B, S, C)
        """
        reference_points = self.reference_points(spatial_shapes, valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return src

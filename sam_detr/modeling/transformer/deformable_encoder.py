"""The Deformable DETR encoder (post-norm, MSDeformAttn self-attention), with the official parameter names.

Generic over the number of levels, points and FFN width: SAM-DETR-MS uses it with 3 levels, 4 points and
an FFN of 1024; Deformable DETR with 4 levels. Tensors are batch-first, the levels flattened and
concatenated finest first, as in the official code: (B, S, C) with S = sum_l H_l * W_l.
"""
import copy
import torch
from torch import nn

from ...layers import FFN, MSDeformAttn
from ...layers.level_shapes import level_shapes
from .levels import FlattenedLevels

__all__ = ["DeformableTransformerEncoderLayer", "DeformableTransformerEncoder"]


class DeformableTransformerEncoderLayer(nn.Module):
    """Deformable self-attention over all levels (queries carry the position), then FFN; post-norm.

    Args:
        d_model: C; nhead: the attention's heads; dim_feedforward: the FFN's hidden width; dropout: of the
        attention's output and the FFN; n_levels, n_points: of the deformable attention.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        *,
        n_levels: int = 4,
        n_points: int = 4,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, nhead, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, dim_feedforward, dropout)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None):
        """
        Args:
            src, pos: (B, S, C); reference_points: (B, S, L, 2) normalised (x, y) over each padded level;
            spatial_shapes: (L, 2); level_start_index: (L,); padding_mask: (B, S) True on padding.
        Returns:
            (B, S, C)
        """
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        return self.ffn(self.norm1(src + self.dropout1(attn)))


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
        device = valid_ratios.device
        for lvl, (H, W) in enumerate(level_shapes(spatial_shapes)):
            # arange + 0.5: the official linspace(0.5, H - 0.5, H) exactly, without a float size (ONNX export)
            ref_y, ref_x = torch.meshgrid(
                torch.arange(H, dtype=torch.float32, device=device) + 0.5,
                torch.arange(W, dtype=torch.float32, device=device) + 0.5,
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * H)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * W)
            points.append(torch.stack((ref_x, ref_y), -1))
        return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]

    def forward(self, levels: FlattenedLevels) -> torch.Tensor:
        """
        Args:
            levels: the flattened feature levels (their `pos` with the level embedding).
        Returns:
            (B, S, C) the encoded tokens.
        """
        reference_points = self.reference_points(levels.spatial_shapes, levels.valid_ratios)
        src = levels.src
        for layer in self.layers:
            src = layer(
                src, levels.pos, reference_points, levels.spatial_shapes, levels.level_start_index, levels.mask
            )
        return src

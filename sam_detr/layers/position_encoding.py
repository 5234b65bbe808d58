"""Sine position encodings: of a feature map (from its padding mask), and of points and boxes."""
import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine", "sine_embed", "points_sine_embed", "boxes_sine_embed", "anchor_sine_embed"]


def _dim_t(num_feats: int, temperature: float, device) -> torch.Tensor:
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * (dim_t // 2) / num_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F): sin of the even features and cos of the odd ones, interleaved."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


def _count_valid(not_mask: torch.Tensor, dim: int) -> torch.Tensor:
    """not_mask.cumsum(dim) in float32, for a (B, H, W) bool mask and dim 1 or 2. While exporting, as a
    product with a triangular matrix of ones (the same values: integer sums below 2**24 are exact in
    float32): torch's tracing rule for cumsum broadcasts to (B, H, W, W), whose strides the tracer cannot
    order for a map side twice a symbolic size (SwinV2's upsampled map), and it would fix the image size."""
    if not torch.compiler.is_exporting():
        return not_mask.cumsum(dim, dtype=torch.float32)
    n = not_mask.shape[dim]
    i = torch.arange(n, device=not_mask.device)
    upper = (i[:, None] <= i[None, :]).float()  # (n, n): [k, j] = 1 where k <= j
    values = not_mask.float()
    return values @ upper if dim == 2 else upper.t() @ values


class PositionEmbeddingSine(nn.Module):
    """The DETR sine encoding of a feature map, computed from its padding mask.

    Row and column indices count valid pixels (1-based). With `normalize`, each is mapped to
    `(index + offset) / (last index + eps) * scale`: `offset=0` is DETR's and Conditional DETR's rule,
    `offset=-0.5` is Deformable DETR's (also SAM-DETR's, MS-DETR's and Plain-DETR's). `scale_unnormalized`
    maps it to `(index + offset) * scale` instead (Plain-DETR's `sine_unnorm`, with its box
    reparameterisation); without either the index is used as it is (DETR's `normalize=False`).

    Args:
        num_pos_feats: features per axis; the output has 2 * num_pos_feats channels, Y first.
        shifted_denominator: divide by `(last index + offset) + eps - offset`, SAM-DETR's order of
            operations. It equals `last index + eps` up to rounding, which matters where a whole row or
            column is padding (last index 0): the (meaningless but not masked) embedding of such pixels
            reaches the encoder's output there, and from it, e.g., RoIAlign at the image border.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        offset: float = 0.0,
        eps: float = 1e-6,
        shifted_denominator: bool = False,
        scale_unnormalized: bool = False,
    ):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.offset = offset
        self.eps = eps
        self.shifted_denominator = shifted_denominator
        if scale_unnormalized and normalize:
            raise ValueError("scale_unnormalized applies to normalize=False only")
        self.scale_unnormalized = scale_unnormalized

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask: (B, H, W) bool, True on padding.
        Returns:
            (B, 2 * num_pos_feats, H, W) float32.
        """
        not_mask = ~mask
        y_embed, x_embed = _count_valid(not_mask, 1), _count_valid(not_mask, 2)
        if self.normalize and self.shifted_denominator:
            y_embed = y_embed + self.offset
            x_embed = x_embed + self.offset
            y_embed = y_embed / (y_embed[:, -1:, :] + self.eps - self.offset) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + self.eps - self.offset) * self.scale
        elif self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        elif self.scale_unnormalized:
            y_embed = (y_embed + self.offset) * self.scale
            x_embed = (x_embed + self.offset) * self.scale
        dim_t = _dim_t(self.num_pos_feats, self.temperature, mask.device)
        pos_x = _interleave_sin_cos(x_embed[:, :, :, None] / dim_t)
        pos_y = _interleave_sin_cos(y_embed[:, :, :, None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"num_pos_feats={self.num_pos_feats}, normalize={self.normalize}, offset={self.offset}"


def sine_embed(
    coords: torch.Tensor, num_feats: int = 128, temperature: float = 10000, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Sine embedding of each coordinate, concatenated in the given order.

    Args:
        coords: (..., K), usually in [0, 1].
    Returns:
        (..., K * num_feats)
    """
    dim_t = _dim_t(num_feats, temperature, coords.device)
    return _interleave_sin_cos((coords * scale)[..., None] / dim_t).flatten(-2)


def points_sine_embed(points: torch.Tensor, num_feats: int = 128, temperature: float = 10000) -> torch.Tensor:
    """(..., 2) points (x, y) -> (..., 2 * num_feats), Y first (Conditional DETR, SAM-DETR)."""
    return sine_embed(points.flip(-1), num_feats, temperature)


def boxes_sine_embed(boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000) -> torch.Tensor:
    """(..., 4) boxes (cx, cy, w, h) -> (..., 4 * num_feats) in that order (Deformable DETR proposals)."""
    return sine_embed(boxes, num_feats, temperature)


def anchor_sine_embed(boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000) -> torch.Tensor:
    """(..., 4) boxes (cx, cy, w, h) -> (..., 4 * num_feats) as (cy, cx, w, h): Y first, as the points'
    (DAB-DETR's and DINO's anchor boxes)."""
    return sine_embed(boxes[..., [1, 0, 2, 3]], num_feats, temperature)

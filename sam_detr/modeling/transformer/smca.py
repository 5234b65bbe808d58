"""SMCA's Gaussian-like modulation of cross-attention (Gao et al. 2021), in SAM-DETR's form."""
from typing import Tuple

import torch

__all__ = ["smca_gaussian_bias"]

# SMCA-DETR's constant, kept by SAM-DETR
_SMCA_TEMPERATURE = 8.0


def smca_gaussian_bias(
    points: torch.Tensor, scales: torch.Tensor, spatial_shape: Tuple[int, int], valid_ratio: torch.Tensor
) -> torch.Tensor:
    """The additive attention bias of an anisotropic Gaussian around each head's salient point.

    At the centre (x + 0.5, y + 0.5) of every feature pixel, the bias is
    `-(s_x^2 (x_c - x - 0.5)^2 + s_y^2 (y_c - y - 0.5)^2) / 8`, with (x_c, y_c) the salient point in
    feature pixels and (s_x, s_y) the predicted (unconstrained) inverse widths.

    Args:
        points: (B, Q, M, 2) one salient point (x, y) per query and head, normalised to the unpadded image.
        scales: (B, Q, M, 2) the predicted (s_x, s_y).
        spatial_shape: (H, W) of the attended map.
        valid_ratio: (B, 2) unpadded fraction (w, h) of that map.
    Returns:
        (B * M, Q, H * W), ordered as the attention logits of `MultiheadAttentionNoProj`.
    """
    B, Q, M, _ = points.shape
    H, W = spatial_shape
    centres = (points * torch.tensor([W, H], dtype=points.dtype, device=points.device) * valid_ratio[:, None, None, :]).permute(0, 2, 1, 3)
    scales_sq = (scales * scales).permute(0, 2, 1, 3)  # (B, M, Q, 2)
    xs = torch.arange(W, dtype=points.dtype, device=points.device) + 0.5
    ys = torch.arange(H, dtype=points.dtype, device=points.device) + 0.5
    # the distance is separable in x and y: two (B, M, Q, W|H) terms instead of the official
    # (Q, H*W, B*M, 2) tensor, with the same products and one addition per pixel (the official abs() of
    # this non-negative sum is a no-op)
    dx = (centres[..., 0, None] - xs).pow(2) * scales_sq[..., 0, None]
    dy = (centres[..., 1, None] - ys).pow(2) * scales_sq[..., 1, None]
    return (-(dx[..., None, :] + dy[..., :, None]) / _SMCA_TEMPERATURE).reshape(B * M, Q, H * W)

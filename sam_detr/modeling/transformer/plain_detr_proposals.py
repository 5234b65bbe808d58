"""Plain-DETR's proposals: the multi-level token maps it makes from its one stride-16 map for the two-stage
query selection (`proposal_projections`, `proposal_maps`), and the anchors of its box reparameterisation in
input pixels (`pixel_anchors`, `image_extent`).

Batch-first: maps (B, C, H_l, W_l); tokens of the flattened maps (B, S, ...), finest first.
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from ...layers.level_shapes import level_shapes
from ..backbone.upsample import LayerNorm2d
from ..box_coder import VALID_RANGE
from .levels import pad_levels, resize_mask, valid_sizes

__all__ = ["pixel_anchors", "image_extent", "proposal_maps", "proposal_projections"]

# the reparameterised proposals' side at the finest level, in pixels
PIXEL_ANCHOR_SIZE = 50.0


def _finest_valid_size(mask: torch.Tensor, spatial_shapes: torch.Tensor, strides: Sequence[int]):
    """(B, 1) unpadded width and height, in pixels, of the finest map (its unpadded cells x its stride)."""
    H0, W0 = level_shapes(spatial_shapes)[0]
    finest = mask[:, : H0 * W0].view(mask.shape[0], H0, W0)
    valid_h = torch.sum(~finest[:, :, 0], 1, keepdim=True) * strides[0]
    valid_w = torch.sum(~finest[:, 0, :], 1, keepdim=True) * strides[0]
    return valid_w, valid_h


def image_extent(mask: torch.Tensor, spatial_shapes: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """(B, 1, 2) float32: each image's (W, H) in pixels as its finest proposal map covers it, to which the
    reparameterised boxes are clipped (`PixelDeltaBoxCoder.for_batch`). Arguments as `pixel_anchors`."""
    valid_w, valid_h = _finest_valid_size(mask, spatial_shapes, strides)
    return torch.cat([valid_w, valid_h], -1)[:, None].float()


def pixel_anchors(
    mask: torch.Tensor, spatial_shapes: torch.Tensor, strides: Sequence[int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The reparameterised proposals' anchors (official `TransformerReParam`): per token, its centre
    `(j + 0.5) * stride_l` and a side of 50 * 2^l, in input pixels.

    Args:
        mask: (B, S) bool, True on padding, over the flattened proposal maps (finest first).
        spatial_shapes: (L, 2) their (H_l, W_l); strides: theirs.
    Returns:
        (B, S, 4) anchors, set to `max(H_0, W_0) * stride_0` at padding and where a coordinate leaves
        VALID_RANGE x the unpadded image size (measured on the finest map); and (B, S, 1) bool, True where
        kept.
    """
    B = mask.shape[0]
    anchors = []
    shapes = level_shapes(spatial_shapes, mask.shape[1])
    for lvl, ((H, W), stride) in enumerate(zip(shapes, strides)):
        # arange: the official linspace(0, H - 1, H) exactly, without a float size (ONNX export)
        grid_y, grid_x = torch.meshgrid(
            torch.arange(H, dtype=torch.float32, device=mask.device),
            torch.arange(W, dtype=torch.float32, device=mask.device),
            indexing="ij",
        )
        centres = (torch.stack([grid_x, grid_y], -1)[None].expand(B, -1, -1, -1) + 0.5) * stride
        sizes = torch.ones_like(centres) * PIXEL_ANCHOR_SIZE * (2.0**lvl)
        anchors.append(torch.cat((centres, sizes), -1).view(B, -1, 4))
    anchors = torch.cat(anchors, 1)
    H0, W0 = shapes[0]
    valid_w, valid_h = _finest_valid_size(mask, spatial_shapes, strides)
    image = torch.cat([valid_w, valid_h, valid_w, valid_h], -1)[:, None]
    low, high = VALID_RANGE
    keep = ((anchors > low * image) & (anchors < high * image)).all(-1, keepdim=True)
    anchors = anchors.masked_fill(mask[..., None] | ~keep, torch.sym_max(H0, W0) * strides[0])
    return anchors, keep & ~mask[..., None]


def proposal_projections(d_model: int, in_stride: int, strides: Sequence[int]) -> nn.ModuleList:
    """Per target stride, the map that brings the stride-`in_stride` memory there (official
    `enc_output_proj`): 2x ConvTranspose2d steps to a finer stride, 2x Conv2d(2, stride 2) steps (no padding:
    sizes are floored) to a coarser one, LayerNorm2d + GELU between two steps, Identity at `in_stride`."""
    projections = nn.ModuleList()
    for stride in strides:
        steps = int(round(math.log2(max(stride, in_stride) / min(stride, in_stride))))
        conv = nn.Conv2d if stride > in_stride else nn.ConvTranspose2d
        layers = []
        for i in range(steps):
            layers += ([LayerNorm2d(d_model), nn.GELU()] if i else []) + [conv(d_model, d_model, 2, stride=2)]
        projections.append(nn.Sequential(*layers) if layers else nn.Identity())
    return projections


def proposal_maps(
    projections: nn.ModuleList, memory: torch.Tensor, mask: torch.Tensor, batch_invariant: bool = False
) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Plain-DETR's proposal levels from its one map: (B, C, H, W) memory and its (B, H, W) mask -> per
    projection (`proposal_projections`), the map (B, C, H_l, W_l) and its mask. `batch_invariant`: every
    image's maps computed at its own size (the strided convolutions would otherwise mix padding into the
    last valid row or column), then padded (`pad_levels`)."""
    if not batch_invariant:
        maps = [proj(memory) for proj in projections]
        return maps, [resize_mask(mask, m.shape[-2:]) for m in maps]
    sizes = valid_sizes(mask).tolist()
    return pad_levels([[proj(memory[i : i + 1, :, :h, :w]) for proj in projections] for i, (w, h) in enumerate(sizes)])

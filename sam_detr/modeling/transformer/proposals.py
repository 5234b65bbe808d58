"""Two-stage query selection: every encoder token proposes a box, the best ones become the decoder's queries.

Written once for two-stage Deformable DETR, MS-DETR and Plain-DETR (whose multi-level token maps come from
its one stride-16 map, `proposal_maps`, and whose reparameterised proposals start from `pixel_anchors`).
Batch-first: tokens (B, S, C) of the flattened levels, S = sum_l H_l * W_l, finest level first; queries
(B, Q, C).
"""
import math
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ...layers import boxes_sine_embed
from ...layers.level_shapes import level_shapes
from ..backbone.upsample import LayerNorm2d
from .levels import pad_levels, resize_mask

__all__ = [
    "TwoStageProposals", "Proposals", "encoder_anchors", "pixel_anchors", "proposal_maps", "proposal_projections",
]

# the window a proposal must lie in, in each coordinate, and the proposal side at level 0
VALID_RANGE = (0.01, 0.99)
BASE_SIZE = 0.05
# the reparameterised proposals' side at the finest level, in pixels
PIXEL_ANCHOR_SIZE = 50.0


def encoder_anchors(mask: torch.Tensor, spatial_shapes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One fixed box per token: its centre, and a side of 0.05 * 2^l at level l, in unpadded-image units.

    Args:
        mask: (B, S) bool, True on padding.
        spatial_shapes: (L, 2) int64, (H_l, W_l).
    Returns:
        (B, S, 4) the boxes' logits, +inf at padding and where a coordinate leaves (0.01, 0.99); and
        (B, S, 1) bool, True where the box is kept (inside the window, not padding). Float32, as the
        official code builds them, whatever the model's dtype.
    """
    B = mask.shape[0]
    anchors = []
    shapes = level_shapes(spatial_shapes, mask.shape[1])
    for lvl, ((H, W), level_mask) in enumerate(zip(shapes, mask.split([h * w for h, w in shapes], 1))):
        level_mask = level_mask.view(B, H, W)
        valid_h = torch.sum(~level_mask[:, :, 0], 1)
        valid_w = torch.sum(~level_mask[:, 0, :], 1)
        # arange: the official linspace(0, H - 1, H) exactly, without a float size (ONNX export)
        grid_y, grid_x = torch.meshgrid(
            torch.arange(H, dtype=torch.float32, device=mask.device),
            torch.arange(W, dtype=torch.float32, device=mask.device),
            indexing="ij",
        )
        grid = torch.stack([grid_x, grid_y], -1)
        scale = torch.stack([valid_w, valid_h], -1).view(B, 1, 1, 2)
        centres = (grid[None].expand(B, -1, -1, -1) + 0.5) / scale
        sizes = torch.ones_like(centres) * BASE_SIZE * (2.0**lvl)
        anchors.append(torch.cat((centres, sizes), -1).view(B, -1, 4))
    anchors = torch.cat(anchors, 1)
    low, high = VALID_RANGE
    keep = ((anchors > low) & (anchors < high)).all(-1, keepdim=True) & ~mask[..., None]
    anchors = torch.log(anchors / (1 - anchors))
    return anchors.masked_fill(~keep, float("inf")), keep


def pixel_anchors(mask: torch.Tensor, spatial_shapes: torch.Tensor, strides: Sequence[int]):
    """The reparameterised proposals' anchors (official `TransformerReParam`): per token, its centre
    `(j + 0.5) * stride_l` and a side of 50 * 2^l, in input pixels.

    Args:
        mask: (B, S) bool, True on padding, over the flattened proposal maps (finest first).
        spatial_shapes: (L, 2) their (H_l, W_l); strides: theirs.
    Returns:
        (B, S, 4) anchors, set to `max(H_0, W_0) * stride_0` at padding and where a coordinate leaves
        VALID_RANGE x the unpadded image size (measured on the finest map); (B, S, 1) bool, True where
        kept; and (B, 1, 2) that size (W, H), to which boxes are clipped.
    """
    B = mask.shape[0]
    anchors = []
    for lvl, ((H, W), stride) in enumerate(zip(spatial_shapes.tolist(), strides)):
        grid_y, grid_x = torch.meshgrid(
            torch.linspace(0, H - 1, H, dtype=torch.float32, device=mask.device),
            torch.linspace(0, W - 1, W, dtype=torch.float32, device=mask.device),
            indexing="ij",
        )
        centres = (torch.stack([grid_x, grid_y], -1)[None].expand(B, -1, -1, -1) + 0.5) * stride
        sizes = torch.ones_like(centres) * PIXEL_ANCHOR_SIZE * (2.0**lvl)
        anchors.append(torch.cat((centres, sizes), -1).view(B, -1, 4))
    anchors = torch.cat(anchors, 1)
    H0, W0 = spatial_shapes[0].tolist()
    finest = mask[:, : H0 * W0].view(B, H0, W0)
    valid_h = torch.sum(~finest[:, :, 0], 1, keepdim=True) * strides[0]
    valid_w = torch.sum(~finest[:, 0, :], 1, keepdim=True) * strides[0]
    image = torch.cat([valid_w, valid_h, valid_w, valid_h], -1)[:, None]
    low, high = VALID_RANGE
    keep = ((anchors > low * image) & (anchors < high * image)).all(-1, keepdim=True)
    anchors = anchors.masked_fill(mask[..., None] | ~keep, max(H0, W0) * strides[0])
    return anchors, keep & ~mask[..., None], torch.cat([valid_w, valid_h], -1)[:, None].float()


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


def proposal_maps(projections: nn.ModuleList, memory: torch.Tensor, mask: torch.Tensor, per_image: bool = False):
    """Plain-DETR's proposal levels from its one map: (B, C, H, W) memory and its (B, H, W) mask -> per
    projection (`proposal_projections`), the map (B, C, H_l, W_l) and its mask. `per_image`: every image's
    maps computed at its own size (batch-size-independent: the strided convolutions would otherwise mix
    padding into the last valid row or column), then padded (`pad_levels`)."""
    if not per_image:
        maps = [proj(memory) for proj in projections]
        return maps, [resize_mask(mask, m.shape[-2:]) for m in maps]
    sizes = zip((~mask[:, 0, :]).sum(1).tolist(), (~mask[:, :, 0]).sum(1).tolist())
    return pad_levels([[proj(memory[i : i + 1, :, :h, :w]) for proj in projections] for i, (w, h) in enumerate(sizes)])


class Proposals(NamedTuple):
    """The encoder's proposals and the queries selected from them."""

    logits: torch.Tensor  # (B, S, K) every token's class logits
    boxes: torch.Tensor  # (B, S, 4) every token's box (cx, cy, w, h) in [0, 1] (1 at padding)
    anchors: torch.Tensor  # (B, S, 4) every token's fixed box in [0, 1] (1 at padding and outside the window)
    reference: torch.Tensor  # (B, Q, 4) the selected boxes, detached: the decoder's first reference
    query_pos: torch.Tensor  # (B, Q, C) the position queries, from the selected boxes
    tgt: torch.Tensor  # (B, Q, C) the content queries
    deltas: Optional[torch.Tensor] = None  # (B, S, 4) every token's box delta, with a custom `decode`


class TwoStageProposals(nn.Module):
    """Proposes a box per encoder token and turns the top-scoring ones into decoder queries.

    Each token's memory (zeroed at padding and outside the window) goes through `enc_output` + LayerNorm;
    the proposal heads (the model's extra class and box heads) score it and refine its anchor
    (`box_head(memory) + anchor logits`). The Q tokens of highest class-0 logit are selected (padding
    included, as the official code, unless `exclude_padding`); their boxes, detached, are the decoder's
    first reference, and `LayerNorm(pos_trans(sine embedding of the box))` (2C channels) gives the
    position queries (first half) and the content queries (second half), or, with mixed selection (DINO,
    MS-DETR++, Plain-DETR), the position queries only, the content coming from a learned embedding.

    Official names: `enc_output`, `enc_output_norm`, `pos_trans`, `pos_trans_norm` (under `transformer.`).

    Args:
        d_model: C.
    """

    def __init__(self, d_model: int = 256):
        super().__init__()
        self.d_model = d_model
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.pos_trans = nn.Linear(d_model * 2, d_model * 2)
        self.pos_trans_norm = nn.LayerNorm(d_model * 2)

    def forward(
        self,
        memory: torch.Tensor,
        mask: torch.Tensor,
        spatial_shapes: torch.Tensor,
        class_head: nn.Module,
        box_head: nn.Module,
        num_queries: int,
        content: Optional[torch.Tensor] = None,
        exclude_padding: bool = False,
        anchors: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        decode: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    ) -> Proposals:
        """
        Args:
            memory: (B, S, C) the tokens; mask: (B, S) bool, True on padding; spatial_shapes: (L, 2).
            class_head: C -> K; box_head: C -> 4, the proposal heads.
            num_queries: Q, the tokens selected.
            content: (Q, C) learned content queries (mixed selection), or None.
            exclude_padding: never select a padded token (batch-size-independent inference).
            anchors, decode: Plain-DETR's box reparameterisation: the (B, S, 4) anchors and (B, S, 1) keep
                mask to use instead of `encoder_anchors`, and `decode(anchors, delta)` -> boxes, used instead
                of `sigmoid(delta + anchors)` (the selected boxes are then the reference as they are).
        """
        if num_queries > memory.shape[1]:
            raise ValueError(f"cannot select {num_queries} queries from {memory.shape[1]} encoder tokens")
        anchors, keep = encoder_anchors(mask, spatial_shapes) if anchors is None else anchors
        out = self.enc_output_norm(self.enc_output(memory.masked_fill(~keep, 0.0)))
        logits = class_head(out)
        deltas = box_head(out)
        boxes_unact = deltas + anchors if decode is None else decode(anchors, deltas)
        scores = logits[..., 0].masked_fill(mask, float("-inf")) if exclude_padding else logits[..., 0]
        index = torch.topk(scores, num_queries, dim=1)[1]
        reference = torch.gather(boxes_unact, 1, index[..., None].expand(-1, -1, 4)).detach()
        reference = reference.sigmoid() if decode is None else reference
        pos = self.pos_trans_norm(self.pos_trans(boxes_sine_embed(reference, self.d_model // 2)))
        query_pos, tgt = pos.split(self.d_model, -1)
        if content is not None:
            if content.shape != (num_queries, self.d_model):
                raise ValueError(f"content queries must be ({num_queries}, {self.d_model}), got {tuple(content.shape)}")
            tgt = content[None].expand(memory.shape[0], -1, -1)
        if decode is not None:
            return Proposals(logits, boxes_unact, anchors, reference, query_pos, tgt, deltas)
        return Proposals(logits, boxes_unact.sigmoid(), anchors.sigmoid(), reference, query_pos, tgt)

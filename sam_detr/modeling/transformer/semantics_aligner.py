"""SAM-DETR's Semantics Aligner: object queries resampled from the encoded features at salient points."""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...layers import box_cxcywh_to_xyxy, points_sine_embed, roi_align

__all__ = ["SemanticsAligner", "AlignedQueries"]


class AlignedQueries(NamedTuple):
    content: torch.Tensor  # (B, Q, M, C) per-head content queries, sampled from the memory
    pos: torch.Tensor  # (B, Q, M, C) per-head position queries, the sine embeddings of the salient points
    points: torch.Tensor  # (B, Q, M, 2) salient points (x, y), normalised to the unpadded image
    scales: Optional[torch.Tensor]  # (B, Q, M, 2) SMCA's inverse Gaussian widths, when predicted


class SemanticsAligner(nn.Module):
    """Aligns the queries of one decoder layer with the memory they are matched against.

    Each reference box is RoI-aligned (7 x 7) from the memory; a small ConvNet + MLP predicts one salient
    point per head inside the box (tanh offsets from its centre, in half-widths); the head's content query
    is the RoI feature at that point (all C channels) and its position query the sine embedding of the
    point, each reweighted channel-wise by a sigmoid gate computed from the previous query.

    Args:
        d_model: C, the channels of the memory and the queries.
        nhead: M, one salient point per head.
        roi_size: the RoIAlign output size.
        predict_scales: also predict two SMCA Gaussian scales per head.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, roi_size: int = 7, predict_scales: bool = False):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.roi_size = roi_size
        self.predict_scales = predict_scales
        self.point1 = nn.Sequential(nn.Conv2d(d_model, d_model // 4, kernel_size=1), nn.ReLU())
        self.point2 = nn.Sequential(
            nn.Linear(d_model // 4 * roi_size * roi_size, 256),
            nn.ReLU(),
            nn.Linear(256, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, nhead * (4 if predict_scales else 2)),
        )
        # The official code also zeroes point2[-1].weight, but its transformer-wide xavier pass, run after
        # the layers are built, overwrites that weight: only the bias starts at 0 (the salient points start
        # near the box centres, not on them).
        nn.init.zeros_(self.point2[-1].bias)
        self.attn1 = nn.Linear(d_model, d_model * nhead)
        self.attn2 = nn.Linear(d_model, d_model * nhead)

    def forward(
        self, tgt: torch.Tensor, memory_2d: torch.Tensor, boxes: torch.Tensor, valid_ratio: torch.Tensor
    ) -> AlignedQueries:
        """
        Args:
            tgt: (B, Q, C) the queries after self-attention.
            memory_2d: (B, C, H, W) the memory of the attended level.
            boxes: (B, Q, 4) reference boxes (cx, cy, w, h), normalised to the unpadded image.
            valid_ratio: (B, 2) unpadded fraction (w, h) of the level.
        """
        B, Q, C = tgt.shape
        M = self.nhead
        H, W = memory_2d.shape[-2:]
        # the boxes in feature pixels of the padded map
        # torch.tensor of the sizes, not new_tensor, which torch.export would freeze at the example's sizes
        size = torch.tensor([W, H, W, H], dtype=boxes.dtype, device=boxes.device)
        xyxy = box_cxcywh_to_xyxy(boxes) * size * valid_ratio.repeat(1, 2)[:, None]
        batch_idx = torch.arange(B, dtype=xyxy.dtype, device=xyxy.device).repeat_interleave(Q)[:, None]
        # RoIAlign passes no gradient to the boxes (neither torchvision's nor ours has one); detached so that
        # any RoIAlign implementation trains the same
        rois = torch.cat([batch_idx, xyxy.reshape(B * Q, 4)], 1).detach()
        # one RoIAlign serves both the point prediction and the resampling (the official code runs it twice)
        roi = roi_align(
            memory_2d, rois, output_size=(self.roi_size, self.roi_size), spatial_scale=1.0, aligned=True
        )  # (B*Q, C, roi_size, roi_size)
        pred = self.point2(self.point1(roi).flatten(1))
        offsets = pred[:, : 2 * M].tanh().view(B * Q, 1, M, 2)
        content = F.grid_sample(roi, offsets, mode="bilinear", padding_mode="zeros", align_corners=False)
        content = content.view(B, Q, C, M).transpose(2, 3)
        content = content * self.attn1(tgt).view(B, Q, M, C).sigmoid()
        points = boxes[:, :, None, :2] + boxes[:, :, None, 2:] * 0.5 * offsets.view(B, Q, M, 2)
        # the official sine embedding runs under no_grad: no gradient through the salient points' embedding
        pos = points_sine_embed(points.detach(), num_feats=C // 2)
        pos = pos * self.attn2(tgt).view(B, Q, M, C).sigmoid()
        scales = pred[:, 2 * M :].view(B, Q, M, 2) if self.predict_scales else None
        return AlignedQueries(content, pos, points, scales)

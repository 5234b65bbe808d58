"""Box coding: the space boxes are predicted and supervised in, one object that the model, the box
refinement, the two-stage proposals, the matcher and the criterion are given.

Boxes are (..., 4) (cx, cy, w, h) in the coder's space; a box head predicts a (..., 4) delta that the coder
applies to a reference box. `SigmoidBoxCoder` (every method's default) works on boxes normalised to the
unpadded image; Plain-DETR's reparameterisation (`PixelDeltaBoxCoder`, sam_detr/modeling/pixel_box_coder.py)
on input pixels. A coder is a small stateless value: two coders are equal when they code alike.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..layers.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid
from ..layers.level_shapes import level_shapes

__all__ = ["BoxCoder", "SigmoidBoxCoder", "encoder_anchors", "check_same_coder"]

# the window a proposal anchor must lie in, in each coordinate, and the anchor side at level 0
VALID_RANGE = (0.01, 0.99)
BASE_SIZE = 0.05


class BoxCoder:
    """What a box space provides. Shapes: B images, Q queries, S encoder tokens, T targets, N matched pairs."""

    # boxes in input pixels (else normalised to the unpadded image, what a sigmoid head predicts)
    pixels: bool = False

    def for_batch(self, image_extent: Optional[torch.Tensor]) -> "BoxCoder":
        """The coder for one batch whose images span `image_extent` ((B, 1, 2) (W, H) in input pixels, or
        None): a coder that clips boxes to the images returns a copy that does; others return themselves."""
        return self

    def target_boxes(self, gt_boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """(T, 4) ground-truth boxes (x1, y1, x2, y2) in pixels of an (H, W) image -> (T, 4) targets."""
        raise NotImplementedError

    def normalised(self, boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """(B, Q, 4) predicted boxes and (B, 2) int64 each image's (H, W) -> (cx, cy, w, h) normalised to each
        image, for post-processing."""
        raise NotImplementedError

    def decode(self, reference: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """(B, Q, 2|4) reference points or boxes, (B, Q, 4) deltas -> (B, Q, 4) boxes."""
        raise NotImplementedError

    def anchors(
        self, mask: torch.Tensor, spatial_shapes: torch.Tensor, strides: Optional[Sequence[int]] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One fixed proposal box per encoder token, unactivated (see `activate`).

        Args:
            mask: (B, S) bool, True on padding; spatial_shapes: (L, 2) (H_l, W_l) of the token levels;
            strides: their strides in input pixels (for coders in pixels).
        Returns:
            (B, S, 4) anchors and (B, S, 1) bool, True where the anchor is kept (inside the image window,
            not padding).
        """
        raise NotImplementedError

    def propose(self, anchors: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """(B, S, 4) anchors, (B, S, 4) deltas -> (B, S, 4) proposal boxes, unactivated."""
        raise NotImplementedError

    def activate(self, boxes: torch.Tensor) -> torch.Tensor:
        """Unactivated anchors or proposals -> boxes (the two-stage selection gathers before it activates,
        as the official code: an elementwise op may round differently at another memory position)."""
        raise NotImplementedError

    def regression_outputs(self, reference: torch.Tensor, delta: torch.Tensor) -> Dict[str, torch.Tensor]:
        """What a prediction dict carries besides "pred_logits" and "pred_boxes" for `l1_cost` and `l1_loss`
        (the reference boxes a head refined and its deltas, (..., Q, 4) each)."""
        return {}

    def l1_cost(self, outputs: Dict[str, torch.Tensor], b: int, target_boxes: torch.Tensor) -> torch.Tensor:
        """The matcher's L1 cost of image b: (Q, T)."""
        raise NotImplementedError

    def l1_loss(
        self, outputs: Dict[str, torch.Tensor], index: Tuple[torch.Tensor, torch.Tensor], target_boxes: torch.Tensor
    ) -> torch.Tensor:
        """The L1 box loss of the matched predictions `outputs[...][index]` (batch and query indices) against
        their (N, 4) target boxes: (N, 4), unreduced."""
        raise NotImplementedError

    def in_levels(self, boxes: torch.Tensor, valid_ratios: torch.Tensor) -> torch.Tensor:
        """(B, Q, 2|4) reference -> (B, Q, L, 2|4) normalised over each padded level (deformable attention),
        with valid_ratios (B, L, 2) the unpadded fraction (w, h) of each level."""
        raise NotImplementedError

    def padded_pixels(self, boxes: torch.Tensor, valid_ratio: torch.Tensor, padded_size: torch.Tensor) -> torch.Tensor:
        """(B, Q, 4) reference boxes -> (x1, y1, x2, y2) in input pixels (BoxRPB), with valid_ratio (B, 2) the
        unpadded fraction (w, h) of the attended map and padded_size (W, H) its padded size in pixels."""
        raise NotImplementedError


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


@dataclass(frozen=True)
class SigmoidBoxCoder(BoxCoder):
    """Boxes normalised to the unpadded image, in [0, 1]: a box is `sigmoid(inverse_sigmoid(reference) +
    delta)` (a 2-d reference point moves the centre only: the delta's (w, h) are absolute logits), a
    proposal `sigmoid(delta + anchor logits)` (`encoder_anchors`), and the L1 loss and cost compare boxes.

    Args:
        eps: inverse_sigmoid's clamp (1e-5 in every official repository here; DINO's is 1e-3).
    """

    eps: float = 1e-5

    def target_boxes(self, gt_boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        h, w = image_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=gt_boxes.device)
        return box_xyxy_to_cxcywh(gt_boxes / scale)

    def normalised(self, boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        return boxes

    def decode(self, reference: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        base = inverse_sigmoid(reference, self.eps)
        if base.shape[-1] == 2:
            return torch.cat([delta[..., :2] + base, delta[..., 2:]], -1).sigmoid()
        return (delta + base).sigmoid()

    def anchors(self, mask, spatial_shapes, strides=None):
        return encoder_anchors(mask, spatial_shapes)

    def propose(self, anchors: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return delta + anchors

    def activate(self, boxes: torch.Tensor) -> torch.Tensor:
        return boxes.sigmoid()

    def l1_cost(self, outputs, b, target_boxes):
        return torch.cdist(outputs["pred_boxes"][b], target_boxes, p=1)

    def l1_loss(self, outputs, index, target_boxes):
        return F.l1_loss(outputs["pred_boxes"][index], target_boxes, reduction="none")

    def in_levels(self, boxes: torch.Tensor, valid_ratios: torch.Tensor) -> torch.Tensor:
        ratios = valid_ratios[:, None]  # (B, 1, L, 2)
        return boxes[:, :, None] * (ratios if boxes.shape[-1] == 2 else torch.cat([ratios, ratios], -1))

    def padded_pixels(self, boxes, valid_ratio, padded_size):
        # normalised to the padded map first (as the official code), then to input pixels
        return box_cxcywh_to_xyxy(boxes * valid_ratio[:, None].repeat(1, 1, 2)) * padded_size.repeat(2)


def check_same_coder(owner: str, coder: BoxCoder, parts: List[Tuple[str, Optional[BoxCoder]]]) -> None:
    """Raises a ValueError naming each part whose box coder differs from `owner`'s (None: the part has none)."""
    bad = [f"{name} has {part!r}" for name, part in parts if part is not None and part != coder]
    if bad:
        raise ValueError(f"{owner} codes boxes with {coder!r}, but " + "; ".join(bad) + ": give them the same coder")

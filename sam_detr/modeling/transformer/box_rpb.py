"""Plain-DETR's global cross-attention, with the box-to-pixel relative position bias (BoxRPB).

Batch-first: queries (B, Q, C); the memory is one flattened map (B, S, C), S = H * W, row-major.
"""
import math
from typing import Optional

import torch
from torch import nn

__all__ = ["GlobalCrossAttention", "box_rpb_deltas"]

RPE_TYPES = ("linear", "abs_log8")
# the official code masks padded keys by adding this to their logits, not -inf
OFFICIAL_PADDING_LOGIT = -100.0


def box_rpb_deltas(boxes: torch.Tensor, size: int, stride: int, rpe_type: str = "linear") -> torch.Tensor:
    """The offsets of the box sides from the pixel centres along one axis.

    Args:
        boxes: (B, Q, 2) the box sides (x1, x2) or (y1, y2), in input pixels.
        size: n, the map's length along that axis (padded); the pixel centres are (j + 0.5) * stride.
        rpe_type: "linear" (the offsets) or "abs_log8" (`sign(d) * log2(|d| + 1) / 3`).
    Returns:
        (B, Q, n, 2) `side - centre_j`, encoded.
    """
    centres = (torch.arange(size, dtype=torch.float32, device=boxes.device) + 0.5) * stride
    deltas = boxes[:, :, None, :] - centres[None, None, :, None]
    if rpe_type == "abs_log8":
        deltas = torch.sign(deltas) * torch.log2(deltas.abs() + 1.0) / math.log2(8)
    return deltas


class GlobalCrossAttention(nn.Module):
    """Multi-head attention of every query to every memory token, plus BoxRPB.

    With BoxRPB, head h's logit of query q at pixel (i, j) gets the bias `B_y[q, i, h] + B_x[q, j, h]`:
    each axis's MLP (`cpb_mlp1` along x, `cpb_mlp2` along y: Linear(2, hidden), ReLU, Linear(hidden,
    heads) without bias) maps the offsets of the query box's two sides from the pixel centre on that axis
    (`box_rpb_deltas`). Decomposing by axis costs (W + H) MLP evaluations per query instead of W * H; the
    bias is then broadcast to (B, heads, Q, H * W), as the official code materialises it. Without BoxRPB
    (`rpe_type=None`) it is the Plain-DETR paper's APE baseline (the `global_ape` decoder): plain attention.

    Padded keys: the official code adds -100 to their logits (`exact_padding=False`), so they keep a
    small weight and a padded image's output depends on how much padding its batch adds; with
    `exact_padding=True` they are at -inf (weight 0). Logits are then clipped to the dtype's finite range
    (as the official code, for half precision).

    Official names: `q`, `k`, `v`, `proj`, `cpb_mlp1.{0,2}`, `cpb_mlp2.{0,2}`.

    Args:
        dim: C; num_heads: heads (C / heads each, scaled by its -1/2 power).
        rpe_type: "linear", "abs_log8", or None (no BoxRPB).
        rpe_hidden_dim: the MLPs' hidden width.
        feature_stride: the memory's stride in input pixels.
    """

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 8,
        rpe_type: Optional[str] = "linear",
        rpe_hidden_dim: int = 512,
        feature_stride: int = 16,
    ):
        super().__init__()
        if rpe_type is not None and rpe_type not in RPE_TYPES:
            raise ValueError(f"rpe_type must be one of {RPE_TYPES} or None, got {rpe_type!r}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.rpe_type = rpe_type
        self.feature_stride = feature_stride
        if rpe_type is not None:
            self.cpb_mlp1 = self._cpb_mlp(rpe_hidden_dim, num_heads)
            self.cpb_mlp2 = self._cpb_mlp(rpe_hidden_dim, num_heads)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    @staticmethod
    def _cpb_mlp(hidden: int, heads: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, heads, bias=False))

    def box_rpb(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, Q, 4) boxes (x1, y1, x2, y2) in input pixels -> (B, heads, Q, H * W) bias."""
        s = self.feature_stride
        bias_x = self.cpb_mlp1(box_rpb_deltas(boxes[..., 0::2], width, s, self.rpe_type))  # (B, Q, W, heads)
        bias_y = self.cpb_mlp2(box_rpb_deltas(boxes[..., 1::2], height, s, self.rpe_type))  # (B, Q, H, heads)
        bias = (bias_y[:, :, :, None] + bias_x[:, :, None]).flatten(2, 3)  # (B, Q, H * W, heads)
        return bias.permute(0, 3, 1, 2)

    def forward(
        self,
        query: torch.Tensor,
        boxes: Optional[torch.Tensor],
        key: torch.Tensor,
        value: torch.Tensor,
        size,
        padding_mask: Optional[torch.Tensor] = None,
        exact_padding: bool = False,
    ) -> torch.Tensor:
        """
        Args:
            query: (B, Q, C). boxes: (B, Q, 4) the reference boxes (x1, y1, x2, y2) in input pixels (unused
                without BoxRPB). key: (B, S, C) memory + position; value: (B, S, C) memory.
            size: (H, W), the map (S = H * W). padding_mask: (B, S) bool, True on padding.
            exact_padding: padded keys at -inf instead of the official additive -100.
        Returns:
            (B, Q, C)
        """
        B, Q, C = query.shape
        S = key.shape[1]
        if S != size[0] * size[1]:
            raise ValueError(f"the memory has {S} tokens, the map size {tuple(size)} needs {size[0] * size[1]}")
        heads = self.num_heads
        q = self.q(query).view(B, Q, heads, -1).transpose(1, 2) * self.scale
        k = self.k(key).view(B, S, heads, -1).transpose(1, 2)
        v = self.v(value).view(B, S, heads, -1).transpose(1, 2)
        # in place on the fresh logits, so that no second (B, heads, Q, S) tensor is held
        attn = q @ k.transpose(-2, -1)  # (B, heads, Q, S)
        if self.rpe_type is not None:
            attn += self.box_rpb(boxes, size[0], size[1])
        if padding_mask is not None:
            mask = padding_mask[:, None, None]
            if exact_padding:
                attn.masked_fill_(mask, float("-inf"))
            else:
                attn += mask * OFFICIAL_PADDING_LOGIT
        info = torch.finfo(attn.dtype)
        attn = attn.clamp_(info.min, info.max).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(B, Q, C)
        return self.proj(out)

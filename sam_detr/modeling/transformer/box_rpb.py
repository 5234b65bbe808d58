"""Plain-DETR's global cross-attention, with the box-to-pixel relative position bias (BoxRPB).

Batch-first: queries (B, Q, C); the memory is one flattened map (B, S, C), S = H * W, row-major.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GlobalCrossAttention", "box_rpb_deltas", "AxisBias"]

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
    return _encode(boxes[:, :, None, :] - centres[None, None, :, None], rpe_type)[0]


# the queries of one chunk of `AxisBias`: about 1 MiB of float32 activations (queries x map length x hidden),
# which stays in a core's cache through the chunk's operations
AXIS_BIAS_CHUNK_ELEMENTS = 2**18


def _encode(deltas: torch.Tensor, rpe_type: str):
    """`box_rpb_deltas`'s encoding of the offsets and its derivative (None for "linear")."""
    if rpe_type == "abs_log8":
        return torch.sign(deltas) * torch.log2(deltas.abs() + 1.0) / math.log2(8), 1.0 / (
            (deltas.abs() + 1.0) * math.log(2) * math.log2(8)
        )
    return deltas, None


class AxisBias(torch.autograd.Function):
    """One axis of BoxRPB, `mlp(box_rpb_deltas(sides, n, stride, rpe_type))` for an MLP Linear(2, hidden),
    ReLU, Linear(hidden, heads, bias=False), computed a chunk of queries at a time in both passes, so that
    its (queries, n, hidden) activations are never held whole (the backward recomputes each chunk's): the
    same operations as the whole-tensor MLP, kept in cache, and no (B, Q, n, hidden) tensor between the
    passes.

    Args (of `apply`): sides (N, 2) the box sides in input pixels; centres (n,) the pixel centres; w1 (hidden,
        2), b1 (hidden,), w2 (heads, hidden) the MLP's weights; rpe_type "linear" or "abs_log8".
    Returns: (N, n, heads).
    """

    @staticmethod
    def forward(ctx, sides, centres, w1, b1, w2, rpe_type):
        n, hidden = centres.shape[0], w1.shape[0]
        rows = max(1, AXIS_BIAS_CHUNK_ELEMENTS // (n * hidden))
        out = sides.new_empty(sides.shape[0], n, w2.shape[0])
        for i in range(0, sides.shape[0], rows):
            deltas, _ = _encode(sides[i : i + rows, None, :] - centres[None, :, None], rpe_type)
            torch.matmul(F.linear(deltas, w1, b1).relu_(), w2.t(), out=out[i : i + rows])
        ctx.save_for_backward(sides, centres, w1, b1, w2)
        ctx.rpe_type = rpe_type
        return out

    @staticmethod
    def backward(ctx, grad):
        sides, centres, w1, b1, w2 = ctx.saved_tensors
        n, hidden = centres.shape[0], w1.shape[0]
        rows = max(1, AXIS_BIAS_CHUNK_ELEMENTS // (n * hidden))
        grad_sides = torch.empty_like(sides)
        grad_w1, grad_b1, grad_w2 = torch.zeros_like(w1), torch.zeros_like(b1), torch.zeros_like(w2)
        for i in range(0, sides.shape[0], rows):
            deltas, slope = _encode(sides[i : i + rows, None, :] - centres[None, :, None], ctx.rpe_type)
            hidden = F.linear(deltas, w1, b1).relu_().flatten(0, 1)  # (rows * n, hidden)
            g = grad[i : i + rows].flatten(0, 1)  # (rows * n, heads)
            grad_w2 += g.t() @ hidden
            grad_pre = torch.ops.aten.threshold_backward(g @ w2, hidden, 0)
            grad_w1 += grad_pre.t() @ deltas.flatten(0, 1)
            grad_b1 += grad_pre.sum(0)
            grad_deltas = (grad_pre @ w1).view(-1, n, 2)
            if slope is not None:
                grad_deltas = grad_deltas * slope
            grad_sides[i : i + rows] = grad_deltas.sum(1)
        return grad_sides, None, grad_w1, grad_b1, grad_w2, None


class GlobalCrossAttention(nn.Module):
    """Multi-head attention of every query to every memory token, plus BoxRPB.

    With BoxRPB, head h's logit of query q at pixel (i, j) gets the bias `B_y[q, i, h] + B_x[q, j, h]`:
    each axis's MLP (`cpb_mlp1` along x, `cpb_mlp2` along y: Linear(2, hidden), ReLU, Linear(hidden,
    heads) without bias) maps the offsets of the query box's two sides from the pixel centre on that axis
    (`box_rpb_deltas`). Decomposing by axis costs (W + H) MLP evaluations per query instead of W * H; they
    run a chunk of queries at a time (`AxisBias`: the official code holds the (B, Q, W + H, hidden)
    activations and their gradients whole). The bias is then broadcast to (B, heads, Q, H * W), and the
    logits are added to it by the matmul itself (`baddbmm`) and the bias is let go: at most two such tensors
    are held at once (where the official code holds the bias, the logits and their softmax). Without BoxRPB
    (`rpe_type=None`) it is the Plain-DETR paper's APE baseline (the `global_ape` decoder): plain attention.

    Padded keys: the official code adds -100 to their logits (`batch_invariant=False`), so they keep a
    small weight and a padded image's output depends on how much padding its batch adds; with
    `batch_invariant=True` they are at -inf (weight 0). Half-precision logits are then clipped to the dtype's
    finite range, as the official code clips them (a no-op on float32 ones, where it is skipped).

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
        # a module, so that a forward hook sees the logits and the weights (sam_detr.visualization)
        self.softmax = nn.Softmax(dim=-1)

    @staticmethod
    def _cpb_mlp(hidden: int, heads: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, heads, bias=False))

    def box_rpb(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, Q, 4) boxes (x1, y1, x2, y2) in input pixels -> (B, heads, Q, H * W) bias."""
        bias_x = self.axis_bias(self.cpb_mlp1, boxes[..., 0::2], width)  # (B, heads, Q, W)
        bias_y = self.axis_bias(self.cpb_mlp2, boxes[..., 1::2], height)  # (B, heads, Q, H)
        return (bias_y[..., :, None] + bias_x[..., None, :]).flatten(3)

    def axis_bias(self, mlp: nn.Sequential, sides: torch.Tensor, size: int) -> torch.Tensor:
        """(B, Q, 2) box sides along one axis -> (B, heads, Q, size): the MLP of their offsets from the pixel
        centres (`box_rpb_deltas`), through `AxisBias`."""
        B, Q, _ = sides.shape
        centres = (torch.arange(size, dtype=sides.dtype, device=sides.device) + 0.5) * self.feature_stride
        first, last = mlp[0], mlp[2]
        bias = AxisBias.apply(sides.reshape(B * Q, 2), centres, first.weight, first.bias, last.weight, self.rpe_type)
        return bias.view(B, Q, size, -1).permute(0, 3, 1, 2).contiguous()  # so that the sum of both axes is too

    def forward(
        self,
        query: torch.Tensor,
        boxes: Optional[torch.Tensor],
        key: torch.Tensor,
        value: torch.Tensor,
        size,
        padding_mask: Optional[torch.Tensor] = None,
        batch_invariant: bool = False,
    ) -> torch.Tensor:
        """
        Args:
            query: (B, Q, C). boxes: (B, Q, 4) the reference boxes (x1, y1, x2, y2) in input pixels (unused
                without BoxRPB). key: (B, S, C) memory + position; value: (B, S, C) memory.
            size: (H, W), the map (S = H * W). padding_mask: (B, S) bool, True on padding.
            batch_invariant: padded keys at -inf instead of the official additive -100.
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
        if self.rpe_type is not None:  # the bias and the logits in one pass, the bias freed at once
            bias = self.box_rpb(boxes, size[0], size[1]).view(B * heads, Q, S)
            attn = torch.baddbmm(bias, q.reshape(B * heads, Q, -1), k.reshape(B * heads, S, -1).transpose(1, 2))
            attn, bias = attn.view(B, heads, Q, S), None
        else:
            attn = q @ k.transpose(-2, -1)  # (B, heads, Q, S)
        if padding_mask is not None and bool(padding_mask.any()):
            mask = padding_mask[:, None, None]
            if batch_invariant:
                attn.masked_fill_(mask, float("-inf"))
            else:
                attn += mask * OFFICIAL_PADDING_LOGIT
        if attn.dtype in (torch.float16, torch.bfloat16):  # the official clip of overflowed half logits
            info = torch.finfo(attn.dtype)
            attn = attn.clamp_(info.min, info.max)
        attn = self.softmax(attn)
        out = (attn @ v).transpose(1, 2).reshape(B, Q, C)
        return self.proj(out)

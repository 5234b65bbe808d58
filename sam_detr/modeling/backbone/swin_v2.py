"""SwinV2 as Plain-DETR runs it (impiga/Plain-DETR `models/swin_transformer_v2.py`), a Detectron2 `Backbone`.

This is not timm's SwinTransformerV2, although the parameter names are the same. What the official
computation has and this file reproduces:

* res-post-norm blocks, `x + drop_path(norm1(attn(x)))`, then `x + drop_path(norm2(mlp(x)))`, with every
  LayerNorm at eps 1e-6 computed in float32 at least;
* cosine attention `q / (|q| + 5e-5)` (not `q / max(|q|, eps)`), the logit scale clamped at log(100);
* the continuous position bias `16 * sigmoid(cpb_mlp(log-spaced offsets))`, offsets normalised by the
  pretraining window of the stage;
* windows: the map is padded at the bottom/right to a multiple of the window, then cyclically shifted
  (pad first, then shift), and padded tokens take part in the attention; the shift mask is -100;
* global blocks (the `_2global` backbones: blocks 0 and 1 of the last stage): the same attention over the
  whole unpadded map, the bias table built for the current size;
* float32 islands under autocast where the official code has them: the q/k/v projection (autocast off),
  the normalised q and k, the logit scale, the CPB's last linear and the LayerNorms.

Tokens are batch-first, (B, H*W, C), row-major over (H, W), between the layers.
"""
import functools
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from torch import nn
from torchvision.ops import stochastic_depth

from ...layers.init import trunc_normal_init_
from .upsample import UpsampleBackbone

__all__ = [
    "SwinTransformerV2",
    "build_swinv2_backbone",
    "LayerNormFP32",
    "PatchEmbed",
    "SwinTrunk",
    "log_spaced_relative_coords",
    "relative_position_index",
    "stage_windows",
    "window_order",
]

NORM_EPS = 1e-6  # the official norm_layer is LayerNormFP32(eps=1e-6) everywhere in the trunk
COSINE_EPS = 5e-5  # q / (|q| + eps), the official custom_normalize
# a stage's windows for one shift: window_order's (gather, scatter) and the shifted_window_mask (None unshifted)
StageWindows = Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]
# log(1 / 0.01) as the official code computes it, in float32
MAX_LOGIT_SCALE = float(torch.log(torch.tensor(100.0)))
CPB_HIDDEN = 512


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32 and float64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class LayerNormFP32(nn.LayerNorm):
    """LayerNorm over the last dimension computed in float32 at least; the output keeps the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = _at_least_fp32(self.weight), _at_least_fp32(self.bias)
        return F.layer_norm(_at_least_fp32(x), self.normalized_shape, w, b, self.eps).type_as(x)


class _LinearFP32(nn.Linear):
    """The CPB's last layer: inputs and weights upcast to float32 (autocast still applies to the matmul)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else _at_least_fp32(self.bias)
        return F.linear(_at_least_fp32(x), _at_least_fp32(self.weight), bias)


def log_spaced_relative_coords(h: int, w: int, norm_h: int, norm_w: int) -> torch.Tensor:
    """The CPB input for an h x w grid: every offset (dy, dx), divided by (norm - 1), scaled to [-8, 8] and
    log-spaced as sign(d) * log2(1 + |d|) / 3. (2h - 1, 2w - 1, 2) float32, computed as the official code
    does (in float32, whatever the model's dtype). A norm of 1 would divide by zero, as in the official
    code; it is taken as 2 instead."""
    dy = torch.arange(-(h - 1), h, dtype=torch.float32)
    dx = torch.arange(-(w - 1), w, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1)
    table = table / torch.tensor([max(norm_h, 2) - 1, max(norm_w, 2) - 1], dtype=torch.float32) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / 3.0


def relative_position_index(h: int, w: int) -> torch.Tensor:
    """(h*w, h*w) int64: for tokens i, j of an h x w grid (row-major), the row of (y_i - y_j, x_i - x_j) in the
    flattened (2h - 1, 2w - 1) table of `log_spaced_relative_coords`."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :] + h - 1) * (2 * w - 1) + (xs[:, None] - xs[None, :] + w - 1)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) attention output -> (B, N, heads * d). While exporting, copied to a contiguous tensor
    first: the CPU attention kernel's output is laid out (B, N, heads, d), so the trace records the merge as
    a view, which the exporter's own attention decomposition, laid out (B, heads, N, d), cannot take."""
    x = x.transpose(1, 2)
    if torch.compiler.is_exporting():
        x = x.clone(memory_format=torch.contiguous_format)
    return x.flatten(2)


class CosineAttention(nn.Module):
    """SwinV2 multi-head cosine self-attention with the continuous position bias, over windows or globally.

    Args:
        window_size: the side of the windows it attends in, or None for a global block, whose bias table
            is built for the size of the map it is given.
        pretrained_window_size: the window of the pretraining, which normalises the offsets (0: the
            window itself, or the map for a global block).
    """

    def __init__(self, dim: int, num_heads: int, window_size: Optional[int], pretrained_window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.pretrained_window_size = pretrained_window_size
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, CPB_HIDDEN), nn.ReLU(inplace=True), _LinearFP32(CPB_HIDDEN, num_heads, bias=False)
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        if window_size is not None:  # derived from the geometry: not in the state dict
            norm = pretrained_window_size or window_size
            table = log_spaced_relative_coords(window_size, window_size, norm, norm)
            self.register_buffer("relative_coords_table", table, persistent=False)
            index = relative_position_index(window_size, window_size)
            self.register_buffer("relative_position_index", index, persistent=False)

    def position_bias(self, h: int, w: int) -> torch.Tensor:
        """(num_heads, h*w, h*w): 16 * sigmoid of the CPB at every token pair of an h x w grid."""
        if self.window_size is None:
            p = self.pretrained_window_size
            device = self.logit_scale.device
            table = log_spaced_relative_coords(h, w, p or h, p or w).to(device)
            index = relative_position_index(h, w).to(device)
        else:
            table, index = self.relative_coords_table, self.relative_position_index
        table = self.cpb_mlp(table.to(self.cpb_mlp[0].weight.dtype)).view(-1, self.num_heads)
        # the sigmoid of the (2h-1)(2w-1) table, then the gather: the official gathers first, same values;
        # gathered head-major, so that the bias (and its sum with a shift mask) is contiguous, as SDPA reads it
        return (16 * torch.sigmoid(table)).t()[:, index.view(-1)].view(-1, h * w, h * w)

    def forward(
        self,
        x: torch.Tensor,
        size: Tuple[int, int],
        mask: Optional[torch.Tensor] = None,
        windows: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """
        Args:
            x: (B', N, C) tokens of B' windows (or maps) of size h x w = N, row-major; with `windows`, (B, S, C)
                the tokens of B maps.
            size: (h, w).
            mask: (nW, N, N) added to the logits of window b' % nW (0 or -100), or None.
            windows: `window_order`'s (gather, scatter) of the maps: q, k, v are computed for the maps' tokens
                (a padding token's are the qkv bias, its input being zero) and gathered into windows, and
                the windows' outputs scattered back before the output projection.
        Returns:
            the shape of x.
        """
        b, _, c = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        with torch.autocast(x.device.type, enabled=False):
            qkv = F.linear(_at_least_fp32(x), self.qkv.weight, qkv_bias)
        if windows is not None:
            qkv = torch.cat([qkv, qkv_bias.to(qkv.dtype).expand(b, 1, -1)], 1).index_select(1, windows[0])
        n = size[0] * size[1]
        qkv = qkv.view(-1, n, 3 * c)
        q, k, v = qkv.view(qkv.shape[0], n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q = q / (q.norm(dim=-1, keepdim=True) + COSINE_EPS)
        k = k / (k.norm(dim=-1, keepdim=True) + COSINE_EPS)
        # the clamped logit scale folded into q, the position bias and the shift mask as one additive mask
        q = q * _at_least_fp32(torch.clamp(self.logit_scale, max=MAX_LOGIT_SCALE).exp())
        bias = self.position_bias(*size).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            bias = bias + mask[:, None]  # (nW, heads, N, N), window b' % nW
            if qkv.shape[0] > nw:
                bias = bias.repeat(qkv.shape[0] // nw, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0).type_as(x)
        out = merge_heads(out).view(-1, n, c)
        if windows is not None:
            out = out.view(b, -1, c).index_select(1, windows[1])
        return self.proj(out)


class _Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (names as the official Mlp; its dropout is 0 in every Plain-DETR model)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinV2Block(nn.Module):
    """A res-post-norm SwinV2 block: (shifted) window attention, or global attention when window_size is None."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Optional[int],
        shift_size: int,
        pretrained_window_size: int,
        mlp_ratio: float,
        drop_path: float,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.drop_path = drop_path
        self.norm1 = LayerNormFP32(dim, eps=NORM_EPS)
        self.attn = CosineAttention(dim, num_heads, window_size, pretrained_window_size)
        self.norm2 = LayerNormFP32(dim, eps=NORM_EPS)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: Tuple[int, int], windows: Optional[StageWindows]) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, H*W, C); windows: the stage's (gather, scatter, shift mask or None) for this
        block's shift (`stage_windows`), None for a global block."""
        if self.window_size is None:
            y = self.attn(x, size)
        else:
            gather, scatter, mask = windows
            y = self.attn(x, (self.window_size, self.window_size), mask, windows=(gather, scatter))
        x = x + stochastic_depth(self.norm1(y), self.drop_path, "row", self.training)
        return x + stochastic_depth(self.norm2(self.mlp(x)), self.drop_path, "row", self.training)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` >= n. A floor division times `multiple` (not n + (-n) % multiple),
    so that for a symbolic n, while exporting, the tracer knows the result divides by `multiple`."""
    return (n + multiple - 1) // multiple * multiple


# The window indices below are arithmetic on 1-D aranges, without views of (windows, ws, windows, ws) grids or
# remainders by map sizes, so that they trace for symbolic sizes (an ONNX export for any image size): a view
# of a grid asks whether a window count is 1 (which a small image's is), and torch.onnx cannot translate a
# remainder by a symbolic size. Divisions by the window size (an int) and by a window count are exact.


def window_slots(hp: int, wp: int, window_size: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (row, column) in an hp x wp map (whole windows) of each window position: windows in row-major
    order, each window's tokens row-major. Returns two (hp * wp,) int64."""
    ws = window_size
    windows_per_row = wp // ws
    slot = torch.arange(hp * wp, device=device)
    window, within = slot // (ws * ws), slot % (ws * ws)
    window_row = window // windows_per_row
    window_col = window - window_row * windows_per_row
    return window_row * ws + within // ws, window_col * ws + within % ws


def window_order(h: int, w: int, window_size: int, shift_size: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where the tokens of an h x w map go in its windows: the map zero-padded at the bottom/right to whole
    windows, cyclically shifted by -shift_size on both axes (pad first, then shift), cut into windows in
    row-major order, each window's tokens row-major. 0 <= shift_size < window_size.

    Returns:
        gather: (nW * ws * ws,) int64, the token (row-major index; h * w for padding) at each window position;
        scatter: (h * w,) int64, each token's window position.
    """
    ws = window_size
    hp, wp = round_up(h, ws), round_up(w, ws)
    rows, cols = window_slots(hp, wp, ws, device)
    # the shifted map's (i, j) holds the padded map's (i + shift, j + shift), modulo its sides (torch.roll)
    ys, xs = rows + shift_size, cols + shift_size
    ys, xs = torch.where(ys >= hp, ys - hp, ys), torch.where(xs >= wp, xs - wp, xs)
    gather = torch.where((ys < h) & (xs < w), ys * w + xs, h * w)
    # each token's (row, column) in the shifted map, then its window and its place in the window
    token = torch.arange(h * w, device=device)
    ys = token // w
    xs = token - ys * w
    ys, xs = ys - shift_size, xs - shift_size
    ys, xs = torch.where(ys < 0, ys + hp, ys), torch.where(xs < 0, xs + wp, xs)
    scatter = ((ys // ws) * (wp // ws) + xs // ws) * (ws * ws) + (ys % ws) * ws + xs % ws
    return gather, scatter


def stage_windows(h: int, w: int, window_size: int, shifts: Sequence[int], device=None) -> Dict[int, StageWindows]:
    """The windows of an h x w map for each shift of `shifts`, built once per stage for all its blocks."""
    hp, wp = round_up(h, window_size), round_up(w, window_size)
    return {
        shift: (*window_order(h, w, window_size, shift, device),
                shifted_window_mask(hp, wp, window_size, shift, device) if shift else None)
        for shift in set(shifts)
    }


def shifted_window_mask(hp: int, wp: int, window_size: int, shift_size: int, device=None) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) float32, -100 between tokens that the cyclic shift brought from different regions
    of the padded hp x wp map, 0 elsewhere; windows in row-major order."""

    def regions(i, n):  # rows [0, n - ws) -> 0, [n - ws, n - shift) -> 1, [n - shift, n) -> 2
        return (i >= n - window_size).long() + (i >= n - shift_size).long()

    rows, cols = window_slots(hp, wp, window_size, device)
    label = (regions(rows, hp) * 3 + regions(cols, wp)).view(-1, window_size * window_size)
    differs = label[:, None, :] != label[:, :, None]
    return torch.zeros(differs.shape, device=device).masked_fill_(differs, -100.0)


def gather_2x2(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens of an (H, W) map -> (B, ceil(H/2)*ceil(W/2), 4C): each 2x2 patch's tokens side by side
    (x0 y0, x0 y1, x1 y0, x1 y1; odd sizes zero-padded at the bottom/right), what patch merging projects."""
    h, w = size
    b, _, c = x.shape
    x = F.pad(x.view(b, h, w, c), (0, 0, 0, round_up(w, 2) - w, 0, round_up(h, 2) - h))
    x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    return x.view(b, -1, 4 * c)


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (x0, x1, x2, x3 = (0,0), (1,0), (0,1), (1,1) of (row, col)), reduced to
    2C by a linear layer, then normalised (SwinV2's post-norm merging). Odd sizes are zero-padded."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = LayerNormFP32(2 * dim, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """(B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C)"""
        return self.norm(self.reduction(gather_2x2(x, size)))


class SwinV2Stage(nn.Module):
    """The blocks of one resolution (shift on every odd block), then the patch merging if any (the official
    BasicLayer)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        pretrained_window_size: int,
        global_blocks: Sequence[int],
        drop_path: Sequence[float],
        mlp_ratio: float,
        downsample: bool,
        use_checkpoint: bool,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinV2Block(
                dim,
                num_heads,
                None if i in global_blocks else window_size,
                0 if i % 2 == 0 else self.shift_size,
                pretrained_window_size,
                mlp_ratio,
                drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, size: Tuple[int, int]):
        """(B, H*W, C) -> the stage's output (B, H*W, C) and the next stage's input with its size."""
        h, w = size
        shifts = [blk.shift_size for blk in self.blocks if blk.window_size is not None]
        windows = stage_windows(h, w, self.window_size, shifts, x.device)
        for blk in self.blocks:
            blk_windows = None if blk.window_size is None else windows[blk.shift_size]
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, size, blk_windows, use_reentrant=False)
            else:
                x = blk(x, size, blk_windows)
        if self.downsample is None:
            return x, x, size
        return x, self.downsample(x, size), ((h + 1) // 2, (w + 1) // 2)


class PatchEmbed(nn.Module):
    """Image -> patch tokens: zero padding to a multiple of the patch, a strided conv, a LayerNorm (computed
    in float32 at least, at `eps`: SwinV2's 1e-6; Swin's is nn.LayerNorm's 1e-5)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNormFP32(embed_dim, eps=eps)

    def forward(self, x: torch.Tensor):
        """(B, 3, H, W) -> (B, h*w, C) and (h, w), h = ceil(H / patch)."""
        p = self.patch_size
        height, width = x.shape[-2:]
        x = self.proj(F.pad(x, (0, round_up(width, p) - width, 0, round_up(height, p) - height)))
        size = tuple(x.shape[-2:])
        return self.norm(x.flatten(2).transpose(1, 2)), size


class SwinTrunk(Backbone):
    """What the Swin trunks (v1 and v2) share: `patch_embed`, then the `layers` (stages returning their output,
    the next stage's input and its size), each output stage normalised by its `norm{i}`.

    Outputs "res2".."res5" (strides patch * 1, 2, 4, 8; embed_dim * 1, 2, 4, 8 channels), (B, C, H_s, W_s).
    A subclass builds `patch_embed` and `layers`, then calls `_add_outputs`.
    """

    def _add_outputs(self, num_stages: int, embed_dim: int, patch_size: int, out_features: Sequence[str], norm) -> None:
        """Checks `out_features` and adds `norm(channels)` as `norm{i}` for each output stage i."""
        names = [f"res{i + 2}" for i in range(num_stages)]
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"out_features {list(out_features)}: choose among {names}")
        self._out_features = [f for f in names if f in out_features]
        self._out_feature_strides = {f: patch_size * 2**i for i, f in enumerate(names)}
        self._out_feature_channels = {f: embed_dim * 2**i for i, f in enumerate(names)}
        for i, f in enumerate(names):
            if f in self._out_features:
                self.add_module(f"norm{i}", norm(embed_dim * 2**i))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"res{i+2}": (B, C_i, H_i, W_i)} for the out_features."""
        x, size = self.patch_embed(x)
        outputs = {}
        for i, stage in enumerate(self.layers):
            y, x, next_size = stage(x, size)
            name = f"res{i + 2}"
            if name in self._out_features:
                y = getattr(self, f"norm{i}")(y)
                outputs[name] = y.view(y.shape[0], *size, -1).permute(0, 3, 1, 2).contiguous()
            size = next_size
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }


class SwinTransformerV2(SwinTrunk):
    """SwinV2 trunk with the official parameter names (`patch_embed`, `layers.i.blocks.j`, `layers.i.downsample`,
    `norm{i}` for each output stage).

    Outputs "res2".."res5" (strides 4, 8, 16, 32; embed_dim * 1, 2, 4, 8 channels), each normalised by its
    `norm{i}`, (B, C, H_s, W_s). Any input size works: the model pads (patches, windows, odd merges) itself,
    so `size_divisibility` stays 0 as in the official code.

    Args:
        embed_dim, depths, num_heads, window_size, mlp_ratio: the architecture.
        pretrained_window_sizes: per stage, the window of the pretraining that normalises the position
            offsets (0: the window itself).
        global_blocks: per stage, the indices of blocks attending over the whole map (none: `()`).
        drop_path_rate: stochastic depth, rising linearly from 0 to this over all blocks.
        out_features: among "res2".."res5".
        use_checkpoint: activation checkpointing of every block while gradients are computed.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        pretrained_window_sizes: Sequence[int],
        global_blocks: Sequence[Sequence[int]],
        drop_path_rate: float,
        out_features: Sequence[str] = ("res5",),
        mlp_ratio: float = 4.0,
        patch_size: int = 4,
        in_chans: int = 3,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        n = len(depths)
        for name, value in (("num_heads", num_heads), ("pretrained_window_sizes", pretrained_window_sizes)):
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries, depths {n}")
        if len(global_blocks) != n:
            raise ValueError(f"global_blocks has {len(global_blocks)} entries, depths {n}")
        for stage, (blocks, depth) in enumerate(zip(global_blocks, depths)):
            if any(not 0 <= i < depth for i in blocks):
                raise ValueError(f"global_blocks[{stage}] = {list(blocks)}: stage {stage} has {depth} blocks")
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i in range(n):
            start = sum(depths[:i])
            self.layers.append(
                SwinV2Stage(
                    embed_dim * 2**i,
                    depths[i],
                    num_heads[i],
                    window_size,
                    pretrained_window_sizes[i],
                    tuple(global_blocks[i]),
                    rates[start : start + depths[i]],
                    mlp_ratio,
                    downsample=i < n - 1,
                    use_checkpoint=use_checkpoint,
                )
            )
        self._add_outputs(n, embed_dim, patch_size, out_features, functools.partial(LayerNormFP32, eps=NORM_EPS))
        self.apply(trunc_normal_init_)
        for stage in self.layers:  # res-post-norm: every block starts as the identity
            for blk in stage.blocks:
                for norm in (blk.norm1, blk.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)


def build_swinv2_backbone(
    *,
    embed_dim: int = 96,
    depths: Sequence[int] = (2, 2, 18, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int = 16,
    pretrained_window_sizes: Sequence[int] = (16, 16, 16, 8),
    global_blocks: Sequence[Sequence[int]] = ((), (), (), (0, 1)),
    drop_path_rate: float = 0.1,
    out_stride: int = 16,
    use_checkpoint: bool = False,
) -> UpsampleBackbone:
    """Plain-DETR's backbone: the last stage of a SwinV2 upsampled to `out_stride` (output "p4", 384 channels
    at stride 16 for SwinV2-S). The defaults are `swin_v2_small_window16_2global` (supervised pretraining);
    `pretrained_window_sizes=(12, 12, 12, 6)` gives `swin_v2_small_window12to16_2global` (SimMIM), and
    `global_blocks=((), (), (), ())` the backbones without global blocks."""
    trunk = SwinTransformerV2(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=num_heads,
        window_size=window_size,
        pretrained_window_sizes=pretrained_window_sizes,
        global_blocks=global_blocks,
        drop_path_rate=drop_path_rate,
        out_features=(f"res{len(depths) + 1}",),
        use_checkpoint=use_checkpoint,
    )
    return UpsampleBackbone(trunk, out_stride)

"""A single-output backbone brought to a finer stride by 2x transposed convolutions (Plain-DETR's UpSampleWrapper)."""
import math
from typing import Dict, Optional

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from torch import nn

__all__ = ["UpsampleBackbone", "LayerNorm2d"]


class LayerNorm2d(nn.Module):
    """nn.LayerNorm over the channels of a (B, C, H, W) map; the parameters are `ln.weight`/`ln.bias`, as the
    official LayerNorm2D's."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.ln = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class UpsampleBackbone(Backbone):
    """`net`'s one output at stride s, upsampled to `out_stride`: for a ratio 2^k, k - 1 blocks of
    [ConvTranspose2d(C, C/2, 2, 2), LayerNorm2d, GELU] then a last ConvTranspose2d(C, C/2, 2, 2), each
    halving the channels (Plain-DETR: SwinV2's stride-32 768 channels -> stride 16, 384 channels, `upsample.0`).
    A ratio of 1 leaves the map as it is.

    The output is named "p{log2(out_stride)}" (d2's name of a level by its stride: "p4" is stride 16),
    (B, C / 2^k, H * 2^k, W * 2^k). The trunk's parameters are under `net.`.
    """

    def __init__(self, net: Backbone, out_stride: int, in_feature: Optional[str] = None):
        super().__init__()
        shapes = net.output_shape()
        if in_feature is None:
            if len(shapes) != 1:
                raise ValueError(f"the backbone has outputs {list(shapes)}: name the one to upsample (in_feature)")
            in_feature = next(iter(shapes))
        if in_feature not in shapes:
            raise ValueError(f"in_feature {in_feature!r} is not a backbone output {list(shapes)}")
        in_stride, channels = shapes[in_feature].stride, shapes[in_feature].channels
        ratio = in_stride // out_stride if out_stride > 0 else 0
        if ratio < 1 or ratio * out_stride != in_stride or ratio & (ratio - 1):
            raise ValueError(f"out_stride {out_stride} must be the input stride {in_stride} over a power of two")
        steps = int(math.log2(ratio))
        if channels % 2**steps:
            raise ValueError(f"{channels} channels cannot be halved {steps} times")
        layers = []
        for step in range(steps):
            layers.append(nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2))
            channels //= 2
            if step < steps - 1:
                layers += [LayerNorm2d(channels), nn.GELU()]
        self.net = net
        self.in_feature = in_feature
        self.upsample = nn.Sequential(*layers) if layers else nn.Identity()
        self._out_features = [f"p{int(math.log2(out_stride))}"]
        self._out_feature_strides = {self._out_features[0]: out_stride}
        self._out_feature_channels = {self._out_features[0]: channels}

    @property
    def size_divisibility(self) -> int:
        return self.net.size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return self.net.padding_constraints

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"p{k}": (B, C, H_k, W_k)}"""
        return {self._out_features[0]: self.upsample(self.net(x)[self.in_feature])}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        name = self._out_features[0]
        return {name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])}

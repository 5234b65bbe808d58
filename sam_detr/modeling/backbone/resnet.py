"""Detectron2's ResNet as the official DETR-family backbones use it (torchvision layout, frozen BN), with
a faster path that gives the same outputs up to float rounding."""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

__all__ = ["build_resnet_backbone", "FrozenBNConv2d", "FastResNet"]


def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, conv: Conv2d) -> torch.Tensor:
    """`F.conv2d` with `conv`'s geometry; float32 on the CPU always through oneDNN. PyTorch sends a
    non-strided 1x1 convolution to its own GEMM path when it runs on one thread (`ConvParams::use_mkldnn`),
    which takes twice oneDNN's time on ResNet's res2 (17 ms against 7 ms at 480x640) and reorders
    channels-last inputs."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available() \
            and torch.backends.mkldnn.enabled:
        return torch.ops.aten.mkldnn_convolution(
            x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups
        )
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class FrozenBNConv2d(Conv2d):
    """d2's `Conv2d` followed by a `FrozenBatchNorm2d`, computed as one convolution: the frozen affine
    map `x * s + (b - m * s)`, s = w / sqrt(v + eps), is folded into the kernel and bias at every call
    (cheap next to the convolution; gradients still reach the kernel), so the normalisation costs
    neither a pass over the activations nor their memory. Same parameters and state dict as the d2
    module it replaces (`fold_frozen_bn`); same outputs up to float rounding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
        bias = norm.bias - norm.running_mean * scale
        if self.bias is not None:
            bias = bias + self.bias * scale
        x = _conv2d(x, self.weight * scale.view(-1, 1, 1, 1).to(self.weight.dtype), bias.to(x.dtype), self)
        return x if self.activation is None else self.activation(x)


def fold_frozen_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Every d2 `Conv2d` of `model` whose norm is a `FrozenBatchNorm2d` becomes a `FrozenBNConv2d` (in
    place: parameters, buffers and their names are kept)."""
    for module in model.modules():
        if type(module) is Conv2d and type(module.norm) is FrozenBatchNorm2d:
            module.__class__ = FrozenBNConv2d
    return model


class FastResNet(ResNet):
    """d2's `ResNet` run in the channels-last memory format (NHWC), in which oneDNN's convolutions and
    max-pooling on the CPU (and cuDNN's on a GPU) need no layout reorders; the returned features are
    contiguous (NCHW) again, so that nothing downstream sees the difference."""

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = super().forward(x.contiguous(memory_format=torch.channels_last))
        return {k: v.contiguous() for k, v in features.items()}

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def build_resnet_backbone(
    depth: int = 50,
    out_features: Sequence[str] = ("res5",),
    freeze_at: int = 2,
    norm: str = "FrozenBN",
    dc5: bool = False,
    fast: bool = True,
) -> ResNet:
    """A d2 `ResNet` laid out like torchvision's (stride in the 3x3 conv), as in the official models.

    Args:
        depth: 18, 34, 50 or 101.
        out_features: stages to return, among "res2".."res5".
        freeze_at: 2 freezes the stem and res2 (the official models train layer2-4 only).
        norm: "FrozenBN" for the official models; "BN", "GN", ... for training from scratch.
        dc5: res5 with stride 1 and dilation 2 (output stride 16), built like torchvision's
            `replace_stride_with_dilation`: the first res5 block keeps dilation 1, the others get 2.
        fast: fold every frozen BN into its convolution (`FrozenBNConv2d`, oneDNN on the CPU) and, where
            every norm is frozen, run in the channels-last memory format (`FastResNet`), in training and
            inference: the same parameters, state dict and outputs (up to float rounding: about 3e-6 of
            the largest res5 feature) as d2's plain ResNet (`fast=False`); the official models' ResNet-50
            runs about 1.2x faster on the CPU in inference, 1.1x in training (docs/speed.md).
    """
    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(f"ResNet depth must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}")
    if dc5 and depth < 50:
        raise ValueError("DC5 needs bottleneck blocks (depth >= 50), as in torchvision")
    bottleneck = depth >= 50
    in_channels = [64, 256, 512, 1024] if bottleneck else [64, 64, 128, 256]
    out_channels = [256, 512, 1024, 2048] if bottleneck else [64, 128, 256, 512]
    stages = []
    for idx, (n, c_in, c_out) in enumerate(zip(_BLOCKS_PER_STAGE[depth], in_channels, out_channels)):
        stride = 1 if idx == 0 or (dc5 and idx == 3) else 2
        kwargs = dict(
            num_blocks=n,
            stride_per_block=[stride] + [1] * (n - 1),
            in_channels=c_in,
            out_channels=c_out,
            norm=norm,
        )
        if bottleneck:
            kwargs.update(block_class=BottleneckBlock, bottleneck_channels=c_out // 4, stride_in_1x1=False)
            if dc5 and idx == 3:
                kwargs["dilation_per_block"] = [1] + [2] * (n - 1)
        else:
            kwargs["block_class"] = BasicBlock
        stages.append(ResNet.make_stage(**kwargs))
    stem = BasicStem(in_channels=3, out_channels=64, norm=norm)
    # trainable BatchNorm stays in NCHW: PyTorch's channels-last batch statistics on the CPU lose precision
    # (gradients several times further from float64 than NCHW's, on random ResNet-50s)
    resnet = FastResNet if fast and norm == "FrozenBN" else ResNet
    model = resnet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)
    return fold_frozen_bn(model) if fast else model

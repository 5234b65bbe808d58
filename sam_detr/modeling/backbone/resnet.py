"""Detectron2's ResNet as the official DETR-family backbones use it (torchvision layout, frozen BN)."""
from typing import Sequence

from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

__all__ = ["build_resnet_backbone", "build_detr_resnet_backbone"]

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def build_resnet_backbone(
    depth: int = 50,
    out_features: Sequence[str] = ("res5",),
    freeze_at: int = 2,
    norm: str = "FrozenBN",
    dc5: bool = False,
) -> ResNet:
    """A d2 `ResNet` laid out like torchvision's (stride in the 3x3 conv), as in the official models.

    Args:
        depth: 18, 34, 50 or 101.
        out_features: stages to return, among "res2".."res5".
        freeze_at: 2 freezes the stem and res2 (the official models train layer2-4 only).
        norm: "FrozenBN" for the official models; "BN", "GN", ... for training from scratch.
        dc5: res5 with stride 1 and dilation 2 (output stride 16), built like torchvision's
            `replace_stride_with_dilation`: the first res5 block keeps dilation 1, the others get 2.
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
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)


@BACKBONE_REGISTRY.register()
def build_detr_resnet_backbone(cfg, input_shape=None) -> ResNet:
    """`build_resnet_backbone` from a yacs config: RES5_DILATION = 2 gives DC5."""
    if cfg.MODEL.RESNETS.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {cfg.MODEL.RESNETS.RES5_DILATION}")
    return build_resnet_backbone(
        depth=cfg.MODEL.RESNETS.DEPTH,
        out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        norm=cfg.MODEL.RESNETS.NORM,
        dc5=cfg.MODEL.RESNETS.RES5_DILATION == 2,
    )

"""The input projection of DETR-family models: backbone levels to the model width, plus extra strided levels."""
from typing import List, Sequence

import torch
from torch import nn

__all__ = ["InputProjection"]


class InputProjection(nn.ModuleList):
    """One `Conv2d(C_l, d_model, 1)` (+ `GroupNorm(32, d_model)`) per backbone level, then `num_extra_levels`
    `Conv2d(., d_model, 3, stride 2, padding 1)` (+ GroupNorm): the first on the raw last backbone level (as
    Deformable DETR's 4th level from C5's 2048 channels), each next one on the previous extra level.

    Entry i is `nn.Sequential(conv, norm)`, so the parameters are named `i.0.*` and `i.1.*` as in the official
    Deformable DETR, SAM-DETR, MS-DETR and Plain-DETR (DETR's and Conditional DETR's single `input_proj`
    conv is entry 0 without norm).

    Args:
        in_channels: C_l of each backbone level, finest first.
        d_model: the output channels.
        num_extra_levels: strided levels added after the backbone ones.
        norm: GroupNorm(32) after each conv.
        xavier_init: xavier-uniform conv weights and zero biases (Deformable DETR, MS-DETR, Plain-DETR);
            otherwise PyTorch's default (DETR, Conditional DETR, SAM-DETR).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        d_model: int,
        num_extra_levels: int = 0,
        norm: bool = True,
        xavier_init: bool = False,
    ):
        if not in_channels:
            raise ValueError("InputProjection needs at least one backbone level")
        projs = []
        for c in in_channels:
            projs.append(_conv_norm(nn.Conv2d(c, d_model, kernel_size=1), norm))
        c = in_channels[-1]
        for _ in range(num_extra_levels):
            projs.append(_conv_norm(nn.Conv2d(c, d_model, kernel_size=3, stride=2, padding=1), norm))
            c = d_model
        super().__init__(projs)
        self.num_backbone_levels = len(in_channels)
        if xavier_init:
            for proj in self:
                nn.init.xavier_uniform_(proj[0].weight, gain=1)
                nn.init.zeros_(proj[0].bias)

    def forward(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """
        Args:
            features: per backbone level, (B, C_l, H_l, W_l), finest first.
        Returns:
            per level, backbone levels then extra ones, (B, d_model, H, W).
        """
        n = self.num_backbone_levels
        if len(features) != n:
            raise ValueError(f"InputProjection expects {n} backbone level(s), got {len(features)}")
        projs = list(self)
        out = [proj(f) for proj, f in zip(projs[:n], features)]
        src = features[-1]
        for proj in projs[n:]:
            src = proj(src)
            out.append(src)
        return out


def _conv_norm(conv: nn.Conv2d, norm: bool) -> nn.Sequential:
    return nn.Sequential(conv, nn.GroupNorm(32, conv.out_channels)) if norm else nn.Sequential(conv)

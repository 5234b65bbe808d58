"""SAM-DETR's encoder-decoder: single-scale (DETR encoder) and multi-scale (deformable encoder).

Batch-first: levels (B, C, H_l, W_l) in; the memory a `FlattenedLevels` (B, S, C).
"""
from typing import List

import torch
from torch import nn

from .deformable_encoder import DeformableTransformerEncoder
from .deformable_transformer import reset_deformable_parameters
from .detr_transformer import TransformerEncoder
from .levels import FlattenedLevels, flatten_levels
from .sam_detr_decoder import SAMDETRDecoder

__all__ = ["SAMDETRTransformer", "SAMDETRMultiScaleTransformer"]


class SAMDETRTransformer(nn.Module):
    """Single-scale SAM-DETR: a DETR encoder over one feature level (`encode`), then the SAM-DETR decoder
    (`decoder`, run by the meta-architecture with its heads).

    Initialised as the official code: xavier_uniform over every parameter of more than one dimension of
    the encoder and decoder, after the layers are built (so it overrides their own initialisation), then
    the deformable attentions' own initialisation again (`reset_deformable_parameters`).
    """

    def __init__(self, encoder: TransformerEncoder, decoder: SAMDETRDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.d_model = decoder.d_model
        reset_deformable_parameters(self)

    @property
    def num_feature_levels(self) -> int:
        return 1

    def encode(self, srcs: List[torch.Tensor], masks: List[torch.Tensor], pos: List[torch.Tensor]) -> FlattenedLevels:
        """The memory: per level (B, C, H_l, W_l) features and sine positions, (B, H_l, W_l) masks (True on
        padding), finest first -> the encoded levels."""
        if not len(srcs) == len(masks) == len(pos) == self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(srcs)}")
        levels = flatten_levels(srcs, masks, pos)
        return levels._replace(src=self.encoder(levels.src, key_padding_mask=levels.mask, pos=levels.pos))


class SAMDETRMultiScaleTransformer(SAMDETRTransformer):
    """SAM-DETR-MS: a deformable encoder over all levels; each decoder layer attends to one level.

    Every level's position embedding is offset by a learned `level_embed`, in the encoder and in the
    decoder. Initialised as the official code (see `SAMDETRTransformer`), and `level_embed` ~ N(0, 1).
    """

    def __init__(self, encoder: DeformableTransformerEncoder, decoder: SAMDETRDecoder):
        super().__init__(encoder, decoder)
        levels = encoder.num_levels
        if max(decoder.layer_levels) >= levels:
            raise ValueError(f"decoder layer_levels {decoder.layer_levels} name levels beyond the {levels} encoded")
        self.level_embed = nn.Parameter(torch.empty(levels, self.d_model))
        nn.init.normal_(self.level_embed)

    @property
    def num_feature_levels(self) -> int:
        return self.level_embed.shape[0]

    def encode(self, srcs: List[torch.Tensor], masks: List[torch.Tensor], pos: List[torch.Tensor]) -> FlattenedLevels:
        if len(srcs) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(srcs)}")
        levels = flatten_levels(srcs, masks, pos, self.level_embed)
        return levels._replace(src=self.encoder(levels))

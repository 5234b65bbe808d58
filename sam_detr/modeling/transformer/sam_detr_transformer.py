"""SAM-DETR's encoder-decoder: single-scale (DETR encoder) and multi-scale (deformable encoder)."""
from typing import List, Sequence, Tuple

import torch
from torch import nn

from .deformable_encoder import DeformableTransformerEncoder
from .deformable_transformer import reset_deformable_parameters
from .detr_transformer import TransformerEncoder
from .levels import flatten_levels, valid_ratios, valid_sizes
from .sam_detr_decoder import MemoryLevel, SAMDETRDecoder

__all__ = ["SAMDETRTransformer", "SAMDETRMultiScaleTransformer"]


class SAMDETRTransformer(nn.Module):
    """Single-scale SAM-DETR: a DETR encoder over one feature level, then the SAM-DETR decoder.

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

    def encode(
        self, srcs: List[torch.Tensor], masks: List[torch.Tensor], pos: List[torch.Tensor], exact_padding: bool
    ) -> List[MemoryLevel]:
        """Per level (B, C, H, W) features and pos, (B, H, W) masks -> the encoded levels."""
        (src,), (mask,), (pos,) = srcs, masks, pos
        pos = pos.flatten(2).permute(2, 0, 1)
        memory = self.encoder(src.flatten(2).permute(2, 0, 1), key_padding_mask=mask.flatten(1), pos=pos)
        return [_memory_level(memory, src.shape[-2:], mask, pos, exact_padding)]

    def forward(
        self,
        srcs: List[torch.Tensor],
        masks: List[torch.Tensor],
        pos: List[torch.Tensor],
        ref_logits: torch.Tensor,
        bbox_embed: Sequence[nn.Module],
        exact_padding: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            srcs: per level, (B, C, H_l, W_l) projected features, finest first.
            masks: per level, (B, H_l, W_l) bool, True on padding.
            pos: per level, (B, C, H_l, W_l) sine position embeddings.
            ref_logits: (Q, 4) the learned reference boxes, unactivated (cx, cy, w, h).
            bbox_embed: per decoder layer, the box head.
            exact_padding: the masks mark each image's own size exactly (`batch_invariant`): the decoder
                places points by each image's size and reads each image's own map (see `MemoryLevel.sizes`).
        Returns:
            (num_decoder_layers, B, Q, C) decoder outputs and (num_decoder_layers, B, Q, 4) boxes
            (cx, cy, w, h) normalised to the unpadded image.
        """
        if not len(srcs) == len(masks) == len(pos) == self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(srcs)}")
        return self.decoder(self.encode(srcs, masks, pos, exact_padding), ref_logits, bbox_embed)


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

    def encode(
        self, srcs: List[torch.Tensor], masks: List[torch.Tensor], pos: List[torch.Tensor], exact_padding: bool
    ) -> List[MemoryLevel]:
        flat = flatten_levels(srcs, masks, pos, self.level_embed)
        memory = self.encoder(flat)
        return [
            _memory_level(m.transpose(0, 1), src.shape[-2:], mask, p.transpose(0, 1), exact_padding)
            for m, p, src, mask in zip(flat.split(memory), flat.split(flat.pos), srcs, masks)
        ]


def _memory_level(
    memory: torch.Tensor, size: Tuple[int, int], mask: torch.Tensor, pos: torch.Tensor, exact_padding: bool
) -> MemoryLevel:
    """memory, pos: (H*W, B, C); mask: (B, H, W)."""
    H, W = size
    S, B, C = memory.shape
    return MemoryLevel(
        memory=memory,
        memory_2d=memory.permute(1, 2, 0).reshape(B, C, H, W).contiguous(),
        mask=mask.flatten(1),
        pos=pos,
        valid_ratio=valid_ratios(mask),
        sizes=valid_sizes(mask) if exact_padding else None,
    )

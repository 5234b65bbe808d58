"""DINO's decoder (IDEA-Research/DINO `TransformerDecoder`): Deformable DETR's layers, each query positioned
by its current anchor box, a final norm for the heads, and look-forward-twice box refinement.

Batch-first: queries (B, Q, C); the memory is a `FlattenedLevels` (B, S, C).
"""
import copy
from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn

from ...layers import MLP, anchor_sine_embed, inverse_sigmoid
from .levels import FlattenedLevels

__all__ = ["DINODecoder", "DINODecoderOutput"]

# DINO's inverse_sigmoid clamp (util/misc.py)
DINO_EPS = 1e-3


class DINODecoderOutput(NamedTuple):
    hs: torch.Tensor  # (L, B, Q, C) every layer's output, normalised: what the heads read
    boxes: torch.Tensor  # (L, B, Q, 4) every layer's boxes (cx, cy, w, h) in [0, 1]


class DINODecoder(nn.Module):
    """Layer l attends around its anchor boxes r_l (B, Q, 4):

        pos_l = ref_point_head(sine(r_l scaled into level 0))     (Y, X, W, H sine embedding, 128 each)
        h_l = layers[l](h_{l-1}, pos_l, r_l in every level, memory)
        boxes_l = sigmoid(box_head(norm(h_l)) + inverse_sigmoid(r'_l))           (the prediction)
        r'_{l+1} = sigmoid(box_head(h_l) + inverse_sigmoid(r_l)),  r_{l+1} = detach(r'_{l+1})

    with r'_0 = r_0: the prediction of layer l refines the not-detached r'_l (look-forward-twice); the next
    anchors come from the un-normalised output, the predictions from the normalised one (`norm`, one
    LayerNorm for all layers), as the official code. inverse_sigmoid clamps at 1e-3, DINO's.

    Official names: `layers.i.*`, `ref_point_head` (MLP 2C -> C -> C), `norm`.

    Args:
        layer: one decoder layer (`DeformableTransformerDecoderLayer`), deep-copied `num_layers` times.
    """

    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.d_model = d = layer.d_model
        self.ref_point_head = MLP(2 * d, d, d, 2)
        self.norm = nn.LayerNorm(d)

    def query_position(
        self, anchors: torch.Tensor, valid_ratios: torch.Tensor, exclude_padding: bool = False
    ) -> torch.Tensor:
        """(B, Q, 4) anchors in [0, 1] of the unpadded image, (B, L, 2) valid ratios -> (B, Q, C): the sine
        embedding of the anchors as the first level sees them (normalised over the padded level, so that an
        image's queries change with the batch's padding), or, `exclude_padding`, over the image itself, as
        it is alone: through `ref_point_head`."""
        if not exclude_padding:
            anchors = anchors * torch.cat([valid_ratios[:, None, 0], valid_ratios[:, None, 0]], -1)
        return self.ref_point_head(anchor_sine_embed(anchors, self.d_model // 2))

    def forward(
        self,
        tgt: torch.Tensor,
        anchors: torch.Tensor,
        memory: FlattenedLevels,
        box_heads: Sequence[nn.Module],
        self_attn_mask: Optional[torch.Tensor] = None,
        exclude_padding: bool = False,
    ) -> DINODecoderOutput:
        """
        Args:
            tgt: (B, Q, C) the content queries.
            anchors: (B, Q, 4) the first layer's anchor boxes in [0, 1] (not trained through).
            memory: the encoded levels.
            box_heads: per layer, the box head (C -> 4), owned by the caller.
            self_attn_mask: (Q, Q) bool, True where query i may not attend to query j.
            exclude_padding: position the queries as in the image alone (see `query_position`).
        """
        if len(box_heads) != len(self.layers):
            raise ValueError(f"got {len(box_heads)} box heads for {len(self.layers)} decoder layers")
        ratios = torch.cat([memory.valid_ratios, memory.valid_ratios], -1)[:, None]  # (B, 1, L, 4)
        reference, head_reference = anchors, anchors
        hs, boxes = [], []
        for layer, head in zip(self.layers, box_heads):
            pos = self.query_position(reference, memory.valid_ratios, exclude_padding)
            tgt = layer(tgt, pos, reference[:, :, None] * ratios, memory, self_attn_mask)
            features = self.norm(tgt)
            boxes.append((head(features) + inverse_sigmoid(head_reference, DINO_EPS)).sigmoid())
            head_reference = (head(tgt) + inverse_sigmoid(reference, DINO_EPS)).sigmoid()
            reference = head_reference.detach()
            hs.append(features)
        return DINODecoderOutput(torch.stack(hs), torch.stack(boxes))

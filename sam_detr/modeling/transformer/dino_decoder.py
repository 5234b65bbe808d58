"""DINO's decoder (IDEA-Research/DINO `TransformerDecoder`): Deformable DETR's layers on the refining loop,
each query positioned by its current anchor box, a final norm for the heads.

Batch-first: queries (B, Q, C); the memory is a `FlattenedLevels` (B, S, C).
"""
from typing import Optional

import torch
from torch import nn

from ...layers import MLP, anchor_sine_embed
from .box_refinement import Reference
from .levels import FlattenedLevels
from .refining_decoder import RefiningDecoder

__all__ = ["DINODecoder"]


class DINODecoder(RefiningDecoder):
    """`RefiningDecoder` with DINO's hooks. Layer l attends around its anchors r_l (B, Q, 4):

        pos_l = ref_point_head(sine(r_l scaled into level 0))    (Y, X, W, H sine embedding)
        h_l = layers[l](h_{l-1}, pos_l, r_l, memory)
        boxes_l = decode(r'_l, box_head(norm(h_l)))                the prediction, from the normalised output
        r'_{l+1} = decode(r_l, box_head(h_l)),  r_{l+1} = detach(r'_{l+1})     the anchors, from the raw one

    with look-forward-twice refinement (`BoxRefinement(look_forward_twice=True)`: layer l's prediction
    refines the not-detached r'_l) and DINO's inverse_sigmoid clamp (`SigmoidBoxCoder(eps=1e-3)`), both given
    by the model. `norm` is one LayerNorm for all layers, read by the heads only.

    The anchors enter the sine embedding normalised over the padded first level, as the official code does, so
    that an image's queries move with the batch's padding; with `batch_invariant` (set by the model before each
    forward) over the image itself, as it is alone.

    Official names: `layers.i.*`, `ref_point_head` (MLP 2C -> C -> C), `norm`.

    Args:
        layer: one decoder layer (`DeformableTransformerDecoderLayer`), deep-copied `num_layers` times.
    """

    refine_normed = False

    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__(layer, num_layers)
        d = self.d_model
        self.ref_point_head = MLP(2 * d, d, d, 2)
        self.norm = nn.LayerNorm(d)
        self.batch_invariant = False

    def query_position(
        self, index: int, query_pos: Optional[torch.Tensor], reference: Reference, memory: FlattenedLevels
    ) -> torch.Tensor:
        """(B, Q, C): the sine embedding of the anchors as the first level sees them, through `ref_point_head`."""
        ratios = torch.ones_like(memory.valid_ratios) if self.batch_invariant else memory.valid_ratios
        return self.ref_point_head(anchor_sine_embed(reference.in_levels(ratios)[:, :, 0], self.d_model // 2))

    def output_norm(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt)

"""The refining decoder: the loop of every method whose decoder layers refine boxes from a reference
(Deformable DETR, MS-DETR, SAM-DETR, Plain-DETR; DINO).

Batch-first: queries (B, Q, C); the memory is a `FlattenedLevels` (B, S, C). A decoder layer is called as
`layer(tgt, query_pos, reference, memory, self_attn_mask) -> (B, Q, C)`, with `reference` a `Reference`
(its boxes in the coder's space, which the layer converts as its attention needs: `Reference.in_levels`,
`Reference.padded_pixels`) and `self_attn_mask` a (Q, Q) bool mask, True where query i may not attend to
query j (`QueryGroups.attention_mask`).
"""
import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..box_coder import BoxCoder
from .box_refinement import BoxRefinement, Reference
from .levels import FlattenedLevels

__all__ = ["DecoderOutput", "RefiningDecoder"]


@dataclass
class DecoderOutput:
    """Every layer's output of a `RefiningDecoder`; L layers."""

    hs: torch.Tensor  # (L, B, Q, C) the features the heads read
    boxes: torch.Tensor  # (L, B, Q, 4) every layer's boxes, in the coder's space
    references: List[torch.Tensor]  # per layer, the (B, Q, 2|4) reference its box head refined
    deltas: torch.Tensor  # (L, B, Q, 4) every layer's box-head output

    def predictions(self, class_heads: Sequence[nn.Module], coder: BoxCoder) -> Dict[str, torch.Tensor]:
        """Every layer's predictions, (L, B, Q, ...) each: "pred_logits" by layer l's class head, "pred_boxes",
        and what the coder's L1 loss reads (`BoxCoder.regression_outputs`); see `QueryGroups.outputs`."""
        out = {"pred_logits": torch.stack([head(h) for head, h in zip(class_heads, self.hs)]), "pred_boxes": self.boxes}
        extra = [coder.regression_outputs(r, d) for r, d in zip(self.references, self.deltas)]
        out.update({k: torch.stack([e[k] for e in extra]) for k in extra[0]})
        return out


class RefiningDecoder(nn.Module):
    """Decoder layers with per-layer box refinement. Layer l, with the reference r_l of its queries:

        pos_l = query_position(l, query_pos, r_l, memory)         (default: query_pos as given)
        h_l, extras_l = layer_forward(l, tgt, pos_l, r_l, memory)  (default: layers[l](...), no extras)
        f_l = output_norm(h_l)                                     (default: none; the heads read f_l)
        boxes_l, r_{l+1} = refinement.step(r_l, box_heads[l](f_l))

    h_l is the next layer's tgt. A subclass overrides those hooks: a final norm (Plain-DETR; DINO, whose
    refinement reads box_heads[l](h_l) instead: `refine_normed = False`), positions from the reference (DINO),
    a memory level per layer (SAM-DETR), extra per-layer features (MS-DETR: `output_type` then has a field
    per extra).

    Args:
        layer: one decoder layer (with a `d_model`), deep-copied `num_layers` times.
    """

    output_type = DecoderOutput
    refine_normed = True

    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.d_model = layer.d_model

    def query_position(
        self, index: int, query_pos: Optional[torch.Tensor], reference: Reference, memory: FlattenedLevels
    ) -> Optional[torch.Tensor]:
        return query_pos

    def layer_forward(
        self,
        index: int,
        tgt: torch.Tensor,
        query_pos: Optional[torch.Tensor],
        reference: Reference,
        memory: FlattenedLevels,
        self_attn_mask: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return self.layers[index](tgt, query_pos, reference, memory, self_attn_mask), {}

    def output_norm(self, tgt: torch.Tensor) -> torch.Tensor:
        return tgt

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: Optional[torch.Tensor],
        reference: Reference,
        memory: FlattenedLevels,
        box_heads: Sequence[nn.Module],
        refinement: BoxRefinement,
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> DecoderOutput:
        """
        Args:
            tgt, query_pos: (B, Q, C) the content and position queries (query_pos None: the layers position
                the queries themselves).
            reference: the first layer's (`BoxRefinement.start`).
            memory: the encoded levels.
            box_heads: per layer, the box head (C -> 4), owned by the caller.
            refinement: how a layer's boxes become the next layer's reference.
            self_attn_mask: (Q, Q) bool, True where query i may not attend to query j.
        """
        if len(box_heads) != len(self.layers):
            raise ValueError(f"got {len(box_heads)} box heads for {len(self.layers)} decoder layers")
        hs, boxes, references, deltas, extras = [], [], [], [], {}
        for index, head in enumerate(box_heads):
            pos = self.query_position(index, query_pos, reference, memory)
            tgt, extra = self.layer_forward(index, tgt, pos, reference, memory, self_attn_mask)
            for name, value in extra.items():
                extras.setdefault(name, []).append(value)
            features = self.output_norm(tgt)
            deltas.append(head(features))
            next_delta = None if self.refine_normed or features is tgt else head(tgt)
            references.append(reference.head)
            layer_boxes, reference = refinement.step(reference, deltas[-1], next_delta)
            hs.append(features)
            boxes.append(layer_boxes)
        stacked = {name: torch.stack(values) for name, values in extras.items()}
        return self.output_type(torch.stack(hs), torch.stack(boxes), references, torch.stack(deltas), **stacked)

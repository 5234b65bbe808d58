"""Iterative box refinement between decoder layers, the one routine of every refining method here.

Batch-first: references and deltas are (B, Q, 2) points (x, y) or (B, Q, 4) boxes (cx, cy, w, h) in the box
space of a `BoxCoder` (normalised to [0, 1] over the unpadded image for `SigmoidBoxCoder`).
"""
from typing import NamedTuple, Optional, Tuple

import torch

from ..box_coder import BoxCoder

__all__ = ["BoxRefinement", "Reference"]

FORMS = ("inverse_sigmoid", "logit")


class Reference(NamedTuple):
    """The reference of one decoder layer (see `BoxRefinement`), in its coder's box space."""

    boxes: torch.Tensor  # (B, Q, 2|4) what the layer attends with
    head: torch.Tensor  # (B, Q, 2|4) what the layer's box head refines: `boxes`, or not detached
    coder: BoxCoder
    logits: Optional[torch.Tensor] = None  # (B, Q, 4) the running logits of the "logit" form

    def in_levels(self, valid_ratios: torch.Tensor) -> torch.Tensor:
        """(B, Q, L, 2|4) `boxes` normalised over each padded level; valid_ratios (B, L, 2)."""
        return self.coder.in_levels(self.boxes, valid_ratios)

    def padded_pixels(self, valid_ratio: torch.Tensor, padded_size: torch.Tensor) -> torch.Tensor:
        """(B, Q, 4) `boxes` as (x1, y1, x2, y2) in input pixels; valid_ratio (B, 2) of the attended map,
        padded_size (W, H) its padded size in pixels."""
        return self.coder.padded_pixels(self.boxes, valid_ratio, padded_size)


class BoxRefinement:
    """Layer l's box head predicts a delta from its output h_l; this turns it into layer l's boxes
    (`coder.decode(r_l, delta_l)`) and layer l + 1's reference r_{l+1}:

    - "inverse_sigmoid" (Deformable DETR, MS-DETR, Plain-DETR, DINO): r_{l+1} is layer l's boxes, detached;
    - "logit" (SAM-DETR, `SigmoidBoxCoder` only): the reference is carried as a running logit,
      `g_{l+1} = detach(g_l + delta_l)`, `r_l = sigmoid(g_l)`, without inverse_sigmoid's clamp in between
      (the forms differ only where a coordinate's logit exceeds ~11.5).

    Args:
        form: "inverse_sigmoid" or "logit".
        iterative: refine at all; False keeps the first reference, not detached, for every layer (Deformable
            DETR without box refinement).
        look_forward_twice: layer l + 1's head refines the not-detached r_{l+1} (itself refined from the
            detached r_l), so that its loss also trains layer l, and no layer before (DINO, MS-DETR++,
            Plain-DETR); layer l + 1 still attends with the detached one.
    """

    def __init__(self, form: str = "inverse_sigmoid", iterative: bool = True, look_forward_twice: bool = False):
        if form not in FORMS:
            raise ValueError(f"box refinement form must be one of {FORMS}, got {form!r}")
        if look_forward_twice and not iterative:
            raise ValueError("look_forward_twice needs iterative box refinement")
        self.form = form
        self.iterative = iterative
        self.look_forward_twice = look_forward_twice

    def start(self, reference: torch.Tensor, coder: BoxCoder) -> Reference:
        """The first layer's reference: (B, Q, 2|4) boxes, or (B, Q, 4) logits for the "logit" form (not
        detached: layer 0's losses train what produced it)."""
        if self.form == "logit":
            if reference.shape[-1] != 4:
                raise ValueError(f"the logit form refines (B, Q, 4) box logits, got {tuple(reference.shape)}")
            boxes = reference.sigmoid()
            return Reference(boxes, boxes, coder, reference)
        if reference.shape[-1] not in (2, 4):
            raise ValueError(f"references must end in 2 (points) or 4 (boxes), got {tuple(reference.shape)}")
        return Reference(reference, reference, coder)

    def step(
        self, reference: Reference, delta: torch.Tensor, next_delta: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Reference]:
        """Layer l's boxes (B, Q, 4) from its reference and its head's delta (B, Q, 4), and layer l + 1's
        reference, refined by `next_delta` when given (DINO refines with the head's delta of the un-normed
        output, predicts with that of the normed one), else by `delta`."""
        coder = reference.coder
        boxes = coder.decode(reference.head, delta)
        if not self.iterative:
            return boxes, reference
        logits = None
        if self.form == "logit":
            logits = (delta if next_delta is None else next_delta) + reference.logits
            boxes_next = logits.sigmoid()
            logits = logits.detach()
        elif self.look_forward_twice:
            # from the detached reference, as the official code: layer l + 1's loss reaches layer l's head
            # only, not the layers before it
            boxes_next = coder.decode(reference.boxes, delta if next_delta is None else next_delta)
        elif next_delta is not None:
            boxes_next = coder.decode(reference.head, next_delta)
        else:
            boxes_next = boxes
        detached = boxes_next.detach()
        return boxes, Reference(detached, boxes_next if self.look_forward_twice else detached, coder, logits)

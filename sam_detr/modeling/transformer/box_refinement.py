"""Iterative box refinement between decoder layers, the one routine of every method here.

Batch-first: references and deltas are (B, Q, 2) points (x, y) or (B, Q, 4) boxes (cx, cy, w, h),
normalised to [0, 1] over the unpadded image.
"""
from typing import Callable, NamedTuple, Optional, Tuple

import torch

from ...layers import inverse_sigmoid

__all__ = ["BoxRefinement", "Reference"]

FORMS = ("inverse_sigmoid", "logit")


class Reference(NamedTuple):
    """The reference of one decoder layer (see `BoxRefinement`)."""

    boxes: torch.Tensor  # (B, Q, 2|4) what the layer attends with
    head: torch.Tensor  # (B, Q, 2|4) what the layer's box head refines: `boxes`, or not detached
    logits: Optional[torch.Tensor] = None  # (B, Q, 4) the running logits of the "logit" form


class BoxRefinement:
    """Layer l's box head predicts a delta from its output h_l; this turns it into layer l's boxes and
    layer l + 1's reference. Both forms predict `sigmoid(inverse_sigmoid(r_l) + delta_l)` (a 2-d reference
    moves the centre only: the delta's (w, h) are absolute logits, and the next reference is a box):

    - "inverse_sigmoid" (Deformable DETR, MS-DETR, Plain-DETR): r_{l+1} is that prediction, detached;
    - "logit" (SAM-DETR): the reference is carried as a running logit, `g_{l+1} = detach(g_l + delta_l)`,
      `r_l = sigmoid(g_l)`, without inverse_sigmoid's clamp at 1e-5 in between (the forms differ only
      where a coordinate's logit exceeds ~11.5).

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

    def start(self, reference: torch.Tensor) -> Reference:
        """The first layer's reference: (B, Q, 2|4) in [0, 1], or (B, Q, 4) logits for the "logit" form
        (not detached: layer 0's losses train what produced it)."""
        if self.form == "logit":
            if reference.shape[-1] != 4:
                raise ValueError(f"the logit form refines (B, Q, 4) box logits, got {tuple(reference.shape)}")
            boxes = reference.sigmoid()
            return Reference(boxes, boxes, reference)
        if reference.shape[-1] not in (2, 4):
            raise ValueError(f"references must end in 2 (points) or 4 (boxes), got {tuple(reference.shape)}")
        return Reference(reference, reference)

    @staticmethod
    def predict(head_reference: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """(B, Q, 2|4) reference in [0, 1], (B, Q, 4) delta -> (B, Q, 4) boxes in [0, 1]."""
        base = inverse_sigmoid(head_reference)
        if base.shape[-1] == 2:
            return torch.cat([delta[..., :2] + base, delta[..., 2:]], -1).sigmoid()
        return (delta + base).sigmoid()

    def step(
        self, reference: Reference, delta: torch.Tensor, decode: Optional[Callable] = None
    ) -> Tuple[torch.Tensor, Reference]:
        """Layer l's boxes (B, Q, 4) from its reference and its head's delta (B, Q, 4), and layer l + 1's
        reference. `decode(reference, delta)` replaces `predict` (Plain-DETR's reparameterised boxes, in
        pixels; "inverse_sigmoid" form only)."""
        if decode is not None and self.form != "inverse_sigmoid":
            raise ValueError("a custom decode needs the 'inverse_sigmoid' form")
        decode = self.predict if decode is None else decode
        boxes = decode(reference.head, delta)
        if not self.iterative:
            return boxes, reference
        logits = None
        if self.form == "logit":
            logits = delta + reference.logits
            boxes_next = logits.sigmoid()
            logits = logits.detach()
        elif self.look_forward_twice:
            # from the detached reference, as the official code: layer l + 1's loss reaches layer l's head
            # only, not the layers before it
            boxes_next = decode(reference.boxes, delta)
        else:
            boxes_next = boxes
        detached = boxes_next.detach()
        return boxes, Reference(detached, boxes_next if self.look_forward_twice else detached, logits)

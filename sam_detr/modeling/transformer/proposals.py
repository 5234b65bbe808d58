"""Two-stage query selection: every encoder token proposes a box, the best ones become the decoder's queries.

Written once for two-stage Deformable DETR, MS-DETR and Plain-DETR (whose tokens come from its proposal maps,
sam_detr/modeling/transformer/plain_detr_proposals.py); the anchors and how a delta refines them are the box
coder's (`BoxCoder.anchors`, `BoxCoder.propose`). Batch-first: tokens (B, S, C) of the flattened
levels, S = sum_l H_l * W_l, finest level first; queries (B, Q, C).
"""
from typing import Dict, NamedTuple, Optional, Sequence

import torch
from torch import nn

from ...layers import boxes_sine_embed
from ..box_coder import BoxCoder
from .levels import FlattenedLevels

__all__ = ["TwoStageProposals", "Proposals", "select_top"]


def select_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, S) scores -> (B, k) int64: the indices of the k highest, best first, exactly equal scores in token
    order (the lower index first). That is the order ONNX TopK defines, which an exported graph follows;
    torch.topk leaves the order of ties open, and tied tokens can differ: Plain-DETR's tokens in the
    padding that its nearest-resized masks call valid share one memory but not one anchor, and the order
    decides which learned content query each gets."""
    if torch.compiler.is_exporting():
        return torch.topk(scores, k, dim=1)[1]  # ONNX TopK: ties by the lower index
    return torch.sort(scores, dim=1, descending=True, stable=True)[1][:, :k]


class Proposals(NamedTuple):
    """The encoder's proposals and the queries selected from them; boxes in the box coder's space."""

    logits: torch.Tensor  # (B, S, K) every token's class logits
    boxes: torch.Tensor  # (B, S, 4) every token's box (normalised: 1 at padding)
    anchors: torch.Tensor  # (B, S, 4) every token's fixed box (normalised: 1 at padding and outside the window)
    deltas: torch.Tensor  # (B, S, 4) every token's box-head output
    reference: torch.Tensor  # (B, Q, 4) the selected boxes, detached: the decoder's first reference
    query_pos: Optional[torch.Tensor]  # (B, Q, C) the position queries, from the selected boxes (None: none)
    tgt: torch.Tensor  # (B, Q, C) the content queries
    index: torch.Tensor  # (B, Q) the selected tokens, best first

    def selected(self) -> Dict[str, torch.Tensor]:
        """The selected tokens' "pred_logits" (B, Q, K) and "pred_boxes" (B, Q, 4), not detached (DINO's
        "interm_outputs")."""
        index = self.index[..., None]
        return {
            "pred_logits": torch.gather(self.logits, 1, index.expand(-1, -1, self.logits.shape[-1])),
            "pred_boxes": torch.gather(self.boxes, 1, index.expand(-1, -1, 4)),
        }

    def outputs(self, coder: BoxCoder) -> Dict[str, torch.Tensor]:
        """The proposals as the criterion's "enc_outputs" group reads them: "pred_logits", "pred_boxes",
        "anchors" (MS-DETR matches on them), and what the coder's L1 loss reads."""
        return {
            "pred_logits": self.logits, "pred_boxes": self.boxes, "anchors": self.anchors,
            **coder.regression_outputs(self.anchors, self.deltas),
        }


class TwoStageProposals(nn.Module):
    """Proposes a box per encoder token and turns the top-scoring ones into decoder queries.

    Each token's memory (zeroed at padding and outside the window) goes through `enc_output` + LayerNorm;
    the proposal heads (the model's extra class and box heads) score it and refine its anchor
    (`coder.propose(anchor, box_head(memory))`). The Q tokens of highest class-0 logit (`select_by`
    "objectness"; DINO: "best_class", their highest logit of any class) are selected, exactly tied ones in
    token order (`select_top`; padding included, as the official code, unless `batch_invariant`); their
    boxes, detached, are the decoder's first reference, and `LayerNorm(pos_trans(sine embedding of the
    box))` (2C channels) gives the position queries (first half) and the content queries (second half), or,
    with mixed selection (MS-DETR++, Plain-DETR), the position queries only, the content coming from a
    learned embedding. Without `position_queries` (DINO, whose decoder positions its queries from their
    boxes) there is no `pos_trans`.

    Official names: `enc_output`, `enc_output_norm`, `pos_trans`, `pos_trans_norm` (under `transformer.`).

    Args:
        d_model: C.
        position_queries: give position (and content) queries from the selected boxes.
        select_by: "objectness" (logit 0) or "best_class".
    """

    def __init__(self, d_model: int = 256, position_queries: bool = True, select_by: str = "objectness"):
        super().__init__()
        if select_by not in ("objectness", "best_class"):
            raise ValueError(f"select_by must be 'objectness' or 'best_class', got {select_by!r}")
        self.d_model = d_model
        self.select_by = select_by
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.pos_trans = self.pos_trans_norm = None
        if position_queries:
            self.pos_trans = nn.Linear(d_model * 2, d_model * 2)
            self.pos_trans_norm = nn.LayerNorm(d_model * 2)

    def forward(
        self,
        memory: FlattenedLevels,
        class_head: nn.Module,
        box_head: nn.Module,
        num_queries: int,
        coder: BoxCoder,
        content: Optional[torch.Tensor] = None,
        batch_invariant: bool = False,
        strides: Optional[Sequence[int]] = None,
    ) -> Proposals:
        """
        Args:
            memory: the encoded tokens (`src` (B, S, C), `mask`, `spatial_shapes`).
            class_head: C -> K; box_head: C -> 4, the proposal heads.
            num_queries: Q, the tokens selected.
            coder: the box coding (its anchors, and how a delta refines them).
            content: (Q, C) learned content queries (mixed selection), or None.
            batch_invariant: never select a padded token (batch-size-independent inference).
            strides: of the token levels, in input pixels (for anchors in pixels).
        """
        src = memory.src
        if num_queries > src.shape[1]:
            raise ValueError(f"cannot select {num_queries} queries from {src.shape[1]} encoder tokens")
        anchors, keep = coder.anchors(memory.mask, memory.spatial_shapes, strides)
        out = self.enc_output_norm(self.enc_output(src.masked_fill(~keep, 0.0)))
        logits = class_head(out)
        deltas = box_head(out)
        boxes = coder.propose(anchors, deltas)
        scores = logits[..., 0] if self.select_by == "objectness" else logits.max(-1).values
        if batch_invariant:
            scores = scores.masked_fill(memory.mask, float("-inf"))
        index = select_top(scores, num_queries)
        reference = coder.activate(torch.gather(boxes, 1, index[..., None].expand(-1, -1, 4)).detach())
        query_pos = tgt = None
        if self.pos_trans is not None:
            pos = self.pos_trans_norm(self.pos_trans(boxes_sine_embed(reference, self.d_model // 2)))
            query_pos, tgt = pos.split(self.d_model, -1)
        if content is not None:
            if content.shape != (num_queries, self.d_model):
                raise ValueError(f"content queries must be ({num_queries}, {self.d_model}), got {tuple(content.shape)}")
            tgt = content[None].expand(src.shape[0], -1, -1)
        elif tgt is None:
            raise ValueError("without position queries the proposals give no content queries: give `content`")
        return Proposals(
            logits, coder.activate(boxes), coder.activate(anchors), deltas, reference, query_pos, tgt, index
        )

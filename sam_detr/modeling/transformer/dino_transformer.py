"""DINO's encoder-decoder (IDEA-Research/DINO `DeformableTransformer`, two_stage_type "standard"): the deformable
encoder, mixed query selection from the encoder's proposals, and DINO's decoder.

Batch-first: levels (B, C, H_l, W_l) in, flattened to (B, S, C) tokens; queries (B, Q, C).
"""
from typing import NamedTuple

import torch
from torch import nn

from ..box_coder import BoxCoder
from .deformable_encoder import DeformableTransformerEncoder
from .deformable_transformer import DeformableTransformer
from .dino_decoder import DINODecoder
from .levels import FlattenedLevels

__all__ = ["DINOTransformer", "DINOProposals", "SelectedProposals"]


class SelectedProposals(NamedTuple):
    """The Q proposals selected as the decoder's anchors, with their predictions (DINO's "interm" outputs)."""

    logits: torch.Tensor  # (B, Q, K) their class logits
    boxes: torch.Tensor  # (B, Q, 4) their boxes (cx, cy, w, h), trained through
    reference: torch.Tensor  # (B, Q, 4) the same boxes, detached: the decoder's first anchors


class DINOProposals(nn.Module):
    """Each encoder token proposes a box; the Q best, by their best class logit, become the anchors.

    A token's memory (zeroed at padding and outside the window) goes through `enc_output` + LayerNorm; the
    proposal heads score it and refine its anchor (`coder.propose`). Padding is selectable as in the official
    code unless `batch_invariant`.

    Official names: `enc_output`, `enc_output_norm` (under `transformer.`).
    """

    def __init__(self, d_model: int = 256):
        super().__init__()
        self.d_model = d_model
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)

    def forward(
        self,
        memory: FlattenedLevels,
        class_head: nn.Module,
        box_head: nn.Module,
        num_queries: int,
        coder: BoxCoder,
        batch_invariant: bool = False,
    ) -> SelectedProposals:
        src = memory.src
        if num_queries > src.shape[1]:
            raise ValueError(f"cannot select {num_queries} queries from {src.shape[1]} encoder tokens")
        anchors, keep = coder.anchors(memory.mask, memory.spatial_shapes)
        out = self.enc_output_norm(self.enc_output(src.masked_fill(~keep, 0.0)))
        logits = class_head(out)
        boxes = coder.propose(anchors, box_head(out))
        scores = logits.max(-1).values
        if batch_invariant:
            # and exact ties (tokens of equal memory: outside the window) in token order, which the padding
            # of a batch does not change; top-k orders them as it finds them
            scores = scores.masked_fill(memory.mask, float("-inf"))
            index = torch.sort(scores, dim=1, descending=True, stable=True)[1][:, :num_queries, None]
        else:
            index = torch.topk(scores, num_queries, dim=1)[1][..., None]
        selected = torch.gather(boxes, 1, index.expand(-1, -1, 4))
        return SelectedProposals(
            torch.gather(logits, 1, index.expand(-1, -1, logits.shape[-1])),
            coder.activate(selected),
            coder.activate(selected.detach()),
        )


class DINOTransformer(DeformableTransformer):
    """The deformable encoder over all levels (`encode`: each level's position offset by a learned
    `level_embed`), the selection of `num_queries` anchors from the encoder's proposals (`proposals`),
    learned content queries (`tgt_embed`, mixed query selection), and DINO's decoder (run by the model).

    Args:
        encoder, decoder: their layers fix the width and the number of levels, which must agree.
        proposals: the query selection.
        num_queries: Q, the matching queries (900 in DINO).
    """

    def __init__(
        self,
        encoder: DeformableTransformerEncoder,
        decoder: DINODecoder,
        proposals: DINOProposals,
        num_queries: int = 900,
    ):
        super().__init__(encoder, decoder, proposals)
        # the official tgt_embed is created before the transformer's xavier initialisation, which it gets
        self.tgt_embed = nn.Embedding(num_queries, self.d_model)
        nn.init.xavier_uniform_(self.tgt_embed.weight)

    @property
    def num_queries(self) -> int:
        return self.tgt_embed.num_embeddings

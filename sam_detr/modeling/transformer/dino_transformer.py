"""DINO's encoder-decoder (IDEA-Research/DINO `DeformableTransformer`, two_stage_type "standard"): the deformable
encoder, mixed query selection from the encoder's proposals, the denoising queries before the matching ones,
and DINO's decoder.

Batch-first: levels (B, C, H_l, W_l) in, flattened to (B, S, C) tokens; queries (B, Q, C).
"""
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ..denoising import DenoisingQueries
from ..query_groups import QueryGroups
from .deformable_encoder import DeformableTransformerEncoder
from .deformable_transformer import DeformableTransformer
from .dino_decoder import DINODecoder, DINODecoderOutput
from .levels import FlattenedLevels, flatten_levels
from .proposals import encoder_anchors

__all__ = ["DINOTransformer", "DINOProposals", "SelectedProposals"]


class SelectedProposals(NamedTuple):
    """The Q proposals selected as the decoder's anchors, with their predictions (DINO's "interm" outputs)."""

    logits: torch.Tensor  # (B, Q, K) their class logits
    boxes: torch.Tensor  # (B, Q, 4) their boxes (cx, cy, w, h) in [0, 1], trained through
    anchors: torch.Tensor  # (B, Q, 4) the same boxes as logits, detached: the decoder's first anchors


class DINOProposals(nn.Module):
    """Each encoder token proposes a box; the Q best, by their best class logit, become the anchors.

    A token's memory (zeroed at padding and outside the window, `encoder_anchors`) goes through
    `enc_output` + LayerNorm; the proposal heads score it and refine its anchor (`box_head(memory) + anchor
    logits`). Padding is selectable as in the official code unless `exclude_padding`.

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
        exclude_padding: bool = False,
    ) -> SelectedProposals:
        src = memory.src
        if num_queries > src.shape[1]:
            raise ValueError(f"cannot select {num_queries} queries from {src.shape[1]} encoder tokens")
        anchors, keep = encoder_anchors(memory.mask, memory.spatial_shapes)
        out = self.enc_output_norm(self.enc_output(src.masked_fill(~keep, 0.0)))
        logits = class_head(out)
        boxes = box_head(out) + anchors
        scores = logits.max(-1).values
        if exclude_padding:
            # and exact ties (tokens of equal memory: outside the window) in token order, which the padding
            # of a batch does not change; top-k orders them as it finds them
            scores = scores.masked_fill(memory.mask, float("-inf"))
            index = torch.sort(scores, dim=1, descending=True, stable=True)[1][:, :num_queries, None]
        else:
            index = torch.topk(scores, num_queries, dim=1)[1][..., None]
        selected = torch.gather(boxes, 1, index.expand(-1, -1, 4))
        return SelectedProposals(
            torch.gather(logits, 1, index.expand(-1, -1, logits.shape[-1])), selected.sigmoid(), selected.detach()
        )


class DINOTransformer(DeformableTransformer):
    """The deformable encoder over all levels (each level's position offset by a learned `level_embed`), the
    selection of `num_queries` anchors from the encoder's proposals, learned content queries (`tgt_embed`,
    mixed query selection), and DINO's decoder; denoising queries, when given, go first (see
    `DenoisingQueries.query_groups`).

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

    def forward(
        self,
        srcs: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor],
        pos: Sequence[torch.Tensor],
        class_embed: Sequence[nn.Module],
        bbox_embed: Sequence[nn.Module],
        denoising: Optional[DenoisingQueries] = None,
        exclude_padding: bool = False,
    ) -> Tuple[DINODecoderOutput, SelectedProposals, QueryGroups]:
        """
        Args:
            srcs, pos: per level, (B, C, H_l, W_l) projected features and sine position embeddings;
                masks: per level, (B, H_l, W_l) bool, True on padding.
            class_embed, bbox_embed: per decoder layer, the heads, then the proposal heads.
            denoising: the denoising queries of a training batch, or None.
            exclude_padding: never select a padded token; position the queries as in the image alone.
        Returns:
            the decoder's output over all queries, the selected proposals, and the query groups (the
            denoising queries, if any, then the matching ones).
        """
        if len(srcs) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(srcs)}")
        levels = flatten_levels(srcs, masks, pos, self.level_embed)
        memory = levels._replace(src=self.encoder(levels))
        L, Q = len(self.decoder.layers), self.num_queries
        selected = self.proposals(memory, class_embed[L], bbox_embed[L], Q, exclude_padding=exclude_padding)
        tgt = self.tgt_embed.weight[None].expand(memory.src.shape[0], -1, -1)
        anchors = selected.anchors
        groups = QueryGroups.single(Q)
        if denoising is not None and denoising.num_queries:
            tgt = torch.cat([denoising.content, tgt], 1)
            anchors = torch.cat([denoising.boxes, anchors], 1)
            groups = denoising.query_groups(Q)
        mask = groups.attention_mask(tgt.device)
        out = self.decoder(tgt, anchors.sigmoid(), memory, bbox_embed[:L], mask, exclude_padding=exclude_padding)
        return out, selected, groups

"""Plain-DETR (Lin et al., ICCV 2023, "DETR Doesn't Need Multi-Scale or Locality Design"), as impiga/Plain-DETR."""
import copy
import math
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...layers import MLP, InputProjection, PositionEmbeddingSine
from ..backbone.upsample import LayerNorm2d
from ..criterion import LossGroup
from ..transformer import BoxRefinement, TwoStageProposals, reset_deformable_parameters, valid_ratios
from ..transformer.plain_detr_decoder import GlobalDecoder
from .detr_base import DETRBase

__all__ = ["PlainDETR", "proposal_projections", "one_to_many_groups", "group_attention_mask"]


def proposal_projections(d_model: int, in_stride: int, strides: Sequence[int]) -> nn.ModuleList:
    """Per target stride, the map that brings the stride-`in_stride` memory there (official
    `enc_output_proj`): 2x ConvTranspose2d steps to a finer stride, 2x Conv2d(2, stride 2) steps (no padding:
    sizes are floored) to a coarser one, LayerNorm2d + GELU between two steps, Identity at `in_stride`."""
    projections = nn.ModuleList()
    for stride in strides:
        steps = int(round(math.log2(max(stride, in_stride) / min(stride, in_stride))))
        conv = nn.Conv2d if stride > in_stride else nn.ConvTranspose2d
        layers = []
        for i in range(steps):
            layers += ([LayerNorm2d(d_model), nn.GELU()] if i else []) + [conv(d_model, d_model, 2, stride=2)]
        projections.append(nn.Sequential(*layers) if layers else nn.Identity())
    return projections


def group_attention_mask(num_one2one: int, num_total: int, device=None) -> torch.Tensor:
    """(Q, Q) bool, True where query i may not attend to query j: the one-to-one queries [0, num_one2one)
    and the one-to-many ones [num_one2one, Q) do not see each other (H-DETR's hybrid matching)."""
    group = torch.arange(num_total, device=device) >= num_one2one
    return group[:, None] != group[None, :]


def one_to_many_groups(k_one2many: int = 6) -> List[LossGroup]:
    """The criterion's groups: the one-to-one queries, the proposals, and the one-to-many queries matched
    against every image's targets repeated `k_one2many` times (`<loss>_one2many`)."""
    return [
        LossGroup(),
        LossGroup(key="enc_outputs", suffix="_enc", class_agnostic=True),
        LossGroup(key="one2many_outputs", suffix="_one2many", target_repeats=k_one2many),
    ]


@META_ARCH_REGISTRY.register()
class PlainDETR(DETRBase):
    """No encoder: the backbone's one stride-16 map, projected, is the memory of a pre-norm global decoder
    (`GlobalDecoder`, with BoxRPB or the APE baseline). Two-stage queries as Deformable DETR
    (`TwoStageProposals`) over proposal maps at strides 8/16/32/64 made from the memory
    (`proposal_projections`), with mixed selection (learned content queries); iterative refinement with
    look-forward-twice; per-layer focal class and box heads (zero-initialised box bias), plus the proposal
    heads. Hybrid matching: in training `num_queries_one2many` more queries are selected and decoded with
    the one-to-one ones, the two groups masked from each other in self-attention; their predictions are
    the "one2many_outputs" group. Inference decodes the `num_queries` one-to-one queries only.

    Args:
        decoder: the global decoder; its width and feature stride fix the model's.
        proposal_strides: the strides of the proposal maps, finest first.
        num_queries: Q, the one-to-one queries.
        num_queries_one2many: the extra one-to-many queries of training (0: none).
        look_forward_twice: see `BoxRefinement`.
        (the other arguments: see `DETRBase`; `criterion` must use the focal class loss and, with
        one-to-many queries, have a "one2many_outputs" group.)
    """

    @configurable
    def __init__(
        self,
        *,
        decoder: GlobalDecoder,
        proposal_strides: Sequence[int] = (8, 16, 32, 64),
        num_queries: int = 300,
        num_queries_one2many: int = 1500,
        look_forward_twice: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.criterion.class_loss_type != "focal":
            raise ValueError("Plain-DETR has no 'no object' class: its criterion needs class_loss_type='focal'")
        if len(self.in_features) != 1:
            raise ValueError(f"Plain-DETR reads one backbone level, got in_features {self.in_features}")
        if num_queries_one2many and "one2many_outputs" not in {g.key for g in self.criterion.groups}:
            raise ValueError("num_queries_one2many > 0 needs a criterion group with key 'one2many_outputs'")
        hidden = decoder.d_model
        self.stride = decoder.layers[0].cross_attn.feature_stride
        self.num_queries = num_queries
        self.num_queries_one2many = num_queries_one2many
        self.position_embedding = PositionEmbeddingSine(hidden // 2, normalize=True, offset=-0.5)
        self.input_proj = InputProjection(self.in_channels, hidden, 0, norm=True, xavier_init=True)
        self.level_embed = nn.Parameter(torch.empty(1, hidden))
        self.proposal_proj = proposal_projections(hidden, self.stride, proposal_strides)
        self.proposals = TwoStageProposals(hidden)
        self.decoder = decoder
        # the official transformer-wide xavier, then the decoder's own re-initialisation
        for part in (self.proposal_proj, self.proposals, self.decoder):
            reset_deformable_parameters(part)
        self.decoder.reset_parameters()
        nn.init.normal_(self.level_embed)
        self.query_embed = nn.Embedding(num_queries + num_queries_one2many, hidden)
        self.refinement = BoxRefinement(look_forward_twice=look_forward_twice)
        class_embed = nn.Linear(hidden, self.num_classes)
        nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01
        bbox_embed = MLP(hidden, hidden, 4, 3)
        nn.init.zeros_(bbox_embed.layers[-1].weight)
        nn.init.zeros_(bbox_embed.layers[-1].bias)
        num_heads = len(decoder.layers) + 1  # the last pair scores and refines the proposals
        self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(num_heads))
        self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(num_heads))

    @classmethod
    def from_config(cls, cfg) -> Dict:
        raise NotImplementedError("PlainDETR is built from LazyConfig files (configs/plain_detr_*.py)")

    def proposal_levels(self, memory: torch.Tensor, mask: torch.Tensor):
        """(B, C, H, W) memory and its mask -> per stride, the proposal map (B, C, H_l, W_l) and its mask.
        Batch-invariant models compute every image's maps at its own size (the strided convolutions would
        otherwise mix padding into the last valid row or column)."""
        if not self.batch_invariant:
            maps = [proj(memory) for proj in self.proposal_proj]
            return maps, [self.resize_mask(mask, m.shape[-2:]) for m in maps]
        sizes = (~mask[:, 0, :]).sum(1).tolist(), (~mask[:, :, 0]).sum(1).tolist()
        per_image = [[proj(memory[i : i + 1, :, :h, :w]) for proj in self.proposal_proj]
                     for i, (w, h) in enumerate(zip(*sizes))]
        return self.pad_levels(per_image)

    def forward_head(self, features: List[torch.Tensor], masks: List[torch.Tensor]) -> Dict:
        src, mask = features[0], masks[0]
        B, C, H, W = src.shape
        pos = self.position_embedding(mask).to(src.dtype).flatten(2).transpose(1, 2) + self.level_embed
        memory = src.flatten(2).transpose(1, 2)  # (B, S, C)
        maps, map_masks = self.proposal_levels(src, mask)
        shapes = torch.as_tensor([m.shape[-2:] for m in maps], dtype=torch.long, device=src.device)
        num_o2m = self.num_queries_one2many if self.training else 0
        num_total = self.num_queries + num_o2m
        num_layers = len(self.decoder.layers)
        proposals = self.proposals(
            torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1),
            torch.cat([m.flatten(1) for m in map_masks], 1),
            shapes, self.class_embed[num_layers], self.bbox_embed[num_layers], num_total,
            content=self.query_embed.weight[:num_total], exclude_padding=self.batch_invariant,
        )
        attn_mask = group_attention_mask(self.num_queries, num_total, src.device) if num_o2m else None
        out = self.decoder(
            proposals.tgt, proposals.query_pos, proposals.reference, memory, pos, (H, W), mask.flatten(1),
            valid_ratios(mask), self.bbox_embed[:num_layers], self.refinement, attn_mask,
            exact_padding=self.batch_invariant,
        )
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, out.hs)])
        Q = self.num_queries
        outputs = self.layer_outputs(logits[:, :, :Q], out.boxes[:, :, :Q])
        if num_o2m:
            outputs["one2many_outputs"] = self.layer_outputs(logits[:, :, Q:], out.boxes[:, :, Q:])
        outputs["enc_outputs"] = {"pred_logits": proposals.logits, "pred_boxes": proposals.boxes}
        return outputs

"""Plain-DETR (Lin et al., ICCV 2023, "DETR Doesn't Need Multi-Scale or Locality Design"), as impiga/Plain-DETR."""
import copy
import math
from functools import partial
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...layers import MLP, InputProjection, PositionEmbeddingSine
from ...layers.box_ops import box_xyxy_to_cxcywh, delta_to_box, pixel_boxes_normalised
from ...layers.level_shapes import shapes_tensor
from ..transformer import BoxRefinement, TwoStageProposals, reset_deformable_parameters, valid_ratios
from ..transformer.plain_detr_decoder import GlobalDecoder, group_attention_mask
from ..transformer.proposals import pixel_anchors, proposal_maps, proposal_projections
from .detr_base import DETRBase

__all__ = ["PlainDETR"]


@META_ARCH_REGISTRY.register()
class PlainDETR(DETRBase):
    """No encoder: the backbone's one stride-16 map, projected, is the memory of a pre-norm global decoder
    (`GlobalDecoder`, with BoxRPB or the APE baseline). Two-stage queries (`TwoStageProposals`) from
    proposal maps at strides 8/16/32/64 made from that map (`proposal_projections`), with mixed selection;
    refinement with look-forward-twice; focal class heads. Hybrid matching: in training
    `num_queries_one2many` more queries are decoded with the one-to-one ones, the groups masked from each
    other in self-attention ("one2many_outputs"); inference decodes the `num_queries` one-to-one queries.
    Box reparameterisation (`reparam`): boxes and targets in input pixels, proposals from `pixel_anchors`,
    boxes `delta_to_box(reference, delta)`, every layer's "pred_deltas" and references "pred_boxes_old"
    in the outputs for the criterion's L1 on deltas.

    Args:
        decoder: the global decoder; its width and feature stride fix the model's.
        proposal_strides: of the proposal maps, finest first.
        num_queries, num_queries_one2many: the one-to-one queries, the extra ones of training (0: none).
        look_forward_twice: see `BoxRefinement`. reparam: the box reparameterisation.
        position_embedding: of the memory (default: normalised sine with offset -0.5).
        (the others: see `DETRBase`; the criterion uses the focal loss and has a "one2many_outputs" group.)
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
        reparam: bool = False,
        position_embedding: Optional[nn.Module] = None,
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
        self.proposal_strides = tuple(proposal_strides)
        self.num_queries, self.num_queries_one2many, self.reparam = num_queries, num_queries_one2many, reparam
        self.position_embedding = position_embedding or PositionEmbeddingSine(hidden // 2, normalize=True, offset=-0.5)
        self.input_proj = InputProjection(self.in_channels, hidden, 0, norm=True, xavier_init=True)
        self.level_embed = nn.Parameter(torch.empty(1, hidden))
        stride = decoder.layers[0].cross_attn.feature_stride
        self.proposal_proj = proposal_projections(hidden, stride, proposal_strides)
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


    def forward_head(self, features: List[torch.Tensor], masks: List[torch.Tensor]) -> Dict:
        src, mask = features[0], masks[0]
        pos = self.position_embedding(mask).to(src.dtype).flatten(2).transpose(1, 2) + self.level_embed
        maps, map_masks = proposal_maps(self.proposal_proj, src, mask, per_image=self.batch_invariant)
        shapes = shapes_tensor(maps)
        map_mask = torch.cat([m.flatten(1) for m in map_masks], 1)
        anchors, decode, max_size = None, None, None
        if self.reparam:
            *anchors, max_size = pixel_anchors(map_mask, shapes, self.proposal_strides)
            decode = partial(delta_to_box, max_size=max_size)
        Q, L = self.num_queries, len(self.decoder.layers)
        num_total = Q + (self.num_queries_one2many if self.training else 0)
        proposals = self.proposals(
            torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1), map_mask, shapes, self.class_embed[L],
            self.bbox_embed[L], num_total, content=self.query_embed.weight[:num_total],
            exclude_padding=self.batch_invariant, anchors=anchors, decode=decode,
        )
        attn_mask = group_attention_mask(Q, num_total, src.device) if num_total > Q else None
        out = self.decoder(
            proposals.tgt, proposals.query_pos, proposals.reference, src.flatten(2).transpose(1, 2), pos,
            tuple(src.shape[-2:]), mask.flatten(1), valid_ratios(mask), self.bbox_embed[:L], self.refinement,
            attn_mask, exact_padding=self.batch_invariant, max_size=max_size,
        )
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, out.hs)])
        extra = {"pred_deltas": out.deltas, "pred_boxes_old": out.references} if self.reparam else {}

        def group(queries: slice) -> Dict:  # every layer's predictions of these queries
            per_layer = {k: v[:, :, queries] for k, v in extra.items()}
            return self.layer_outputs(logits[:, :, queries], out.boxes[:, :, queries], **per_layer)

        outputs = group(slice(0, Q))
        if num_total > Q:
            outputs["one2many_outputs"] = group(slice(Q, None))
        outputs["enc_outputs"] = {"pred_logits": proposals.logits, "pred_boxes": proposals.boxes}
        if self.reparam:
            outputs["enc_outputs"].update(pred_deltas=proposals.deltas, pred_boxes_old=proposals.anchors)
        return outputs

    def prepare_targets(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """Reparameterised: target boxes (cx, cy, w, h) in input pixels."""
        targets = super().prepare_targets(batched_inputs)
        if self.reparam:
            for t, x in zip(targets, batched_inputs):
                t["boxes"] = box_xyxy_to_cxcywh(x["instances"].gt_boxes.tensor.to(self.device))
        return targets

    def inference(self, outputs: Dict, image_sizes) -> List:
        """Reparameterised: the boxes clipped to their image and normalised by its size first."""
        if self.reparam:
            outputs = {**outputs, "pred_boxes": pixel_boxes_normalised(outputs["pred_boxes"], image_sizes)}
        return super().inference(outputs, image_sizes)

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
from ...layers.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, delta_to_box
from ..backbone.upsample import LayerNorm2d
from ..criterion import LossGroup
from ..transformer import BoxRefinement, TwoStageProposals, reset_deformable_parameters, valid_ratios
from ..transformer.plain_detr_decoder import GlobalDecoder, GlobalDecoderLayer, GlobalDecoderOutput
from .detr_base import DETRBase

__all__ = ["PlainDETR", "proposal_projections", "pixel_anchors", "one_to_many_groups", "group_attention_mask"]

# the reparameterised proposals' side at the finest level, in pixels
PIXEL_ANCHOR_SIZE = 50.0


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


def pixel_anchors(mask: torch.Tensor, spatial_shapes: torch.Tensor, strides: Sequence[int]):
    """The reparameterised proposals' anchors (official `TransformerReParam`): per token, its centre
    `(j + 0.5) * stride_l` and a side of 50 * 2^l, in input pixels.

    Args:
        mask: (B, S) bool, True on padding, over the flattened proposal maps (finest first).
        spatial_shapes: (L, 2) their (H_l, W_l); strides: theirs.
    Returns:
        (B, S, 4) anchors, set to `max(H_0, W_0) * stride_0` at padding and where a coordinate leaves
        (0.01, 0.99) x the unpadded image size (measured on the finest map); (B, S, 1) bool, True where
        kept; and (B, 1, 2) that size (W, H), to which boxes are clipped.
    """
    B = mask.shape[0]
    anchors = []
    for lvl, ((H, W), stride) in enumerate(zip(spatial_shapes.tolist(), strides)):
        grid_y, grid_x = torch.meshgrid(
            torch.linspace(0, H - 1, H, dtype=torch.float32, device=mask.device),
            torch.linspace(0, W - 1, W, dtype=torch.float32, device=mask.device),
            indexing="ij",
        )
        centres = (torch.stack([grid_x, grid_y], -1)[None].expand(B, -1, -1, -1) + 0.5) * stride
        sizes = torch.ones_like(centres) * PIXEL_ANCHOR_SIZE * (2.0**lvl)
        anchors.append(torch.cat((centres, sizes), -1).view(B, -1, 4))
    anchors = torch.cat(anchors, 1)
    H0, W0 = spatial_shapes[0].tolist()
    finest = mask[:, : H0 * W0].view(B, H0, W0)
    valid_h = torch.sum(~finest[:, :, 0], 1, keepdim=True) * strides[0]
    valid_w = torch.sum(~finest[:, 0, :], 1, keepdim=True) * strides[0]
    image = torch.cat([valid_w, valid_h, valid_w, valid_h], -1)[:, None]
    keep = ((anchors > 0.01 * image) & (anchors < 0.99 * image)).all(-1, keepdim=True)
    anchors = anchors.masked_fill(mask[..., None] | ~keep, max(H0, W0) * strides[0])
    return anchors, keep & ~mask[..., None], torch.cat([valid_w, valid_h], -1)[:, None].float()


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

    Box reparameterisation (`reparam`): boxes and targets are (cx, cy, w, h) in input pixels, proposals
    start from `pixel_anchors`, every box is `delta_to_box(reference, delta)` clipped to the image, and the
    outputs carry each layer's "pred_deltas" and their references "pred_boxes_old", on which the criterion
    computes the L1 loss and cost.

    Args:
        decoder: the global decoder; its width and feature stride fix the model's.
        proposal_strides: the strides of the proposal maps, finest first.
        num_queries: Q, the one-to-one queries.
        num_queries_one2many: the extra one-to-many queries of training (0: none).
        look_forward_twice: see `BoxRefinement`.
        reparam: the box reparameterisation.
        position_embedding: of the memory (default: normalised sine with offset -0.5).
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
        self.stride = decoder.layers[0].cross_attn.feature_stride
        self.proposal_strides = tuple(proposal_strides)
        self.num_queries = num_queries
        self.num_queries_one2many = num_queries_one2many
        self.reparam = reparam
        if position_embedding is None:
            position_embedding = PositionEmbeddingSine(hidden // 2, normalize=True, offset=-0.5)
        self.position_embedding = position_embedding
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
        """Reads cfg.MODEL.DETR and cfg.MODEL.PLAIN_DETR (see `sam_detr.config.add_plain_detr_config`)."""
        d, p = cfg.MODEL.DETR, cfg.MODEL.PLAIN_DETR
        layer = GlobalDecoderLayer(
            d.HIDDEN_DIM, d.DIM_FEEDFORWARD, d.DROPOUT, d.NHEADS, p.RPE_TYPE or None, p.RPE_HIDDEN_DIM, p.FEATURE_STRIDE
        )
        args = super().from_config(cfg)
        args["criterion"].groups = one_to_many_groups(p.K_ONE2MANY)
        position = PositionEmbeddingSine(
            d.HIDDEN_DIM // 2, normalize=not p.REPARAM, offset=-0.5, scale_unnormalized=p.REPARAM
        )
        return {
            **args,
            "decoder": GlobalDecoder(layer, d.DEC_LAYERS),
            "proposal_strides": p.PROPOSAL_STRIDES,
            "num_queries": d.NUM_QUERIES,
            "num_queries_one2many": p.NUM_QUERIES_ONE2MANY,
            "look_forward_twice": p.LOOK_FORWARD_TWICE,
            "reparam": p.REPARAM,
            "position_embedding": position,
        }

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
        map_mask = torch.cat([m.flatten(1) for m in map_masks], 1)
        anchors, decode, max_size = None, None, None
        if self.reparam:
            *anchors, max_size = pixel_anchors(map_mask, shapes, self.proposal_strides)
            decode = partial(delta_to_box, max_size=max_size)
        num_o2m = self.num_queries_one2many if self.training else 0
        num_total = self.num_queries + num_o2m
        num_layers = len(self.decoder.layers)
        proposals = self.proposals(
            torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1), map_mask, shapes,
            self.class_embed[num_layers], self.bbox_embed[num_layers], num_total,
            content=self.query_embed.weight[:num_total], exclude_padding=self.batch_invariant,
            anchors=anchors, decode=decode,
        )
        attn_mask = group_attention_mask(self.num_queries, num_total, src.device) if num_o2m else None
        out = self.decoder(
            proposals.tgt, proposals.query_pos, proposals.reference, memory, pos, (H, W), mask.flatten(1),
            valid_ratios(mask), self.bbox_embed[:num_layers], self.refinement, attn_mask,
            exact_padding=self.batch_invariant, max_size=max_size,
        )
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, out.hs)])
        Q = self.num_queries
        outputs = self.group_outputs(logits, out, slice(0, Q))
        if num_o2m:
            outputs["one2many_outputs"] = self.group_outputs(logits, out, slice(Q, None))
        outputs["enc_outputs"] = {"pred_logits": proposals.logits, "pred_boxes": proposals.boxes}
        if self.reparam:
            outputs["enc_outputs"].update(pred_deltas=proposals.deltas, pred_boxes_old=proposals.anchors)
        return outputs

    def group_outputs(self, logits: torch.Tensor, out: GlobalDecoderOutput, queries: slice) -> Dict:
        """`layer_outputs` of the queries `queries`, with every layer's deltas and references when reparameterised."""
        outputs = self.layer_outputs(logits[:, :, queries], out.boxes[:, :, queries])
        if self.reparam:
            for layer, deltas, old in zip(outputs["aux_outputs"] + [outputs], out.deltas, out.references):
                layer.update(pred_deltas=deltas[:, queries], pred_boxes_old=old[:, queries])
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
            boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"])
            size = boxes.new_tensor([[w, h, w, h] for h, w in image_sizes])[:, None]
            boxes = box_xyxy_to_cxcywh(torch.minimum(boxes.clamp(min=0), size) / size)
            outputs = {**outputs, "pred_boxes": boxes}
        return super().inference(outputs, image_sizes)

"""DINO (Zhang et al., ICLR 2023), as IDEA-Research/DINO: DETR with improved denoising anchor boxes."""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ...layers import InputProjection, PositionEmbeddingSine
from ..box_coder import SigmoidBoxCoder
from ..heads import prediction_heads
from ..query_groups import QueryGroups
from ..transformer import BoxRefinement
from ..transformer.dino_transformer import DINOTransformer
from .detr_base import DETRBase

__all__ = ["DINO"]


@META_ARCH_REGISTRY.register()
class DINO(DETRBase):
    """Contrastive denoising, mixed query selection and look-forward-twice on a deformable encoder-decoder.

    The encoder's best proposals (by their best class) give the decoder's anchor boxes, learned embeddings
    its content (`DINOTransformer`); every decoder layer positions its queries by their anchors and refines
    them (`DINODecoder`, look-forward-twice). One class head and one box head serve every decoder layer; the
    proposals have their own (copies of the same initialisation), the last index of `class_embed` /
    `bbox_embed`. In training, `denoising` adds noised copies of the ground truth as extra queries before the
    matching ones ("dn_outputs", supervised by construction: `DenoisingMatcher`); the selected proposals'
    predictions are "interm_outputs". The position embedding is DETR's sine rule at DINO's temperature 20;
    boxes are coded with DINO's inverse_sigmoid clamp (`box_coder=SigmoidBoxCoder(eps=1e-3)`).

    Args:
        transformer: the encoder-decoder; its levels are the `in_features` then extra ones, its `num_queries`
            the matching queries.
        (the other arguments: see `DETRBase`; `criterion` must use the focal class loss.)
    """

    @configurable
    def __init__(self, *, transformer: DINOTransformer, **kwargs):
        super().__init__(**kwargs)
        if self.criterion.class_loss_type != "focal":
            raise ValueError("DINO has no 'no object' class: its criterion needs class_loss_type='focal'")
        if not isinstance(self.box_coder, SigmoidBoxCoder):
            raise ValueError(f"DINO codes boxes with a SigmoidBoxCoder, got {self.box_coder!r}")
        extra_levels = transformer.num_feature_levels - len(self.in_features)
        if extra_levels < 0:
            raise ValueError(
                f"in_features {self.in_features} are more levels than the transformer's {transformer.num_feature_levels}"
            )
        hidden = transformer.d_model
        self.transformer = transformer
        self.position_embedding = PositionEmbeddingSine(hidden // 2, temperature=20, normalize=True)
        self.input_proj = InputProjection(self.in_channels, hidden, extra_levels, norm=True, xavier_init=True)
        self.refinement = BoxRefinement(look_forward_twice=True)
        # the decoder's heads: one module under every layer index; the proposals': a copy, last
        self.class_embed, self.bbox_embed = prediction_heads(
            hidden, self.num_classes, len(transformer.decoder.layers), shared=True, proposal_heads=True
        )

    @property
    def num_queries(self) -> int:
        return self.transformer.num_queries

    def forward_head(
        self, features: List[torch.Tensor], masks: List[torch.Tensor], targets: Optional[List[Dict]] = None
    ) -> Dict:
        pos = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)]
        memory = self.transformer.encode(features, masks, pos)
        L, Q = len(self.transformer.decoder.layers), self.num_queries
        tgt, _, reference, proposals = self.transformer.queries(
            memory, self.transformer.tgt_embed.weight, Q, (self.class_embed[L], self.bbox_embed[L]), self.box_coder,
            self.batch_invariant,
        )
        tgt, _, reference, groups = self.with_denoising(
            targets, tgt, None, reference, QueryGroups.single(Q), self.refinement
        )
        decoder = self.transformer.decoder
        decoder.batch_invariant = self.batch_invariant
        out = decoder(
            tgt, None, self.refinement.start(reference, self.box_coder), memory, self.bbox_embed[:L],
            self.refinement, groups.attention_mask(tgt.device),
        )
        outputs = groups.outputs(out.predictions(self.class_embed, self.box_coder))
        outputs["interm_outputs"] = proposals.selected()
        return outputs

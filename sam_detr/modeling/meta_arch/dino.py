"""DINO (Zhang et al., ICLR 2023), as IDEA-Research/DINO: DETR with improved denoising anchor boxes."""
import copy
import math
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...layers import MLP, InputProjection, PositionEmbeddingSine
from ..denoising import ContrastiveDenoising
from ..transformer.dino_transformer import DINOTransformer
from .detr_base import DETRBase

__all__ = ["DINO"]


@META_ARCH_REGISTRY.register()
class DINO(DETRBase):
    """Contrastive denoising, mixed query selection and look-forward-twice on a deformable encoder-decoder.

    The encoder's best proposals (by their best class) give the decoder's anchor boxes, learned embeddings
    its content (`DINOTransformer`); every decoder layer positions its queries by their anchors and refines
    them (`DINODecoder`). One class head and one box head serve every decoder layer; the proposals have
    their own (copies of the same initialisation), the last index of `class_embed` / `bbox_embed`. In
    training, `denoising` adds noised copies of the ground truth as extra queries before the matching ones
    ("dn_outputs", supervised by construction: `DenoisingMatcher`); the selected proposals' predictions are
    "interm_outputs". The position embedding is DETR's sine rule at DINO's temperature 20.

    Args:
        transformer: the encoder-decoder; its levels are the `in_features` then extra ones, its `num_queries`
            the matching queries.
        denoising: the contrastive denoising queries of training (None: none).
        (the other arguments: see `DETRBase`; `criterion` must use the focal class loss.)
    """

    @configurable
    def __init__(self, *, transformer: DINOTransformer, denoising: Optional[ContrastiveDenoising] = None, **kwargs):
        super().__init__(**kwargs)
        if self.criterion.class_loss_type != "focal":
            raise ValueError("DINO has no 'no object' class: its criterion needs class_loss_type='focal'")
        extra_levels = transformer.num_feature_levels - len(self.in_features)
        if extra_levels < 0:
            raise ValueError(
                f"in_features {self.in_features} are more levels than the transformer's {transformer.num_feature_levels}"
            )
        if denoising is not None and denoising.num_classes != self.num_classes:
            raise ValueError(f"denoising has {denoising.num_classes} classes, the criterion {self.num_classes}")
        hidden = transformer.d_model
        self.transformer = transformer
        self.denoising = denoising
        self.position_embedding = PositionEmbeddingSine(hidden // 2, temperature=20, normalize=True)
        self.input_proj = InputProjection(self.in_channels, hidden, extra_levels, norm=True, xavier_init=True)
        class_embed = nn.Linear(hidden, self.num_classes)
        nn.init.constant_(class_embed.bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01
        bbox_embed = MLP(hidden, hidden, 4, 3)
        nn.init.zeros_(bbox_embed.layers[-1].weight)
        nn.init.zeros_(bbox_embed.layers[-1].bias)
        num_layers = len(transformer.decoder.layers)
        # the decoder's heads: one module under every layer index; the proposals': a copy, last
        self.class_embed = nn.ModuleList([class_embed] * num_layers + [copy.deepcopy(class_embed)])
        self.bbox_embed = nn.ModuleList([bbox_embed] * num_layers + [copy.deepcopy(bbox_embed)])

    @property
    def num_queries(self) -> int:
        return self.transformer.num_queries

    def forward_head(
        self, features: List[torch.Tensor], masks: List[torch.Tensor], targets: Optional[List[Dict]] = None
    ) -> Dict:
        pos = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)]
        denoising = None
        if self.training and self.denoising is not None:
            denoising = self.denoising(targets)
        out, selected, groups = self.transformer(
            features, masks, pos, self.class_embed, self.bbox_embed, denoising, exclude_padding=self.batch_invariant
        )
        hs = out.hs if self.denoising is None or not self.training else self.denoising.keep_in_graph(out.hs)
        logits = torch.stack([head(h) for head, h in zip(self.class_embed, hs)])
        outputs = groups.outputs({"pred_logits": logits, "pred_boxes": out.boxes})
        outputs["interm_outputs"] = {"pred_logits": selected.logits, "pred_boxes": selected.boxes}
        return outputs

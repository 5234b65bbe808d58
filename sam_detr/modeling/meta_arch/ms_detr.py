"""MS-DETR (Zhao et al., CVPR 2024), as Atten4Vis/MS-DETR: mixed one-to-one and one-to-many supervision of
Deformable DETR's own decoder queries."""
from typing import Dict, Optional

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ..query_groups import QueryGroups
from ..transformer import MSDETRDecoder, MSDETRDecoderOutput, Proposals
from .deformable_detr import DeformableDETR

__all__ = ["MSDETR"]


@META_ARCH_REGISTRY.register()
class MSDETR(DeformableDETR):
    """Two-stage Deformable DETR with iterative box refinement whose decoder is an `MSDETRDecoder`: in training
    every layer's one-to-many features, through the same heads and from the same references as the one-to-one
    ones, give "o2m_outputs", which the criterion's "o2m_outputs" group supervises (`OneToManyMatcher`).
    Deformable DETR++ (the published "pp" rows): mixed selection and look-forward-twice.

    Args: see `DeformableDETR`; `transformer.decoder` must be an `MSDETRDecoder`.
    """

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(self.transformer.decoder, MSDETRDecoder):
            raise ValueError(f"MS-DETR needs an MSDETRDecoder, got {type(self.transformer.decoder).__name__}")
        if not self.transformer.two_stage:
            raise ValueError("MS-DETR is two-stage: give the transformer proposals, as the official models")

    def head_outputs(self, out: MSDETRDecoderOutput, groups: QueryGroups, proposals: Optional[Proposals]) -> Dict:
        outputs = super().head_outputs(out, groups, proposals)
        if out.hs_o2m is not None:  # training
            predictions = out.one_to_many_predictions(self.class_embed, self.bbox_embed, self.box_coder)
            outputs["o2m_outputs"] = groups.select(predictions)
        return outputs

"""Official SAM-DETR checkpoints (ZhangGongjie/SAM-DETR) -> `SAMDETR` weights.

The official names are kept except for the backbone (torchvision -> d2 ResNet names), the FFN of every
layer (one `ffn` submodule here) and the Semantics Aligner (a submodule here):

    backbone.0.body.<torchvision name>                     backbone.<d2 name>
    *.layers.i.{linear1,linear2}, encoder norm2, decoder norm3
                                                          *.layers.i.ffn.{linear1,linear2,norm}
    transformer.decoder.layers.i.{point1,point2,attn1,attn2}.*
                                                          transformer.decoder.layers.i.semantics_aligner.*
    transformer.decoder.bbox_embed.*                       dropped: the same tensors as bbox_embed.*
"""
from typing import Dict, Mapping, Optional, Sequence

import torch

from .strict import FFN_RULES, KeyRules, convert_strict

__all__ = ["convert_sam_detr", "sam_detr_key", "SAM_DETR_TIED"]

sam_detr_key = KeyRules(
    FFN_RULES + ((r"^(transformer\.decoder\.layers\.\d+\.)(point1|point2|attn1|attn2)\.", r"\1semantics_aligner.\2."),)
)
SAM_DETR_TIED = {"transformer.decoder.bbox_embed.": "bbox_embed."}


def convert_sam_detr(
    official: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    class_ids: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """`convert_strict` with SAM-DETR's key mapping (see the module docstring and `convert_strict`)."""
    return convert_strict(official, target, sam_detr_key, tied=SAM_DETR_TIED, class_ids=class_ids)

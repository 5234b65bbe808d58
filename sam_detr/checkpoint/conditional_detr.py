"""Official Conditional DETR (Atten4Vis/ConditionalDETR) and DETR (facebookresearch/detr) checkpoints ->
`ConditionalDETR` and `DETR` weights.

The official names are kept except for the backbone (torchvision -> d2 ResNet names), the FFN of every
layer (one `ffn` submodule here) and the input projection (one entry of an `InputProjection` here):

    backbone.0.body.<torchvision name>                     backbone.<d2 name>
    *.layers.i.{linear1,linear2}, encoder norm2, decoder norm3
                                                          *.layers.i.ffn.{linear1,linear2,norm}
    input_proj.{weight,bias}                               input_proj.0.0.{weight,bias}

Conditional DETR's `ca_qpos_proj` exists in decoder layer 0 only, in both models. DETR's class head has a
last "no object" row, which stays last when the class rows are picked.
"""
from typing import Dict, Mapping, Optional, Sequence

import torch

from .strict import FFN_RULES, KeyRules, convert_strict

__all__ = ["convert_conditional_detr", "convert_detr", "conditional_detr_key"]

conditional_detr_key = KeyRules(FFN_RULES + ((r"^input_proj\.(weight|bias)$", r"input_proj.0.0.\1"),))


def convert_conditional_detr(
    official: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    class_ids: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """`convert_strict` with Conditional DETR's key mapping (see the module docstring and `convert_strict`)."""
    return convert_strict(official, target, conditional_detr_key, class_ids=class_ids)


def convert_detr(
    official: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    class_ids: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """`convert_strict` with DETR's key mapping (Conditional DETR's); with `class_ids`, the class head keeps
    those rows and then its last, "no object", row."""
    rows = {}
    if class_ids is not None and "class_embed.weight" in official:
        rows = {"class_embed.": list(class_ids) + [official["class_embed.weight"].shape[0] - 1]}
    return convert_strict(official, target, conditional_detr_key, class_ids=class_ids, class_rows=rows)

"""Official Deformable DETR checkpoints (fundamentalvision/Deformable-DETR) -> `DeformableDETR` weights.

The official names are kept except for the backbone (torchvision -> d2 ResNet names), the FFN of every
layer (one `ffn` submodule here) and the two-stage query selection (a submodule here):

    backbone.0.body.<torchvision name>                     backbone.<d2 name>
    *.layers.i.{linear1,linear2}, encoder norm2, decoder norm3
                                                          *.layers.i.ffn.{linear1,linear2,norm}
    transformer.{enc_output,enc_output_norm,pos_trans,pos_trans_norm}.*
                                                          transformer.proposals.*
    transformer.decoder.{bbox_embed,class_embed}.*         dropped: the same tensors as {bbox,class}_embed.*

Without box refinement the official heads are one module listed under every layer index (`class_embed.0`
to `.5`, the same tensors); so are ours, and each index is filled from its own official key.
"""
import re
from typing import Dict, Mapping, Optional, Sequence

import torch

from .strict import FFN_RULES, KeyRules, convert_strict

__all__ = ["convert_deformable_detr", "deformable_detr_key", "DEFORMABLE_DETR_RULES", "DEFORMABLE_DETR_TIED"]

DEFORMABLE_DETR_RULES = FFN_RULES + (
    (r"^transformer\.(enc_output|enc_output_norm|pos_trans|pos_trans_norm)\.", r"transformer.proposals.\1."),
)
deformable_detr_key = KeyRules(DEFORMABLE_DETR_RULES)
DEFORMABLE_DETR_TIED = {
    "transformer.decoder.bbox_embed.": "bbox_embed.",
    "transformer.decoder.class_embed.": "class_embed.",
}


def proposal_head_rows(official: Mapping[str, torch.Tensor], class_ids: Sequence[int]) -> Dict[str, Sequence[int]]:
    """The rows of a two-stage model's proposal class head (the last `class_embed`): its logit 0 scores
    "object" (the selection reads it, the loss trains it against class-agnostic targets), so it stays
    first; the rest are negatives only, one per remaining class."""
    if "transformer.enc_output.weight" not in official:
        return {}
    last = max(int(m.group(1)) for k in official if (m := re.match(r"^class_embed\.(\d+)\.weight$", k)))
    return {f"class_embed.{last}.": [0] + list(class_ids[1:])}


def convert_deformable_detr(
    official: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    class_ids: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """`convert_strict` with Deformable DETR's key mapping (see the module docstring and `convert_strict`)."""
    rows = {} if class_ids is None else proposal_head_rows(official, class_ids)
    return convert_strict(
        official, target, deformable_detr_key, tied=DEFORMABLE_DETR_TIED, class_ids=class_ids, class_rows=rows
    )

"""Official MS-DETR checkpoints (Atten4Vis/MS-DETR) -> `DeformableDETR` weights with `MSDETRDecoderLayer`s.

The names are those of Deformable DETR (see `sam_detr.checkpoint.deformable_detr`), plus each decoder layer's
auxiliary FFN, one `aux_ffn` submodule here:

    transformer.decoder.layers.i.{linear3,linear4,norm4}   transformer.decoder.layers.i.aux_ffn.{linear1,linear2,norm}

MS-DETR++'s learned content queries (mixed selection) keep the name `query_embed.weight`.
"""
from typing import Dict, Mapping, Optional, Sequence

import torch

from .deformable_detr import DEFORMABLE_DETR_RULES, DEFORMABLE_DETR_TIED, proposal_head_rows
from .strict import KeyRules, convert_strict

__all__ = ["convert_ms_detr", "ms_detr_key", "MS_DETR_RULES"]

MS_DETR_RULES = DEFORMABLE_DETR_RULES + (
    (r"^(.*decoder\.layers\.\d+\.)linear3\.", r"\1aux_ffn.linear1."),
    (r"^(.*decoder\.layers\.\d+\.)linear4\.", r"\1aux_ffn.linear2."),
    (r"^(.*decoder\.layers\.\d+\.)norm4\.", r"\1aux_ffn.norm."),
)
ms_detr_key = KeyRules(MS_DETR_RULES)


def convert_ms_detr(
    official: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    class_ids: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """`convert_strict` with MS-DETR's key mapping (see the module docstring and `convert_strict`); the
    proposal head keeps its objectness row first, as two-stage Deformable DETR's."""
    rows = {} if class_ids is None else proposal_head_rows(official, class_ids)
    return convert_strict(
        official, target, ms_detr_key, tied=DEFORMABLE_DETR_TIED, class_ids=class_ids, class_rows=rows
    )

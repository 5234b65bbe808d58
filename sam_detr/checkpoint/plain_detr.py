"""Official Plain-DETR checkpoints (impiga/Plain-DETR) -> `PlainDETR` weights.

    backbone.0.net.body.* / backbone.0.upsample.*          backbone.net.* / backbone.upsample.* (swin_v2.py)
    *.relative_coords_table, *.relative_position_index     dropped: recomputed from the window geometry
    transformer.decoder.layers.i.{linear1,linear2,norm3}   decoder.layers.i.ffn.{linear1,linear2,norm}
    transformer.decoder.* (layers, final_layer_norm)       decoder.*
    transformer.{enc_output,enc_output_norm,pos_trans,pos_trans_norm}.*
                                                          proposals.*
    transformer.enc_output_proj.i.*                        proposal_proj.i.*
    transformer.level_embed                                level_embed
    transformer.decoder.{bbox_embed,class_embed}.*         dropped: the same tensors as {bbox,class}_embed.*
    query_embed, input_proj, class_embed, bbox_embed       kept
"""
from typing import Dict, Mapping, Optional, Sequence

import torch

from .deformable_detr import DEFORMABLE_DETR_TIED, proposal_head_rows
from .strict import FFN_RULES, KeyRules, convert_strict
from .swin_v2 import PLAIN_DETR_BACKBONE_RULES, drop_geometry_buffers

__all__ = ["convert_plain_detr", "plain_detr_key", "PLAIN_DETR_RULES"]

PLAIN_DETR_RULES = PLAIN_DETR_BACKBONE_RULES + FFN_RULES + (
    (r"^transformer\.(enc_output|enc_output_norm|pos_trans|pos_trans_norm)\.", r"proposals.\1."),
    (r"^transformer\.enc_output_proj\.", "proposal_proj."),
    (r"^transformer\.", ""),
)
plain_detr_key = KeyRules(PLAIN_DETR_RULES, backbone_prefix=None)


def convert_plain_detr(
    official: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    class_ids: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """`convert_strict` with Plain-DETR's key mapping (see the module docstring and `convert_strict`); the
    proposal class head keeps its objectness row first (`proposal_head_rows`)."""
    rows = {} if class_ids is None else proposal_head_rows(official, class_ids)
    return convert_strict(
        drop_geometry_buffers(official), target, plain_detr_key, tied=DEFORMABLE_DETR_TIED,
        class_ids=class_ids, class_rows=rows,
    )

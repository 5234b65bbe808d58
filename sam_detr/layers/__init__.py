"""Ops and small blocks shared by every method. Needs only torch and torchvision."""
from .attention import MultiheadAttentionNoProj
from .box_ops import (
    box_cxcywh_to_xyxy, box_iou, box_to_delta, box_xyxy_to_cxcywh, delta_to_box, generalized_box_iou,
    inverse_sigmoid, paired_generalized_box_iou,
)
from .ffn import FFN
from .input_projection import InputProjection
from .mlp import MLP
from .ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_pytorch
from .position_encoding import (
    PositionEmbeddingSine, anchor_sine_embed, boxes_sine_embed, points_sine_embed, sine_embed,
)
from .roi_align import roi_align

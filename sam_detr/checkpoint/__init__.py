"""Converters from the official checkpoints to this package's names."""
from .conditional_detr import conditional_detr_key, convert_conditional_detr, convert_detr
from .deformable_detr import convert_deformable_detr, deformable_detr_key
from .dino import convert_dino, dino_key
from .ms_detr import convert_ms_detr, ms_detr_key
from .plain_detr import convert_plain_detr, plain_detr_key
from .resnet import convert_torchvision_resnet, torchvision_resnet_key
from .sam_detr import convert_sam_detr, sam_detr_key
from .strict import CLASS_HEAD, FFN_RULES, KeyRules, convert_strict, dataset_class_ids
from .swin_v2 import (
    PLAIN_DETR_BACKBONE_RULES, convert_plain_detr_backbone, convert_swinv2_pretrained, drop_geometry_buffers,
    swinv2_pretrained_key, unwrap_state_dict,
)

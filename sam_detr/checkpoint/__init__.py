"""Converters from the official checkpoints to this package's names."""
from .resnet import convert_torchvision_resnet, torchvision_resnet_key
from .sam_detr import convert_sam_detr, dataset_class_ids, sam_detr_key
from .swin_v2 import (
    convert_plain_detr_backbone, convert_swinv2_pretrained, plain_detr_backbone_key, swinv2_pretrained_key,
    unwrap_state_dict,
)

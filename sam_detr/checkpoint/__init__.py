"""Converters from the official checkpoints to this package's names."""
from .conditional_detr import conditional_detr_key, convert_conditional_detr, convert_detr
from .deformable_detr import convert_deformable_detr, deformable_detr_key
from .ms_detr import convert_ms_detr, ms_detr_key
from .plain_detr import convert_plain_detr, plain_detr_key
from .resnet import convert_torchvision_resnet, torchvision_resnet_key
from .sam_detr import convert_sam_detr, sam_detr_key
from .strict import CLASS_HEAD, FFN_RULES, KeyRules, convert_strict, dataset_class_ids
from .swin_v2 import (
    PLAIN_DETR_BACKBONE_RULES, convert_plain_detr_backbone, convert_swinv2_pretrained, drop_geometry_buffers,
    swinv2_pretrained_key, unwrap_state_dict,
)

# the registry of each meta-architecture's converter (sam_detr/checkpoint/official.py) imports the models
# (Detectron2): loaded on first use, so that the key mappings above need torch only
_OFFICIAL = ("OFFICIAL_CONVERTERS", "OfficialConverter", "official_converter", "load_official", "convert_official")


def __getattr__(name):
    if name in _OFFICIAL:
        from . import official

        return getattr(official, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

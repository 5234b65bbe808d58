"""Converters from the official checkpoints to this package's names."""
from .deformable_detr import convert_deformable_detr, deformable_detr_key
from .resnet import convert_torchvision_resnet, torchvision_resnet_key
from .sam_detr import convert_sam_detr, sam_detr_key
from .strict import CLASS_HEAD, FFN_RULES, KeyRules, convert_strict, dataset_class_ids

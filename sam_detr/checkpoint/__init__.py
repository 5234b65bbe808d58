"""Converters from the official checkpoints to this package's names."""
from .resnet import convert_torchvision_resnet, torchvision_resnet_key
from .sam_detr import convert_sam_detr, dataset_class_ids, sam_detr_key

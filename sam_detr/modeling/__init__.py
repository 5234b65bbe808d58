"""Detectron2 models: the shared DETR pipeline and one meta-architecture per method."""
from .backbone import (
    SwinTransformerV2, UpsampleBackbone, build_resnet_backbone, build_swinv2_backbone,
)
from .criterion import LossGroup, SetCriterion
from .denoising import ContrastiveDenoising, DenoisingMatcher
from .matcher import HungarianMatcher
from .o2m_matcher import OneToManyMatcher
from .meta_arch import DETR, DINO, SAMDETR, ConditionalDETR, DETRBase, DeformableDETR, PlainDETR

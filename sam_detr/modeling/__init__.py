"""Detectron2 models: the shared DETR pipeline and one meta-architecture per method."""
from .backbone import (
    SwinTransformerV2, UpsampleBackbone, build_resnet_backbone, build_swinv2_backbone,
)
from .box_coder import BoxCoder, SigmoidBoxCoder
from .criterion import LossGroup, SetCriterion
from .matcher import HungarianMatcher
from .o2m_matcher import OneToManyMatcher
from .meta_arch import DETR, MSDETR, SAMDETR, ConditionalDETR, DETRBase, DeformableDETR, PlainDETR
from .pixel_box_coder import PixelDeltaBoxCoder
from .query_groups import QueryGroup, QueryGroups

"""yacs config keys, for building the meta-architectures with Detectron2's `build_model(cfg)`.

The LazyConfig files under configs/ are the primary way to configure this package; these keys let the
registered meta-architectures be built from a classic `CfgNode` as well:

    cfg = get_cfg(); add_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "DETR"; model = build_model(cfg)
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_detr_config", "add_conditional_detr_config", "add_sam_detr_config", "add_deformable_detr_config"]


def add_detr_config(cfg: CN) -> CN:
    """Adds cfg.MODEL.DETR (shared by every method here) and sets the official input format."""
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.BACKBONE.NAME = "build_detr_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.FAST = True  # channels-last, frozen BN folded into the convolutions (build_resnet_backbone)

    cfg.MODEL.DETR = CN()
    cfg.MODEL.DETR.NUM_CLASSES = 80
    cfg.MODEL.DETR.IN_FEATURES = ["res5"]
    cfg.MODEL.DETR.HIDDEN_DIM = 256
    cfg.MODEL.DETR.NHEADS = 8
    cfg.MODEL.DETR.ENC_LAYERS = 6
    cfg.MODEL.DETR.DEC_LAYERS = 6
    cfg.MODEL.DETR.DIM_FEEDFORWARD = 2048
    cfg.MODEL.DETR.DROPOUT = 0.1
    cfg.MODEL.DETR.NUM_QUERIES = 100
    cfg.MODEL.DETR.SIZE_DIVISIBILITY = 0
    cfg.MODEL.DETR.NUM_SELECT = 100
    # backbone and input projection per image, so that detections do not depend on the batch (DETRBase)
    cfg.MODEL.DETR.BATCH_INVARIANT = False
    # matching costs and loss weights; CLASS_LOSS is "softmax" (DETR) or "focal" (the others)
    cfg.MODEL.DETR.CLASS_LOSS = "softmax"
    cfg.MODEL.DETR.COST_CLASS = 1.0
    cfg.MODEL.DETR.COST_BBOX = 5.0
    cfg.MODEL.DETR.COST_GIOU = 2.0
    cfg.MODEL.DETR.CLASS_WEIGHT = 1.0
    cfg.MODEL.DETR.BBOX_WEIGHT = 5.0
    cfg.MODEL.DETR.GIOU_WEIGHT = 2.0
    cfg.MODEL.DETR.EOS_COEF = 0.1
    cfg.MODEL.DETR.FOCAL_ALPHA = 0.25
    cfg.MODEL.DETR.FOCAL_GAMMA = 2.0
    return cfg


def add_conditional_detr_config(cfg: CN) -> CN:
    """`add_detr_config` with Conditional DETR's values (300 queries, focal classes, cost and weight 2 for
    classes):

        cfg = get_cfg(); add_conditional_detr_config(cfg); cfg.MODEL.META_ARCHITECTURE = "ConditionalDETR"
    """
    add_detr_config(cfg)
    cfg.MODEL.DETR.NUM_QUERIES = 300
    cfg.MODEL.DETR.CLASS_LOSS = "focal"
    cfg.MODEL.DETR.COST_CLASS = 2.0
    cfg.MODEL.DETR.CLASS_WEIGHT = 2.0
    return cfg


def add_sam_detr_config(cfg: CN) -> CN:
    """`add_conditional_detr_config` (SAM-DETR's values are Conditional DETR's), and cfg.MODEL.SAM_DETR.
    Multi-scale when MODEL.DETR.IN_FEATURES names several levels (finest first):

        cfg = get_cfg(); add_sam_detr_config(cfg); cfg.MODEL.META_ARCHITECTURE = "SAMDETR"
    """
    add_conditional_detr_config(cfg)

    cfg.MODEL.SAM_DETR = CN()
    cfg.MODEL.SAM_DETR.SMCA = False
    # GroupNorm after the input projections: the official 12-epoch and multi-scale models have it, the
    # 50-epoch single-scale ones do not
    cfg.MODEL.SAM_DETR.INPUT_PROJ_NORM = True
    # per decoder layer, the level it attends to (index into IN_FEATURES); empty: the layers split evenly
    # from the coarsest level to the finest ([2, 2, 1, 1, 0, 0] for 6 layers over 3 levels)
    cfg.MODEL.SAM_DETR.DECODER_LEVELS = []
    # the multi-scale (deformable) encoder
    cfg.MODEL.SAM_DETR.ENC_N_POINTS = 4
    cfg.MODEL.SAM_DETR.ENC_DIM_FEEDFORWARD = 1024
    return cfg


def add_deformable_detr_config(cfg: CN) -> CN:
    """`add_detr_config` with Deformable DETR's values (C3-C5 and one extra level, 300 queries, FFN 1024,
    focal classes, cost and weight 2 for classes), and cfg.MODEL.DEFORMABLE_DETR. The published variants:
    single scale (IN_FEATURES / RESNETS.OUT_FEATURES ["res5"], NUM_FEATURE_LEVELS 1, DC5 with
    RESNETS.RES5_DILATION 2), WITH_BOX_REFINE, and TWO_STAGE (with WITH_BOX_REFINE):

        cfg = get_cfg(); add_deformable_detr_config(cfg); cfg.MODEL.META_ARCHITECTURE = "DeformableDETR"
    """
    add_detr_config(cfg)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.DETR.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.DETR.NUM_QUERIES = 300
    cfg.MODEL.DETR.DIM_FEEDFORWARD = 1024
    cfg.MODEL.DETR.CLASS_LOSS = "focal"
    cfg.MODEL.DETR.COST_CLASS = 2.0
    cfg.MODEL.DETR.CLASS_WEIGHT = 2.0

    cfg.MODEL.DEFORMABLE_DETR = CN()
    # the IN_FEATURES levels, then stride-2 levels on the last one up to this number
    cfg.MODEL.DEFORMABLE_DETR.NUM_FEATURE_LEVELS = 4
    cfg.MODEL.DEFORMABLE_DETR.ENC_N_POINTS = 4
    cfg.MODEL.DEFORMABLE_DETR.DEC_N_POINTS = 4
    cfg.MODEL.DEFORMABLE_DETR.WITH_BOX_REFINE = False
    cfg.MODEL.DEFORMABLE_DETR.TWO_STAGE = False
    # MS-DETR++ / DINO options of two-stage models with refinement
    cfg.MODEL.DEFORMABLE_DETR.MIXED_SELECTION = False
    cfg.MODEL.DEFORMABLE_DETR.LOOK_FORWARD_TWICE = False
    return cfg


def add_plain_detr_config(cfg: CN) -> CN:
    """`add_detr_config` with Plain-DETR's values (one stride-16 level, here ResNet's res4; 300 one-to-one
    queries, 6 decoder layers, FFN 2048, no dropout, focal classes, cost and weight 2 for classes), and
    cfg.MODEL.PLAIN_DETR. The published SwinV2 models are LazyConfig files (configs/plain_detr_*.py):

        cfg = get_cfg(); add_plain_detr_config(cfg); cfg.MODEL.META_ARCHITECTURE = "PlainDETR"
    """
    add_detr_config(cfg)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
    cfg.MODEL.DETR.IN_FEATURES = ["res4"]
    cfg.MODEL.DETR.NUM_QUERIES = 300
    cfg.MODEL.DETR.DIM_FEEDFORWARD = 2048
    cfg.MODEL.DETR.DROPOUT = 0.0
    cfg.MODEL.DETR.CLASS_LOSS = "focal"
    cfg.MODEL.DETR.COST_CLASS = 2.0
    cfg.MODEL.DETR.CLASS_WEIGHT = 2.0

    cfg.MODEL.PLAIN_DETR = CN()
    # "linear" or "abs_log8" BoxRPB, or "" for the APE baseline
    cfg.MODEL.PLAIN_DETR.RPE_TYPE = "linear"
    cfg.MODEL.PLAIN_DETR.RPE_HIDDEN_DIM = 512
    # the stride of the IN_FEATURES level
    cfg.MODEL.PLAIN_DETR.FEATURE_STRIDE = 16
    cfg.MODEL.PLAIN_DETR.PROPOSAL_STRIDES = [8, 16, 32, 64]
    # hybrid matching: extra training queries, matched to the targets repeated K_ONE2MANY times
    cfg.MODEL.PLAIN_DETR.NUM_QUERIES_ONE2MANY = 1500
    cfg.MODEL.PLAIN_DETR.K_ONE2MANY = 6
    cfg.MODEL.PLAIN_DETR.LOOK_FORWARD_TWICE = True
    # box reparameterisation (pixel boxes, L1 on deltas; the official runs also set the box cost and weight to 1)
    cfg.MODEL.PLAIN_DETR.REPARAM = False
    return cfg

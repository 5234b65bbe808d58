# SAM-DETR-R50 as ZhangGongjie/SAM-DETR: single scale (C5), 6 + 6 layers, 300 learned reference boxes,
# focal classes, no SMCA, GroupNorm in the input projection (the 12-epoch models).
# Variants: model.transformer.decoder.layer.smca = True (w/ SMCA), model.backbone.dc5 = True (DC5),
# model.input_proj_norm = False (the 50-epoch models); multi-scale: sam_detr_r50_ms.py.
from detectron2.config import LazyCall as L

from sam_detr.config import train_dataset_num_classes
from sam_detr.modeling import SAMDETR, HungarianMatcher, SetCriterion, build_resnet_backbone
from sam_detr.modeling.transformer import (
    SAMDETRDecoder,
    SAMDETRDecoderLayer,
    SAMDETRTransformer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

model = L(SAMDETR)(
    backbone=L(build_resnet_backbone)(depth=50, out_features=["res5"], freeze_at=2, norm="FrozenBN", dc5=False),
    in_features=["res5"],
    transformer=L(SAMDETRTransformer)(
        encoder=L(TransformerEncoder)(
            layer=L(TransformerEncoderLayer)(d_model=256, nhead=8, dim_feedforward=2048, dropout=0.1), num_layers=6
        ),
        decoder=L(SAMDETRDecoder)(
            layer=L(SAMDETRDecoderLayer)(d_model=256, nhead=8, dim_feedforward=2048, dropout=0.1, smca=False),
            num_layers=6,
        ),
    ),
    num_queries=300,
    input_proj_norm=True,
    criterion=L(SetCriterion)(
        num_classes=train_dataset_num_classes(),
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost_type="focal"),
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        class_loss_type="focal",
    ),
)

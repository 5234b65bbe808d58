# Conditional DETR-R50 as Atten4Vis/ConditionalDETR: C5 (stride 32), DETR's 6-layer encoder, 6 conditional
# decoder layers, 300 learned queries, focal classes. Variants (configs/conditional_detr_*.py): DC5
# (model.backbone.dc5 = True), R101 (model.backbone.depth = 101).
from detectron2.config import LazyCall as L

from sam_detr.config import train_dataset_num_classes
from sam_detr.modeling import ConditionalDETR, HungarianMatcher, SetCriterion, build_resnet_backbone
from sam_detr.modeling.transformer import (
    ConditionalDETRDecoder,
    ConditionalDETRDecoderLayer,
    ConditionalDETRTransformer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

model = L(ConditionalDETR)(
    backbone=L(build_resnet_backbone)(depth=50, out_features=["res5"], freeze_at=2, norm="FrozenBN", dc5=False),
    in_features=["res5"],
    transformer=L(ConditionalDETRTransformer)(
        encoder=L(TransformerEncoder)(
            layer=L(TransformerEncoderLayer)(d_model=256, nhead=8, dim_feedforward=2048, dropout=0.1), num_layers=6
        ),
        decoder=L(ConditionalDETRDecoder)(
            layer=L(ConditionalDETRDecoderLayer)(d_model=256, nhead=8, dim_feedforward=2048, dropout=0.1),
            num_layers=6,
        ),
    ),
    num_queries=300,
    criterion=L(SetCriterion)(
        num_classes=train_dataset_num_classes(),
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost_type="focal"),
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        class_loss_type="focal",
    ),
)

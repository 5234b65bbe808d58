# DETR-R50 as facebookresearch/detr: 6 + 6 layers, 100 queries, softmax classes with a no-object class.
from detectron2.config import LazyCall as L

from sam_detr.config import train_dataset_num_classes
from sam_detr.modeling import DETR, HungarianMatcher, SetCriterion, build_resnet_backbone
from sam_detr.modeling.transformer import DetrTransformer

model = L(DETR)(
    backbone=L(build_resnet_backbone)(depth=50, out_features=["res5"], freeze_at=2, norm="FrozenBN", dc5=False),
    in_features=["res5"],
    transformer=L(DetrTransformer)(
        d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048, dropout=0.1
    ),
    num_queries=100,
    criterion=L(SetCriterion)(
        num_classes=train_dataset_num_classes(),
        matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0, class_cost_type="softmax"),
        weight_dict={"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        class_loss_type="softmax",
        eos_coef=0.1,
    ),
)

# Deformable DETR-R50 as fundamentalvision/Deformable-DETR: C3-C5 (strides 8/16/32) and a stride-64 level
# from C5, each projected with GroupNorm; 6 + 6 deformable layers (8 heads, 4 points, FFN 1024); 300
# learned queries; focal classes. Variants (configs/deformable_detr_r50_*.py): single scale
# (in_features ["res5"], 1 level), DC5 (model.backbone.dc5 = True), iterative box refinement
# (model.with_box_refine = True), two-stage (model.transformer.proposals = L(TwoStageProposals)(...)).
from detectron2.config import LazyCall as L

from sam_detr.modeling import DeformableDETR, HungarianMatcher, SetCriterion, build_resnet_backbone
from sam_detr.modeling.transformer import (
    DeformableTransformer,
    DeformableTransformerDecoder,
    DeformableTransformerDecoderLayer,
    DeformableTransformerEncoder,
    DeformableTransformerEncoderLayer,
)

model = L(DeformableDETR)(
    backbone=L(build_resnet_backbone)(
        depth=50, out_features=["res3", "res4", "res5"], freeze_at=2, norm="FrozenBN", dc5=False
    ),
    in_features=["res3", "res4", "res5"],
    transformer=L(DeformableTransformer)(
        encoder=L(DeformableTransformerEncoder)(
            layer=L(DeformableTransformerEncoderLayer)(
                d_model=256, nhead=8, dim_feedforward=1024, dropout=0.1, n_levels=4, n_points=4
            ),
            num_layers=6,
        ),
        decoder=L(DeformableTransformerDecoder)(
            layer=L(DeformableTransformerDecoderLayer)(
                d_model=256, nhead=8, dim_feedforward=1024, dropout=0.1, n_levels=4, n_points=4
            ),
            num_layers=6,
        ),
        proposals=None,
    ),
    num_queries=300,
    with_box_refine=False,
    criterion=L(SetCriterion)(
        num_classes=80,
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost_type="focal"),
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        class_loss_type="focal",
    ),
)

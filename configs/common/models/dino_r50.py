# DINO-R50 4-scale as IDEA-Research/DINO (config/DINO/DINO_4scale.py with its scripts' dn_box_noise_scale=1.0):
# C3-C5 (strides 8/16/32) and a stride-64 level from C5, each projected with GroupNorm; 6 + 6 deformable
# layers (8 heads, 4 points, FFN 2048, no dropout); 900 queries positioned by the encoder's best proposals,
# with learned content (mixed query selection); look-forward-twice; contrastive denoising with up to 100
# positive and 100 negative queries per image; focal classes; 300 detections kept per image. The 5-scale
# model (configs/dino_r50_5scale_*.py) adds C2 (stride 4).
from detectron2.config import LazyCall as L

from sam_detr.config.denoising import add_denoising
from sam_detr.modeling import DINO, HungarianMatcher, LossGroup, SetCriterion, build_resnet_backbone
from sam_detr.modeling.box_coder import SigmoidBoxCoder
from sam_detr.modeling.transformer import (
    DeformableTransformerDecoderLayer,
    DeformableTransformerEncoder,
    DeformableTransformerEncoderLayer,
    DINODecoder,
    DINOTransformer,
    TwoStageProposals,
)

model = L(DINO)(
    backbone=L(build_resnet_backbone)(
        depth=50, out_features=["res3", "res4", "res5"], freeze_at=2, norm="FrozenBN", dc5=False
    ),
    in_features=["res3", "res4", "res5"],
    transformer=L(DINOTransformer)(
        encoder=L(DeformableTransformerEncoder)(
            layer=L(DeformableTransformerEncoderLayer)(
                d_model=256, nhead=8, dim_feedforward=2048, dropout=0.0, n_levels=4, n_points=4
            ),
            num_layers=6,
        ),
        decoder=L(DINODecoder)(
            layer=L(DeformableTransformerDecoderLayer)(
                d_model=256, nhead=8, dim_feedforward=2048, dropout=0.0, n_levels=4, n_points=4
            ),
            num_layers=6,
        ),
        proposals=L(TwoStageProposals)(d_model=256, position_queries=False, select_by="best_class"),
        num_queries=900,
    ),
    num_select=300,
    # DINO's inverse_sigmoid clamps at 1e-3 (the others' at 1e-5); the criterion and its matcher code alike
    box_coder=L(SigmoidBoxCoder)(eps=1e-3),
    criterion=L(SetCriterion)(
        num_classes=80,
        matcher=L(HungarianMatcher)(
            cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost_type="focal", box_coder="${..box_coder}",
            giou_eps="${..giou_eps}",
        ),
        weight_dict={"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        class_loss_type="focal",
        groups=[
            L(LossGroup)(),
            # the selected proposals, Hungarian-matched against the targets with their classes
            L(LossGroup)(key="interm_outputs", suffix="_interm"),
        ],
        box_coder="${..box_coder}",
        # DINO's GIoU adds 1e-6 to its denominators (util/box_ops.py), in the loss and the matching cost
        giou_eps=1e-6,
    ),
)
# contrastive denoising: up to 100 positive and 100 negative queries per image (the "dn_outputs" group, matched
# by construction; zero losses in a batch without targets)
add_denoising(model, d_model=256, dn_number=100, label_noise_ratio=0.5, box_noise_scale=1.0)

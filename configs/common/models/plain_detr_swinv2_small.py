# Plain-DETR on SwinV2-Small as impiga/Plain-DETR's swinv2_small_sup_pt_boxrpe: the window-16 SwinV2-S with
# global attention in the first two blocks of its last stage, upsampled to stride 16 (384 channels),
# projected with GroupNorm; no encoder; proposals at strides 8/16/32/64 from that map, 300 one-to-one +
# 1500 hybrid (one-to-many) queries (targets repeated 6 times), mixed selection, look-forward-twice; 6 pre-norm
# global decoder layers (8 heads, FFN 2048, dropout 0) with the linear BoxRPB (hidden 512); focal classes.
# Variants (configs/plain_detr_swinv2_small_*.py): the APE baseline (decoder.layer.rpe_type = None), the
# SimMIM-pretrained backbone (backbone.pretrained_window_sizes = (12, 12, 12, 6)).
from detectron2.config import LazyCall as L

from sam_detr.modeling import HungarianMatcher, PlainDETR, SetCriterion, build_swinv2_backbone
from sam_detr.modeling.criterion import hybrid_matching_groups
from sam_detr.modeling.transformer import GlobalDecoder, GlobalDecoderLayer

model = L(PlainDETR)(
    backbone=L(build_swinv2_backbone)(
        embed_dim=96,
        depths=(2, 2, 18, 2),
        num_heads=(3, 6, 12, 24),
        window_size=16,
        pretrained_window_sizes=(16, 16, 16, 8),
        global_blocks=((), (), (), (0, 1)),
        drop_path_rate=0.1,
        out_stride=16,
    ),
    in_features=["p4"],
    decoder=L(GlobalDecoder)(
        layer=L(GlobalDecoderLayer)(
            d_model=256, nhead=8, dim_feedforward=2048, dropout=0.0, rpe_type="linear", rpe_hidden_dim=512,
            feature_stride=16,
        ),
        num_layers=6,
    ),
    proposal_strides=(8, 16, 32, 64),
    num_queries=300,
    num_hybrid_queries=1500,
    look_forward_twice=True,
    criterion=L(SetCriterion)(
        num_classes=80,
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, class_cost_type="focal"),
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        class_loss_type="focal",
        groups=L(hybrid_matching_groups)(target_repeats=6),
    ),
)

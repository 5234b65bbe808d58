# MS-DETR-R50 as Atten4Vis/MS-DETR: two-stage Deformable DETR with iterative box refinement (FFN 2048), whose
# decoder (`--use_ms_detr --use_aux_ffn`) gives one-to-many features besides the one-to-one ones; the
# criterion supervises the decoder one-to-one (Hungarian, class weight 1), one-to-many (OneToManyMatcher,
# class weight 2) and the encoder's proposals matched on their fixed anchors (class-agnostic, cost_class 0).
# Deformable DETR++ (configs/ms_detr_pp_r50_*.py): dropout 0, mixed selection, look-forward-twice.
from detectron2.config import LazyCall as L

from sam_detr.modeling import MSDETR, HungarianMatcher, LossGroup, OneToManyMatcher
from sam_detr.modeling.transformer import MSDETRDecoder, MSDETRDecoderLayer, TwoStageProposals

from .deformable_detr_r50 import model

model._target_ = MSDETR
model.transformer.encoder.layer.dim_feedforward = 2048
model.transformer.decoder = L(MSDETRDecoder)(
    layer=L(MSDETRDecoderLayer)(
        d_model=256, nhead=8, dim_feedforward=2048, dropout=0.1, n_levels=4, n_points=4, use_aux_ffn=True
    ),
    num_layers=6,
)
model.transformer.proposals = L(TwoStageProposals)(d_model=256)
model.with_box_refine = True
model.mixed_selection = False
model.look_forward_twice = False
model.num_select = 100  # the official --topk_eval
model.criterion.weight_dict = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
# the one-to-many supervision (also given to SAM-DETR's own predictions: configs/quickstart/sam_detr_o2m.py)
one_to_many = L(LossGroup)(
    key="o2m_outputs",
    suffix="_o2m",
    matcher=L(OneToManyMatcher)(threshold=0.4, k=6, positive_fraction=0.25, coef_box=0.7, coef_class=0.3),
    weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
)
model.criterion.groups = [
    L(LossGroup)(),
    one_to_many,
    L(LossGroup)(
        key="enc_outputs",
        suffix="_enc",
        class_agnostic=True,
        matcher=L(HungarianMatcher)(cost_class=0.0, cost_bbox=5.0, cost_giou=2.0, class_cost_type="focal"),
        match_boxes="anchors",
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
    ),
]

# Plain-DETR, SwinV2-S (SimMIM), BoxRPB and box reparameterisation, 12 epochs (impiga/Plain-DETR
# swinv2_small_mim_pt_boxrpe_reparam: 50.9 AP): boxes in pixels, the L1 loss and cost on deltas with weight
# 1, the un-normalised sine position embedding (`sine_unnorm`).
from detectron2.config import LazyCall as L

from sam_detr.layers import PositionEmbeddingSine
from sam_detr.modeling import PixelDeltaBoxCoder

from .plain_detr_swinv2_small_mim_pt_boxrpe import dataloader, lr_multiplier, model, optimizer, train

# the model, the criterion and its matcher code boxes alike
model.box_coder = L(PixelDeltaBoxCoder)()
model.criterion.box_coder = L(PixelDeltaBoxCoder)()
model.criterion.matcher.box_coder = L(PixelDeltaBoxCoder)()
model.position_embedding = L(PositionEmbeddingSine)(
    num_pos_feats=128, normalize=False, offset=-0.5, scale_unnormalized=True
)
model.criterion.matcher.cost_bbox = 1.0
model.criterion.weight_dict = {"loss_ce": 2.0, "loss_bbox": 1.0, "loss_giou": 2.0}
train.output_dir = "./output/plain_detr_swinv2_small_mim_pt_boxrpe_reparam"

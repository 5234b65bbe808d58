# Plain-DETR, SwinV2-S pretrained with SimMIM (window 12 -> 16, 2 global blocks), BoxRPB, 12 epochs
# (impiga/Plain-DETR swinv2_small_mim_pt_boxrpe: 48.7 AP): the trunk's learning rate decays by 0.9 per
# block from the top (layer-wise decay) instead of 0.1 x.
from detectron2.config import LazyCall as L

from sam_detr.solver import SwinLayerDecayLRFactor

from .plain_detr_swinv2_small_sup_pt_boxrpe import dataloader, lr_multiplier, model, optimizer, train

model.backbone.pretrained_window_sizes = (12, 12, 12, 6)
optimizer.params.lr_factor_func = L(SwinLayerDecayLRFactor)(
    depths=(2, 2, 18, 2), decay_rate=0.9, prefix="backbone.net."
)
# set init_checkpoint to swinv2_small_1k_500k_mim_pt.pth converted by convert_swinv2_pretrained
train.output_dir = "./output/plain_detr_swinv2_small_mim_pt_boxrpe"

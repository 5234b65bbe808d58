# Plain-DETR, SwinV2-S (supervised pretraining), the APE baseline: global cross-attention without BoxRPB,
# 12 epochs (impiga/Plain-DETR swinv2_small_sup_pt_ape: 37.2 AP).
from .plain_detr_swinv2_small_sup_pt_boxrpe import dataloader, lr_multiplier, model, optimizer, train

model.decoder.layer.rpe_type = None
train.output_dir = "./output/plain_detr_swinv2_small_sup_pt_ape"

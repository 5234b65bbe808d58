# SAM-DETR-R50, 50 epochs (ZhangGongjie/SAM-DETR: 39.8 AP): batch 16, drop at epoch 40.
from .common.schedule import step_lr_multiplier
from .sam_detr_r50_12ep import dataloader, model, optimizer, train

# the official 50-epoch single-scale models have no GroupNorm in the input projection
model.input_proj_norm = False
train.epochs = 50
lr_multiplier = step_lr_multiplier(lr_drop=40)
train.output_dir = "./output/sam_detr_r50_50ep"

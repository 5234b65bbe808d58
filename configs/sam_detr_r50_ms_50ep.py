# SAM-DETR-R50-MS, 50 epochs (ZhangGongjie/SAM-DETR: 46.1 AP): batch 16, drop at epoch 40; the input
# projections keep their GroupNorm.
from .common.schedule import step_lr_multiplier
from .sam_detr_r50_ms_12ep import dataloader, model, optimizer, train

train.epochs = 50
lr_multiplier = step_lr_multiplier(lr_drop=40)
train.output_dir = "./output/sam_detr_r50_ms_50ep"

# DETR-R50, 50 epochs (Atten4Vis/ConditionalDETR's baseline: 34.8 AP): Conditional DETR's optimisation,
# batch 16 (2 x 8 GPUs), drop at epoch 40.
from .common.schedule import step_lr_multiplier
from .detr_r50_500ep import dataloader, model, optimizer, train

dataloader.train.total_batch_size = 16
train.epochs = 50
lr_multiplier = step_lr_multiplier(lr_drop=40)
train.output_dir = "./output/detr_r50_50ep"

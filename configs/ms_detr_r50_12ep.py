# MS-DETR-R50 on Deformable DETR (two-stage, box refinement), 300 queries, 12 epochs (Atten4Vis/MS-DETR
# scripts/train_ms_detr_300.sh: 47.6 AP): batch 16, AdamW lr 2e-4 (backbone, sampling offsets and reference
# points 0.1 x), drop at epoch 11.
from .common.models.ms_detr_r50 import model
from .common.schedule import step_lr_multiplier
# Deformable DETR's optimisation (AdamW 2e-4, the 0.1 x factors, the ImageNet backbone), MS-DETR's schedule
from .deformable_detr_r50_50ep import dataloader, optimizer, train

dataloader.train.total_batch_size = 16
train.epochs = 12
lr_multiplier = step_lr_multiplier(lr_drop=11)
train.output_dir = "./output/ms_detr_r50_12ep"

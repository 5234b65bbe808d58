# DETR-R101, 50 epochs (Atten4Vis/ConditionalDETR's baseline: 36.9 AP): batch 16, drop at epoch 40.
from .detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train
from .detr_r101_500ep import model as r101, train as r101_train

model.backbone.depth = r101.backbone.depth
train.init_checkpoint = r101_train.init_checkpoint
train.init_checkpoint_partial = r101_train.init_checkpoint_partial
train.output_dir = "./output/detr_r101_50ep"

# Deformable DETR-R50, multi-scale, 50 epochs (fundamentalvision/Deformable-DETR: 44.5 AP): batch 32,
# AdamW lr 2e-4 (backbone, sampling offsets and reference points 0.1 x), drop at epoch 40.
from .common.data.coco_detr import dataloader
from .common.models.deformable_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.schedule import step_lr_multiplier
from .common.train import train

from sam_detr.engine import checkpointer

optimizer.lr = 2e-4
optimizer.params.lr_factor_func.factors = {"backbone.": 0.1, "reference_points": 0.1, "sampling_offsets": 0.1}
dataloader.train.total_batch_size = 32
train.epochs = 50
lr_multiplier = step_lr_multiplier(lr_drop=40)
# torchvision's ImageNet ResNet-50, as the official model (d2's conversion of it)
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
# it initialises the backbone only: the rest of the model is new
train.init_checkpoint_partial = checkpointer.IMAGENET_BACKBONE
train.output_dir = "./output/deformable_detr_r50_50ep"

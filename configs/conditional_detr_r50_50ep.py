# Conditional DETR-R50, 50 epochs (Atten4Vis/ConditionalDETR: 41.0 AP): batch 16 (2 x 8 GPUs), AdamW lr 1e-4
# (backbone 1e-5), weight decay 1e-4, drop at epoch 40, gradient clipping 0.1 (common/train.py).
from .common.data.coco_detr import dataloader
from .common.models.conditional_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.schedule import step_lr_multiplier
from .common.train import train

from sam_detr.engine import checkpointer

dataloader.train.total_batch_size = 16
train.epochs = 50
lr_multiplier = step_lr_multiplier(lr_drop=40)
# torchvision's ImageNet ResNet-50, as the official model (d2's conversion of it)
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
# it initialises the backbone only: the rest of the model is new
train.init_checkpoint_partial = checkpointer.IMAGENET_BACKBONE
train.output_dir = "./output/conditional_detr_r50_50ep"

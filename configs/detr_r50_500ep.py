# DETR-R50, 500 epochs (facebookresearch/detr: 42.0 AP): batch 64, lr 1e-4, drop at epoch 400.
from .common.data.coco_detr import dataloader
from .common.models.detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.schedule import step_lr_multiplier
from .common.train import train

from sam_detr.engine import checkpointer

dataloader.train.total_batch_size = 64
train.epochs = 500
lr_multiplier = step_lr_multiplier(lr_drop=400)
# torchvision's ImageNet ResNet-50, as the official model (d2's conversion of it)
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
# it initialises the backbone only: the rest of the model is new
train.init_checkpoint_partial = checkpointer.IMAGENET_BACKBONE
train.output_dir = "./output/detr_r50_500ep"

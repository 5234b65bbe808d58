# DINO-R50 4-scale, 12 epochs (IDEA-Research/DINO: 49.0 AP): batch 16, AdamW lr 1e-4 (backbone 1e-5), weight
# decay 1e-4, gradient norm clipped at 0.1, drop at epoch 11 (config/DINO/DINO_4scale.py).
from .common.data.coco_detr import dataloader
from .common.models.dino_r50 import model
from .common.optim import AdamW as optimizer
from .common.schedule import step_lr_multiplier
from .common.train import train

from sam_detr.engine import checkpointer

dataloader.train.total_batch_size = 16
train.epochs = 12
lr_multiplier = step_lr_multiplier(lr_drop=11)
# torchvision's ImageNet ResNet-50, as the official model (d2's conversion of it)
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
# it initialises the backbone only: the rest of the model is new
train.init_checkpoint_partial = checkpointer.IMAGENET_BACKBONE
train.output_dir = "./output/dino_r50_4scale_12ep"

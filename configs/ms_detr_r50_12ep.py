# MS-DETR-R50 on Deformable DETR (two-stage, box refinement), 300 queries, 12 epochs (Atten4Vis/MS-DETR
# scripts/train_ms_detr_300.sh: 47.6 AP): batch 16, AdamW lr 2e-4 (backbone, sampling offsets and reference
# points 0.1 x), drop at epoch 11.
from .common.data.coco_detr import dataloader
from .common.models.ms_detr_r50 import model
from .common.optim import AdamW as optimizer
from .common.schedule import step_lr_multiplier
from .common.train import train

from sam_detr.engine import checkpointer

optimizer.lr = 2e-4
optimizer.params.lr_factor_func.factors = {"backbone.": 0.1, "reference_points": 0.1, "sampling_offsets": 0.1}
dataloader.train.total_batch_size = 16
train.epochs = 12
lr_multiplier = step_lr_multiplier(lr_drop=11)
# torchvision's ImageNet ResNet-50, as the official model (d2's conversion of it)
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
# it initialises the backbone only: the rest of the model is new
train.init_checkpoint_partial = checkpointer.IMAGENET_BACKBONE
train.output_dir = "./output/ms_detr_r50_12ep"

# Conditional DETR-R101, 50 epochs (Atten4Vis/ConditionalDETR: 42.8 AP): batch 16.
from .conditional_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

from sam_detr.engine import checkpointer

model.backbone.depth = 101
# torchvision's ImageNet ResNet-101 (resnet101-63fe2227.pth), as the official model, converted by
#   python tools/convert_torchvision_resnet.py --source resnet101-63fe2227.pth --output r101_torchvision.pth
train.init_checkpoint = "./r101_torchvision.pth"
train.init_checkpoint_partial = checkpointer.IMAGENET_BACKBONE
train.output_dir = "./output/conditional_detr_r101_50ep"

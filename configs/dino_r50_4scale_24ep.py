# DINO-R50 4-scale, 24 epochs (IDEA-Research/DINO: 50.4 AP). The official repository publishes no 24-epoch
# schedule (its authors "picked a good epoch to drop lr", DINO issue #104); the drop at epoch 20 is IDEA's
# detrex's (lr_multiplier_24ep).
from .common.schedule import step_lr_multiplier
from .dino_r50_4scale_12ep import dataloader, model, optimizer, train

train.epochs = 24
lr_multiplier = step_lr_multiplier(lr_drop=20)
train.output_dir = "./output/dino_r50_4scale_24ep"

# DINO-R50 4-scale, 36 epochs (IDEA-Research/DINO: 50.9 AP). No published schedule (see the 24-epoch config);
# the drop at epoch 30 is IDEA's detrex's (lr_multiplier_36ep).
from .common.schedule import step_lr_multiplier
from .dino_r50_4scale_12ep import dataloader, model, optimizer, train

train.epochs = 36
lr_multiplier = step_lr_multiplier(lr_drop=30)
train.output_dir = "./output/dino_r50_4scale_36ep"

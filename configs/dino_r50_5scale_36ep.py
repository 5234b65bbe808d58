# DINO-R50 5-scale, 36 epochs (IDEA-Research/DINO: 51.2 AP); the schedule as configs/dino_r50_4scale_36ep.py.
from .dino_r50_4scale_36ep import lr_multiplier
from .dino_r50_5scale_12ep import dataloader, model, optimizer, train

train.epochs = 36
train.output_dir = "./output/dino_r50_5scale_36ep"

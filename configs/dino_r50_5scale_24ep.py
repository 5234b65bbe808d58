# DINO-R50 5-scale, 24 epochs (IDEA-Research/DINO: 51.3 AP); the schedule as configs/dino_r50_4scale_24ep.py.
from .dino_r50_4scale_24ep import lr_multiplier
from .dino_r50_5scale_12ep import dataloader, model, optimizer, train

train.epochs = 24
train.output_dir = "./output/dino_r50_5scale_24ep"

# DINO-R50 5-scale, 12 epochs (IDEA-Research/DINO config/DINO/DINO_5scale.py: 49.4 AP): the 4-scale model
# with C2 (stride 4) as its finest level; the same optimisation (batch 16: 16 GPUs x 1 officially).
from .dino_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.out_features = ["res2", "res3", "res4", "res5"]
model.in_features = ["res2", "res3", "res4", "res5"]
model.transformer.encoder.layer.n_levels = 5
model.transformer.decoder.layer.n_levels = 5
train.output_dir = "./output/dino_r50_5scale_12ep"

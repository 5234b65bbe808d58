# Deformable DETR-R50, single scale (C5 only), 50 epochs (fundamentalvision/Deformable-DETR: 39.4 AP).
from .deformable_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.out_features = ["res5"]
model.in_features = ["res5"]
model.transformer.encoder.layer.n_levels = 1
model.transformer.decoder.layer.n_levels = 1
train.output_dir = "./output/deformable_detr_r50_single_scale_50ep"

# Deformable DETR-R50, single scale DC5 (C5 at stride 16), 50 epochs (fundamentalvision/Deformable-DETR:
# 41.5 AP).
from .deformable_detr_r50_single_scale_50ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.dc5 = True
train.output_dir = "./output/deformable_detr_r50_single_scale_dc5_50ep"

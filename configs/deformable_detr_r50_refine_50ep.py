# Deformable DETR-R50 + iterative bounding box refinement, 50 epochs (fundamentalvision/Deformable-DETR:
# 46.2 AP).
from .deformable_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

model.with_box_refine = True
train.output_dir = "./output/deformable_detr_r50_refine_50ep"

# Conditional DETR-DC5-R50, 50 epochs (Atten4Vis/ConditionalDETR: 43.7 AP): C5 dilated (stride 16), batch 8
# (1 x 8 GPUs).
from .conditional_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.dc5 = True
dataloader.train.total_batch_size = 8
train.output_dir = "./output/conditional_detr_r50_dc5_50ep"

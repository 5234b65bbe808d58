# SAM-DETR-R50-DC5, 12 epochs (ZhangGongjie/SAM-DETR: 38.3 AP): batch 8.
from .sam_detr_r50_12ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.dc5 = True
dataloader.train.total_batch_size = 8
train.output_dir = "./output/sam_detr_r50_dc5_12ep"

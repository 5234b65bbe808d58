# SAM-DETR-R50 w/ SMCA, 50 epochs (ZhangGongjie/SAM-DETR: 41.8 AP).
from .sam_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.decoder.layer.smca = True
train.output_dir = "./output/sam_detr_r50_smca_50ep"

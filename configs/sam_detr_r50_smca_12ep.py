# SAM-DETR-R50 w/ SMCA, 12 epochs (ZhangGongjie/SAM-DETR: 36.0 AP).
from .sam_detr_r50_12ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.decoder.layer.smca = True
train.output_dir = "./output/sam_detr_r50_smca_12ep"

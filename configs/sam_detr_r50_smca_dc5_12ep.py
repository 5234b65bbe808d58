# SAM-DETR-R50-DC5 w/ SMCA, 12 epochs (ZhangGongjie/SAM-DETR: 40.6 AP): batch 8.
from .sam_detr_r50_dc5_12ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.decoder.layer.smca = True
train.output_dir = "./output/sam_detr_r50_smca_dc5_12ep"

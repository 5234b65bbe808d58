# SAM-DETR-R50-MS w/ SMCA, 12 epochs (ZhangGongjie/SAM-DETR: 42.9 AP).
from .sam_detr_r50_ms_12ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.decoder.layer.smca = True
train.output_dir = "./output/sam_detr_r50_smca_ms_12ep"

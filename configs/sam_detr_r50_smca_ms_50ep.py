# SAM-DETR-R50-MS w/ SMCA, 50 epochs (ZhangGongjie/SAM-DETR: 47.0 AP).
from .sam_detr_r50_ms_50ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.decoder.layer.smca = True
train.output_dir = "./output/sam_detr_r50_smca_ms_50ep"

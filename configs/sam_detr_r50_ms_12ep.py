# SAM-DETR-R50-MS, 12 epochs (ZhangGongjie/SAM-DETR: 41.1 AP): batch 16, drop at epoch 10.
from .common.models.sam_detr_r50_ms import model
from .sam_detr_r50_12ep import dataloader, lr_multiplier, optimizer, train

train.output_dir = "./output/sam_detr_r50_ms_12ep"

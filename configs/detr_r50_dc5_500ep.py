# DETR-DC5-R50, 500 epochs (facebookresearch/detr: 43.3 AP): C5 dilated (stride 16). The DC5 models were
# trained with 1 image per GPU (facebookresearch/detr README) on the paper's 16 GPUs: batch 16.
from .detr_r50_500ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.dc5 = True
dataloader.train.total_batch_size = 16
train.output_dir = "./output/detr_r50_dc5_500ep"

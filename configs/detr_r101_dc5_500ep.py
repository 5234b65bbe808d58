# DETR-DC5-R101, 500 epochs (facebookresearch/detr: 44.9 AP): C5 dilated (stride 16), batch 16 (see
# detr_r50_dc5_500ep.py).
from .detr_r101_500ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.dc5 = True
dataloader.train.total_batch_size = 16
train.output_dir = "./output/detr_r101_dc5_500ep"

# MS-DETR-R50 on Deformable DETR++ (dropout 0, mixed query selection, look-forward-twice), 300 queries, 12
# epochs (Atten4Vis/MS-DETR scripts/train_ms_detr_pp_300.sh: 48.8 AP).
from .ms_detr_r50_12ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.encoder.layer.dropout = 0.0
model.transformer.decoder.layer.dropout = 0.0
model.mixed_selection = True
model.look_forward_twice = True
train.output_dir = "./output/ms_detr_pp_r50_12ep"

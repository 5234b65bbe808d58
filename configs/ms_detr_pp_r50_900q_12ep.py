# MS-DETR-R50 on Deformable DETR++ with 900 queries, 12 epochs (Atten4Vis/MS-DETR
# scripts/train_ms_detr_pp_900.sh: 50.0 AP): 300 detections kept per image (--topk_eval 300).
from .ms_detr_pp_r50_12ep import dataloader, lr_multiplier, model, optimizer, train

model.num_queries = 900
model.num_select = 300
train.output_dir = "./output/ms_detr_pp_r50_900q_12ep"

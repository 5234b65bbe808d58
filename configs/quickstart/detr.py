# The main job: DETR trained from scratch on the embedded shapes dataset, on a CPU, in minutes.
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/detr.py
# A small DETR (ResNet-18 with BatchNorm, trained from scratch, up to res4 (stride 16); a narrow 3 + 3
# layer transformer; 10 queries, no dropout) on 112-144 px images; everything else is DETR's.
from ..common.data.shapes import dataloader
from ..common.models.detr_r50 import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step_lr_multiplier
from ..common.train import train

model.backbone.update(depth=18, norm="BN", freeze_at=0, out_features=["res4"])
model.in_features = ["res4"]
model.transformer.update(
    d_model=128, nhead=8, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=512, dropout=0.0
)
model.num_queries = 10
model.criterion.num_classes = 5

# the backbone learns from scratch: no 0.1 x learning rate for it
optimizer.params.lr_factor_func.factors = {}
optimizer.lr = 2e-4

dataloader.train.mapper.augmentations[1].short_edge_length = [112, 128, 144]
dataloader.test.mapper.augmentations[0].short_edge_length = 128
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.num_workers = 1
train.device = "cpu"
# 375 iterations per epoch
train.epochs = 5
lr_multiplier = step_lr_multiplier(lr_drop=4)
train.eval_period = 10**9  # evaluate once, at the end
train.checkpointer.period = 500
train.log_period = 20
train.seed = 0
train.output_dir = "./output/quickstart_detr"

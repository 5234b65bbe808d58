# DETR trained from scratch on the embedded shapes dataset, on a CPU, in minutes; the baseline of the main job,
# the convergence race of the quickstart configs (tools/race.py), which trains each the same way:
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/detr.py
# A small DETR (ResNet-18 with BatchNorm, trained from scratch, up to res4 (stride 16); a narrow 3 + 3
# layer transformer; 10 queries, no dropout) on 112-144 px images; everything else is DETR's.
from detectron2.config import LazyCall as L
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ..common.data.shapes import dataloader
from ..common.models.detr_r50 import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

model.backbone.update(depth=18, norm="BN", freeze_at=0, out_features=["res4"])
model.in_features = ["res4"]
model.transformer.update(
    d_model=128, nhead=8, num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=512, dropout=0.0
)
model.num_queries = 10

# the backbone learns from scratch: no 0.1 x learning rate for it
optimizer.params.lr_factor_func.factors = {}
optimizer.lr = 2e-4

dataloader.train.mapper.augmentations[1].short_edge_length = [112, 128, 144]
dataloader.test.mapper.augmentations[0].short_edge_length = 128
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.num_workers = 1
train.device = "cpu"
# 500 iterations of 4 images (1.3 epochs of shapes_train): the convergence race (tools/race.py) trains every
# quickstart config this long, in about 15 minutes for three methods on 2 CPU cores
train.max_iter = 500
# the learning rate drops 10x after 4/5 of train.max_iter, whatever it is set to
lr_multiplier = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[4], num_updates=5)
train.eval_period = 10**9  # evaluate once, at the end (the race evaluates more often)
train.checkpointer.period = 100  # an interrupted run (or race) resumes from at most 100 iterations back
train.log_period = 20
train.seed = 0
train.output_dir = "./output/quickstart_detr"

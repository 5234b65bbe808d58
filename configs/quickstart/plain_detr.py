# Plain-DETR on the main job: the quickstart DETR's data, optimiser, schedule and size (ResNet-18 with
# BatchNorm from scratch up to res4, stride 16, instead of the SwinV2-S, which is far too slow for a CPU
# job; a 128-wide 3-layer pre-norm global decoder with the linear BoxRPB; as many one-to-one queries), so
# that the methods compare iteration for iteration:
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/plain_detr.py
# Proposals at strides 8/16/32 only: the stride-64 map of a 45-pixel-high image would be empty.
from ..common.models.plain_detr_swinv2_small import model
from .detr import dataloader, lr_multiplier, optimizer, train
from .detr import model as detr

from sam_detr.config.quickstart import like_quickstart_detr

like_quickstart_detr(model, detr, decoder=model.decoder, rpe_hidden_dim=128)
model.num_hybrid_queries = 5 * detr.num_queries
model.proposal_strides = (8, 16, 32)

train.output_dir = "./output/quickstart_plain_detr"

# Conditional DETR on the main job: the quickstart DETR's data, optimiser, schedule and size (ResNet-18 with
# BatchNorm from scratch up to res4, a 128-wide 3 + 3 layer transformer, as many queries), so that the
# methods compare iteration for iteration:
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/conditional_detr.py
from ..common.models.conditional_detr_r50 import model
from .detr import dataloader, lr_multiplier, optimizer, train
from .detr import model as detr

from sam_detr.config.quickstart import like_quickstart_detr

like_quickstart_detr(model, detr, model.transformer.encoder, model.transformer.decoder)

train.output_dir = "./output/quickstart_conditional_detr"

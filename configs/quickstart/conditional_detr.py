# Conditional DETR on the main job: the quickstart DETR's data, optimiser, schedule and size (ResNet-18 with
# BatchNorm from scratch up to res4, a 128-wide 3 + 3 layer transformer, as many queries), so that the
# methods compare iteration for iteration:
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/conditional_detr.py
from ..common.models.conditional_detr_r50 import model
from .detr import dataloader, lr_multiplier, optimizer, train
from .detr import model as detr

model.backbone = detr.backbone
model.in_features = detr.in_features
model.num_queries = detr.num_queries
for part in (model.transformer.encoder, model.transformer.decoder):
    part.layer.update(
        d_model=detr.transformer.d_model,
        nhead=detr.transformer.nhead,
        dim_feedforward=detr.transformer.dim_feedforward,
        dropout=detr.transformer.dropout,
    )
model.transformer.encoder.num_layers = detr.transformer.num_encoder_layers
model.transformer.decoder.num_layers = detr.transformer.num_decoder_layers
model.criterion.num_classes = detr.criterion.num_classes

train.output_dir = "./output/quickstart_conditional_detr"

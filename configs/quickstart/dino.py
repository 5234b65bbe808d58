# DINO on the main job: the quickstart DETR's data, optimiser, schedule and size (ResNet-18 with BatchNorm from
# scratch up to res4, a 128-wide 3 + 3 layer transformer, as many queries), so that the methods compare
# iteration for iteration:
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/dino.py
# Its levels: res4 (stride 16) and one stride-2 level on it. Contrastive denoising as DINO's (label flips 0.5,
# box noise 1.0), with dn_number 10: below 50 the official rule takes it as 20 groups whatever the targets
# (1 to 6 per image here: up to 240 denoising queries besides the 10 matching ones).
from sam_detr.config.quickstart import like_quickstart_detr

from ..common.models.dino_r50 import model
from .detr import dataloader, lr_multiplier, optimizer, train
from .detr import model as detr

like_quickstart_detr(
    model, detr, model.transformer.encoder, model.transformer.decoder, n_levels=len(detr.in_features) + 1
)
model.transformer.num_queries = model.pop("num_queries")  # DINO's queries are its transformer's
model.transformer.proposals.d_model = detr.transformer.d_model
model.denoising.d_model = detr.transformer.d_model
model.denoising.dn_number = 10
model.num_select = 100

train.output_dir = "./output/quickstart_dino"

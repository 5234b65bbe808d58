# MS-DETR on the main job: the quickstart Deformable DETR (the quickstart DETR's data, optimiser, schedule and
# size) with MS-DETR's decoder layers and one-to-many supervision, so that the methods compare iteration for
# iteration:
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/ms_detr.py
from ..common.models.ms_detr_r50 import model
from .deformable_detr import dataloader, lr_multiplier, optimizer, train
from .deformable_detr import model as deformable

for name in ("backbone", "in_features", "num_queries"):
    model[name] = deformable[name]
model.transformer.encoder = deformable.transformer.encoder
model.transformer.decoder.num_layers = deformable.transformer.decoder.num_layers
model.transformer.decoder.layer.update(
    {k: deformable.transformer.decoder.layer[k] for k in ("d_model", "nhead", "dim_feedforward", "dropout", "n_levels")}
)
model.transformer.proposals.d_model = deformable.transformer.proposals.d_model
model.criterion.num_classes = deformable.criterion.num_classes

train.output_dir = "./output/quickstart_ms_detr"

# Deformable DETR on the main job: the quickstart DETR's data, optimiser, schedule and size (ResNet-18 with
# BatchNorm from scratch up to res4, a 128-wide 3 + 3 layer transformer, as many queries), so that the
# methods compare iteration for iteration:
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/deformable_detr.py
# Its levels: res4 (stride 16) and one stride-2 level on it; iterative box refinement and two-stage.
from detectron2.config import LazyCall as L

from sam_detr.config.quickstart import like_quickstart_detr
from sam_detr.modeling.transformer import TwoStageProposals

from ..common.models.deformable_detr_r50 import model
from .detr import dataloader, lr_multiplier, optimizer, train
from .detr import model as detr

like_quickstart_detr(
    model, detr, model.transformer.encoder, model.transformer.decoder, n_levels=len(detr.in_features) + 1,
)
model.transformer.proposals = L(TwoStageProposals)(d_model=detr.transformer.d_model)
model.with_box_refine = True

train.output_dir = "./output/quickstart_deformable_detr"

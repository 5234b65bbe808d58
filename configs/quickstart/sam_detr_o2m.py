# The quickstart SAM-DETR with MS-DETR's one-to-many supervision (the plug-and-play claim): the same model and
# job, and a second loss group on its own predictions, assigned one-to-many (OneToManyMatcher, class weight 2;
# `<loss>_o2m`). SAM-DETR has no one-to-many features of its own, so the group supervises the queries the
# one-to-one Hungarian loss supervises (MS-DETR without its auxiliary FFN and layer reordering).
#   python tools/lazyconfig_train_net.py --config-file configs/quickstart/sam_detr_o2m.py
import copy

from detectron2.config import LazyCall as L

from sam_detr.modeling import LossGroup

from ..common.models.ms_detr_r50 import one_to_many
from .sam_detr import dataloader, lr_multiplier, model, optimizer, train

own_predictions = copy.deepcopy(one_to_many)
own_predictions.key = None
model.criterion.groups = [L(LossGroup)(), own_predictions]

train.output_dir = "./output/quickstart_sam_detr_o2m"

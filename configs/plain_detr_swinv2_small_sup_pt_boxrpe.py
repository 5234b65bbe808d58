# Plain-DETR, SwinV2-S (supervised ImageNet pretraining, window 16, 2 global blocks) with BoxRPB, 12 epochs
# (impiga/Plain-DETR swinv2_small_sup_pt_boxrpe: 46.1 AP): batch 16, AdamW lr 2e-4 (the SwinV2 trunk
# 2e-5, the upsampling layer and the rest 2e-4), weight decay 0.05 except norms, biases and position tables,
# gradient clipping 0.1, linear warm-up over 1000 iterations, drop at epoch 11.
# The official evaluation runs one image per GPU: its additive -100 padding mask costs AP at larger batches;
# model.batch_invariant = True masks padding exactly and computes the features per image.
from detectron2.config import LazyCall as L

from sam_detr.solver import LRFactorByName, WeightDecayFactorByName, param_groups_by_name

from .common.data.coco_detr import dataloader
from .common.models.plain_detr_swinv2_small import model
from .common.optim import AdamW as optimizer
from .common.schedule import warmup_step_lr_multiplier
from .common.train import train

# the official --wd_norm_names: parameters whose name contains one of these get no weight decay (--wd_norm_mult 0)
NO_WEIGHT_DECAY = (
    "norm", "bias", "rpb_mlp", "cpb_mlp", "logit_scale", "relative_position_bias_table", "level_embed",
    "reference_points", "sampling_offsets", "rel_pos",
)
optimizer.params = L(param_groups_by_name)(
    base_lr="${..lr}",
    weight_decay="${..weight_decay}",
    lr_factor_func=L(LRFactorByName)(factors={"backbone.net.": 0.1}),
    weight_decay_factor_func=L(WeightDecayFactorByName)(keys=NO_WEIGHT_DECAY, factor=0.0),
)
optimizer.lr = 2e-4
optimizer.weight_decay = 0.05
dataloader.train.total_batch_size = 16
train.epochs = 12
lr_multiplier = warmup_step_lr_multiplier(lr_drop=11, warmup_iters=1000)
# set init_checkpoint to the SwinV2-S ImageNet-1k checkpoint (swinv2_small_patch4_window16_256_sup_pt.pth,
# the official tools/prepare_pt_model.sh) converted by sam_detr.checkpoint.convert_swinv2_pretrained: it
# initialises the trunk only (its output norm and everything outside it keep their initialisation)
train.init_checkpoint = ""
train.init_checkpoint_partial = {"missing": [r"(?!backbone\.net\.)", r"backbone\.net\.norm\d"], "unexpected": []}
train.output_dir = "./output/plain_detr_swinv2_small_sup_pt_boxrpe"

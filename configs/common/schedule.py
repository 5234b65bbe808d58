# Learning-rate multipliers given in epochs of train.epochs, so they hold at any batch size.
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from sam_detr.solver import warmup_fraction


def step_lr_multiplier(lr_drop: int):
    """The official StepLR: the learning rate drops 10x once `lr_drop` epochs of train.epochs are done."""
    return L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[lr_drop], num_updates="${..train.epochs}")


def warmup_step_lr_multiplier(lr_drop: int, warmup_iters: int):
    """Plain-DETR's per-iteration LambdaLR: linear from 0 over `warmup_iters` iterations, then the step of
    `step_lr_multiplier` (it drops at the first iteration of epoch `lr_drop`, the official code one
    iteration later)."""
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[1.0, 0.1], milestones=[lr_drop], num_updates="${...train.epochs}"
        ),
        warmup_length=L(warmup_fraction)(iterations=warmup_iters, max_iter="${...train.max_iter}"),
        warmup_factor=0.0,
        warmup_method="linear",
    )

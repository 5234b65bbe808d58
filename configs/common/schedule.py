# Learning-rate multipliers given in epochs of train.epochs, so they hold at any batch size.
from detectron2.config import LazyCall as L
from fvcore.common.param_scheduler import MultiStepParamScheduler


def step_lr_multiplier(lr_drop: int):
    """The official StepLR: the learning rate drops 10x once `lr_drop` epochs of train.epochs are done."""
    return L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[lr_drop], num_updates="${..train.epochs}")

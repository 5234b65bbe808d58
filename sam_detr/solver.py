"""Optimizer and schedule helpers used by the LazyConfig files."""
import re
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

__all__ = [
    "LRFactorByName",
    "SwinLayerDecayLRFactor",
    "WeightDecayFactorByName",
    "param_groups_by_name",
    "iterations_per_epoch",
    "warmup_fraction",
]

class LRFactorByName:
    """Learning-rate factor of a parameter, from substrings of its name (first match wins).

    The official repositories give the backbone (`"backbone."`) 0.1 x the learning rate, and Deformable
    DETR also `"reference_points"` and `"sampling_offsets"`. Used as d2's
    `get_default_optimizer_params(lr_factor_func=LRFactorByName({"backbone.": 0.1}))`; a class rather
    than a lambda, so that configs stay serialisable.
    """

    def __init__(self, factors: Dict[str, float]):
        self.factors = dict(factors)

    def __call__(self, param_name: str) -> float:
        for key, factor in self.factors.items():
            if key in param_name:
                return factor
        return 1.0

    def __repr__(self) -> str:
        return f"LRFactorByName({self.factors})"


class SwinLayerDecayLRFactor:
    """Layer-wise learning-rate decay of a Swin trunk, as Plain-DETR's `get_swin_layer_id` (its MIM configs).

    Under `prefix`, the layer id is 0 for `patch_embed`, k + 1 for the k-th block counted across the stages
    (`layers.s.blocks.b`), that of the stage's last block for `layers.s.downsample`, and L + 1 for the rest
    (the output norms), with L = sum(depths) (24 for SwinV2-S); the factor is decay_rate ** (L + 1 - id).
    A name outside the trunk gets `others(name)`, or 1 (the official upsampling layer and the detector).
    A class rather than a lambda, so that configs stay serialisable.
    """

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 18, 2),
        decay_rate: float = 0.9,
        prefix: str = "backbone.net.",
        others: Optional[Callable[[str], float]] = None,
    ):
        self.depths = tuple(depths)
        self.decay_rate = decay_rate
        self.prefix = prefix
        self.others = others

    def layer_id(self, param_name: str) -> int:
        """The layer id of a name under `prefix`."""
        name = param_name[len(self.prefix) :]
        if name.startswith("patch_embed."):
            return 0
        m = re.match(r"^layers\.(\d+)\.(blocks\.(\d+)|downsample)\.", name)
        if m is None:
            if name.startswith("layers."):
                raise ValueError(f"{param_name!r} is neither a block nor a downsample layer of the Swin trunk")
            return sum(self.depths) + 1
        stage = int(m.group(1))
        if m.group(3) is None:
            return sum(self.depths[: stage + 1])
        return sum(self.depths[:stage]) + int(m.group(3)) + 1

    def __call__(self, param_name: str) -> float:
        if not param_name.startswith(self.prefix):
            return 1.0 if self.others is None else self.others(param_name)
        return self.decay_rate ** (sum(self.depths) + 1 - self.layer_id(param_name))

    def __repr__(self) -> str:
        return (
            f"SwinLayerDecayLRFactor(depths={self.depths}, decay_rate={self.decay_rate}, "
            f"prefix={self.prefix!r}, others={self.others!r})"
        )


class WeightDecayFactorByName:
    """Weight-decay factor of a parameter: `factor` if its name contains one of `keys`, else 1.

    Plain-DETR's `--wd_norm_names` with `--wd_norm_mult 0.0` (no decay on norms, biases, position tables and
    logit scales) is one, named in its config (configs/plain_detr_swinv2_small_sup_pt_boxrpe.py). Note that
    the rule reads names: a module named differently from the official one falls on the other side of it.
    """

    def __init__(self, keys: Sequence[str], factor: float = 0.0):
        self.keys = tuple(keys)
        self.factor = factor

    def __call__(self, param_name: str) -> float:
        return self.factor if any(key in param_name for key in self.keys) else 1.0

    def __repr__(self) -> str:
        return f"WeightDecayFactorByName({self.keys}, factor={self.factor})"


def param_groups_by_name(
    model: torch.nn.Module,
    base_lr: float,
    weight_decay: float,
    lr_factor_func: Optional[Callable[[str], float]] = None,
    weight_decay_factor_func: Optional[Callable[[str], float]] = None,
) -> List[Dict[str, Any]]:
    """Optimizer parameter groups with lr = base_lr * lr_factor_func(name) and weight decay = weight_decay *
    weight_decay_factor_func(name), for every trainable parameter (tied ones once, under their first name),
    merged into as few groups as possible by d2's `reduce_param_groups`. d2's `get_default_optimizer_params`
    sets weight decay by module type only; this one does it by name, as the official repositories do.
    """
    from detectron2.solver.build import reduce_param_groups

    params = []
    for name, value in model.named_parameters():
        if not value.requires_grad:
            continue
        lr = base_lr * (1.0 if lr_factor_func is None else lr_factor_func(name))
        wd = weight_decay * (1.0 if weight_decay_factor_func is None else weight_decay_factor_func(name))
        params.append({"params": [value], "lr": lr, "weight_decay": wd})
    return reduce_param_groups(params)


def iterations_per_epoch(num_images: int, total_batch_size: int) -> int:
    """Iterations in one pass over the data; the official loaders drop the last incomplete batch."""
    if total_batch_size <= 0 or num_images < total_batch_size:
        raise ValueError(f"cannot make an epoch of {num_images} images with total batch size {total_batch_size}")
    return num_images // total_batch_size


def warmup_fraction(iterations: int, max_iter: int) -> float:
    """A warm-up of `iterations` iterations as the fraction of training that d2's WarmupParamScheduler takes
    (its `warmup_length`); `max_iter` is interpolated from train.max_iter when the scheduler is built."""
    if max_iter is None or max_iter <= 0:
        raise ValueError(f"a warm-up of {iterations} iterations needs train.max_iter, got {max_iter}")
    return min(1.0, iterations / max_iter)

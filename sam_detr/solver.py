"""Optimizer and schedule helpers used by the LazyConfig files."""
from typing import Dict

__all__ = ["LRFactorByName", "iterations_per_epoch"]


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


def iterations_per_epoch(num_images: int, total_batch_size: int) -> int:
    """Iterations in one pass over the data; the official loaders drop the last incomplete batch."""
    if total_batch_size <= 0 or num_images < total_batch_size:
        raise ValueError(f"cannot make an epoch of {num_images} images with total batch size {total_batch_size}")
    return num_images // total_batch_size

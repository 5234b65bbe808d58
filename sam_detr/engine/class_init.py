"""Initialising a model for a dataset's classes from a checkpoint trained on other classes.

Which weights depend on the classes is found from the model's config, for any method: the model is built
again on the meta device with one class more (every `num_classes` field of its config), and the weights
whose shape changes are the class-dependent ones, along the axis that grew (the class heads of every
decoder layer, a two-stage encoder's head, DETR's K + 1 logits, ...). No weight is named here.

`ClassInit` fits a checkpoint to the model along those axes (`train.reinit_classes=True`; the loading is
`StrictCheckpointer.load_partial(..., class_init=)`): every other weight loads strictly, and each class-dependent weight starts from the model's own initialisation (the
method's: focal heads' prior-probability bias, DETR's default Linear) with, copied from the checkpoint,
the rows of the dataset's classes whose names are among the checkpoint's classes (compared without case),
the rows past the classes (DETR's "no object") and the leading rows that are no class's (a two-stage proposal
head's "object" logit: the model's `class_agnostic_rows`), the last two by position. One log line lists the
weights, why, and the rows kept. Without re-initialisation, a checkpoint whose class count is not the model's is refused, naming both.
"""
import copy
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from detectron2.config import instantiate
from omegaconf import DictConfig, ListConfig

from .checkpointer import CheckpointError

__all__ = ["class_dimensions", "set_num_classes", "ClassInit"]

logger = logging.getLogger(__name__)


def set_num_classes(model_cfg, num_classes: int) -> int:
    """Sets every `num_classes` field of a model config node (recursively) to `num_classes`; returns how
    many there were."""
    count = 0
    if isinstance(model_cfg, DictConfig):
        for key in list(model_cfg.keys()):
            if key == "num_classes":
                model_cfg[key] = num_classes
                count += 1
            else:
                count += set_num_classes(model_cfg._get_node(key), num_classes)
    elif isinstance(model_cfg, ListConfig):
        count += sum(set_num_classes(item, num_classes) for item in model_cfg._iter_ex(resolve=False))
    return count


def class_dimensions(model_cfg, model: torch.nn.Module) -> Dict[str, int]:
    """The class-dependent entries of `model`'s state dict (`model` built from `model_cfg` at
    `model.num_classes` classes) -> the axis that holds one row per class."""
    probe_cfg = copy.deepcopy(model_cfg)
    if set_num_classes(probe_cfg, model.num_classes + 1) == 0:
        raise ValueError("the model config has no num_classes field: its class-dependent weights cannot be found")
    with torch.device("meta"):
        probe = instantiate(probe_cfg).state_dict()
    dims = {}
    for key, value in model.state_dict().items():
        grown = probe[key].shape
        if grown == value.shape:
            continue
        axes = [d for d, (a, b) in enumerate(zip(value.shape, grown)) if a != b]
        if len(value.shape) != len(grown) or len(axes) != 1 or grown[axes[0]] != value.shape[axes[0]] + 1:
            raise ValueError(
                f"{key}: shape {tuple(value.shape)} at {model.num_classes} classes, {tuple(grown)} at one more: "
                "not one row per class along one axis"
            )
        dims[key] = axes[0]
    return dims


def _normalised(name: str) -> str:
    return " ".join(str(name).lower().split())


@dataclass
class ClassInit:
    """Fits a checkpoint's class-dependent weights to the model's classes (see the module docstring).

    Args:
        dims: `class_dimensions` of the model.
        classes: the model's class names (its train dataset's), in class order.
        dataset: the train dataset's name, for the messages.
        reinit: re-initialise the class-dependent weights (keeping the rows found by name); False: the
            checkpoint must have the model's class count.
        agnostic: key of `dims` -> how many of its first rows are no class's (the model's `class_agnostic_rows`):
            kept by position on re-initialisation, whatever the names.
    """

    dims: Mapping[str, int]
    classes: Sequence[str]
    dataset: str
    reinit: bool
    agnostic: Mapping[str, int] = field(default_factory=dict)

    def __call__(
        self,
        path: str,
        fresh: Mapping[str, torch.Tensor],
        source: Mapping[str, torch.Tensor],
        source_classes: Optional[Sequence[str]],
    ) -> Dict[str, torch.Tensor]:
        """The values the class-dependent weights get (or CheckpointError where the checkpoint's classes do
        not fit and re-initialisation was not asked for).

        Args:
            path: of the checkpoint, for the messages.
            fresh: the model's own initial values of its class-dependent weights (the keys of `dims`).
            source: the checkpoint's values of those keys (the ones it has).
            source_classes: the checkpoint's class names (from its metadata), or None where unknown.
        Returns:
            key -> value for every class-dependent key of the checkpoint.
        """
        present = [k for k in self.dims if k in source]
        if not present:
            return {}
        num_classes = len(self.classes)
        extra = {k: fresh[k].shape[d] - num_classes for k, d in self.dims.items()}
        counts = {k: source[k].shape[self.dims[k]] - extra[k] for k in present}
        source_count = counts[present[0]]
        if any(c != source_count for c in counts.values()):
            raise CheckpointError(f"checkpoint {path}: its class-dependent weights disagree on the class count: {counts}")
        if source_classes is not None and len(source_classes) != source_count:
            logger.warning(
                f"checkpoint {path} names {len(source_classes)} classes but its heads have {source_count}: "
                "its class names are ignored"
            )
            source_classes = None
        if not self.reinit:
            self._check_same_classes(path, present, source, source_count, source_classes)
            return {k: source[k] for k in present}
        index = {}
        for j, name in enumerate(source_classes or []):
            index.setdefault(_normalised(name), j)
        kept = [(i, index[_normalised(c)]) for i, c in enumerate(self.classes) if _normalised(c) in index]
        values = {}
        for key in present:
            dim, value = self.dims[key], fresh[key].detach().to("cpu", copy=True)
            rows = torch.as_tensor(source[key]).to(value.dtype)
            first = self.agnostic.get(key, 0)
            value.narrow(dim, 0, first).copy_(rows.narrow(dim, 0, first))
            for i, j in kept:
                if i >= first:
                    value.narrow(dim, i, 1).copy_(rows.narrow(dim, j, 1))
            if extra[key]:
                value.narrow(dim, num_classes, extra[key]).copy_(rows.narrow(dim, source_count, extra[key]))
            values[key] = value
        logger.info(self._describe(path, present, source_count, source_classes, kept, extra))
        return values

    def _check_same_classes(self, path, present, source, source_count, source_classes) -> None:
        num_classes = len(self.classes)
        if source_count != num_classes:
            key = present[0]
            raise CheckpointError(
                f"checkpoint {path} predicts {source_count} classes ({key} {tuple(source[key].shape)}), the model "
                f"{num_classes}, the classes of dataset {self.dataset!r} ({_names(self.classes)}): set "
                "train.reinit_classes=True to re-initialise its class-dependent weights for these classes (those "
                "found by name among the checkpoint's keep their rows)"
            )
        if source_classes is not None and [_normalised(c) for c in source_classes] != [
            _normalised(c) for c in self.classes
        ]:
            first = next(i for i, (a, b) in enumerate(zip(source_classes, self.classes)) if _normalised(a) != _normalised(b))
            logger.warning(
                f"checkpoint {path} has {source_count} classes as the model, but not the classes of dataset "
                f"{self.dataset!r} (class {first}: {source_classes[first]!r} there, {self.classes[first]!r} here): "
                "its class rows are loaded as they are; train.reinit_classes=True matches them by name"
            )

    def _describe(self, path, present, source_count, source_classes, kept: List, extra: Mapping[str, int]) -> str:
        keys = ", ".join(f"{k} (axis {self.dims[k]})" for k in present)
        kept_names = [self.classes[i] for i, _ in kept]
        missing = [c for c in self.classes if c not in kept_names]
        if source_classes is None:
            rows = "the checkpoint names no classes, so no class row was kept"
        else:
            rows = (f"kept the checkpoint's rows of {len(kept)} of the {len(self.classes)} classes, matched by name: "
                    f"{_names(kept_names) or 'none'}; new: {_names(missing) or 'none'}")
        past = max(extra.values(), default=0)
        if past:
            rows += f"; kept the {past} row(s) past the classes (no-object)"
        agnostic = [f"{k} rows 0..{n - 1}" if n > 1 else f"{k} row 0" for k, n in self.agnostic.items() if k in present]
        if agnostic:
            rows += f"; kept by position the rows that are no class's (a proposal head's object score): {_names(agnostic)}"
        return (
            f"init checkpoint {path}: re-initialised {len(present)} class-dependent weight(s) as the model "
            f"initialises them, since train.reinit_classes=True and the model predicts the {len(self.classes)} "
            f"classes of dataset {self.dataset!r} (the checkpoint {source_count}): {keys}; {rows}"
        )


def _names(names: Sequence[str]) -> str:
    return ", ".join(str(n) for n in names)

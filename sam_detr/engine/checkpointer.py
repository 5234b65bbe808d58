"""Checkpoint loading that refuses what would silently leave a model wrong.

Detectron2's `DetectionCheckpointer` loads what matches and only warns about the rest: a checkpoint of
another model evaluates randomly initialised layers and reports an AP. `StrictCheckpointer` is that
checkpointer, but a load fails, listing the first offending keys, when the checkpoint leaves model
weights unfilled ("missing"), holds weights the model does not use ("unexpected") or holds a weight of
another shape, unless the load is declared partial: `load_partial(path, partial)` with
`partial = {"missing": [regex, ...], "unexpected": [regex, ...]}` accepts the keys matched (from their
start) by a pattern. That is what `train.init_checkpoint_partial` declares for the initialisation of a
training (the ImageNet backbone: `IMAGENET_BACKBONE`); evaluation, inference and `--resume` load
strictly. A missing file raises FileNotFoundError; a file that cannot be read (truncated, not a
checkpoint) raises CheckpointError naming it.

A checkpoint written here or by tools/convert_official_weights.py describes its model under the key
"sam_detr" (`checkpoint_metadata`: meta-architecture, config file, class names). A load refuses a
checkpoint of another meta-architecture naming both (before any key is compared, unless the load is
declared partial), and a refusal names the checkpoint's config and the model's where known. The class
names let a fine-tuning on other classes keep the rows of the classes it shares with the checkpoint
(`load_partial(..., class_init=)`, see class_init.py).
"""
import os
import re
from typing import Dict, List, Optional, Sequence

import torch

from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys

__all__ = ["StrictCheckpointer", "CheckpointError", "IMAGENET_BACKBONE", "METADATA_KEY", "checkpoint_metadata"]

# An ImageNet backbone initialises a detector: every weight outside the backbone is new, and
# detectron2://ImageNetPretrained/torchvision/R-50.pkl (d2's conversion of torchvision's ResNet-50) also
# holds torchvision's classifier, as stem.fc.*
IMAGENET_BACKBONE = {"missing": [r"(?!backbone\.)"], "unexpected": [r"stem\.fc\."]}

# keys named in an error, of each kind
_NAMED_KEYS = 5
# where a checkpoint describes its model
METADATA_KEY = "sam_detr"


def checkpoint_metadata(model: torch.nn.Module, config_file: Optional[str] = None,
                        thing_classes: Optional[Sequence[str]] = None) -> Dict:
    """What a checkpoint says of its model: the meta-architecture, the config file (its name) and the class
    names, where known."""
    model = getattr(model, "module", model)  # DDP
    return {
        "architecture": type(model).__name__,
        "config": os.path.basename(config_file) if config_file else None,
        "thing_classes": list(thing_classes) if thing_classes is not None else None,
    }


def _describe(metadata: Dict) -> str:
    config = f" (config {metadata['config']})" if metadata.get("config") else ""
    return f"{metadata.get('architecture') or 'an unknown model'}{config}"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model."""


def _first(keys: Sequence[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _NAMED_KEYS else ""
    return ", ".join(keys[:_NAMED_KEYS]) + more


class StrictCheckpointer(DetectionCheckpointer):
    """`DetectionCheckpointer` whose loads are strict unless declared partial (see the module docstring)."""

    def __init__(self, model, save_dir: str = "", metadata: Optional[Dict] = None, **kwargs):
        """`metadata`: `checkpoint_metadata` of the model, saved with every checkpoint (default: its
        meta-architecture)."""
        super().__init__(model, save_dir, **kwargs)
        self.metadata = metadata or checkpoint_metadata(self.model)
        self._partial: Dict[str, List[str]] = {}
        self._class_init = None
        self._path = ""

    def save(self, name: str, **kwargs) -> None:
        super().save(name, **{METADATA_KEY: self.metadata, **kwargs})

    def load(self, path: str, *args, **kwargs):
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path} not found")
        self._path = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # d2 resets it only after a load that succeeded, and asserts it is reset at the next
            self._parsed_url_during_load = None

    def load_partial(self, path: str, partial: Optional[Dict[str, Sequence[str]]] = None, class_init=None):
        """Loads the model's weights only (no trainer state) from `path`, accepting the missing and unexpected
        keys that the patterns of `partial` match; an empty path loads nothing. `class_init` (a
        `sam_detr.engine.class_init.ClassInit`) fits the class-dependent weights to the model's classes."""
        partial = dict(partial or {})
        unknown = set(partial) - {"missing", "unexpected"}
        if unknown:
            raise ValueError(f"a partial load declares 'missing' and 'unexpected' patterns, not {sorted(unknown)}")
        self._partial = {kind: list(partial.get(kind) or []) for kind in ("missing", "unexpected")}
        self._class_init = class_init
        try:
            return self.load(path, checkpointables=[])
        finally:
            self._partial, self._class_init = {}, None

    def _load_file(self, filename: str):
        try:
            return super()._load_file(filename)
        except Exception as e:  # torch.load and pickle raise many types, none naming the file
            raise CheckpointError(
                f"checkpoint {self._path or filename} cannot be read (truncated, or not a checkpoint?): "
                f"{type(e).__name__}: {e}"
            ) from e

    def _load_model(self, checkpoint):
        if not isinstance(checkpoint, dict):
            return super()._load_model(checkpoint)
        source = checkpoint.get(METADATA_KEY) or {}
        declared_partial = any(self._partial.values())
        theirs, mine = source.get("architecture"), self.metadata.get("architecture")
        if theirs and mine and theirs != mine and not declared_partial:
            raise CheckpointError(
                f"checkpoint {self._path} is a checkpoint of another method: {_describe(source)}; the model is "
                f"{_describe(self.metadata)}. Initialise it from a checkpoint of its own method (converted with "
                "tools/convert_official_weights.py and this model's config)"
            )
        class_keys = dict(self._class_init.dims) if self._class_init is not None else {}
        state = self.model.state_dict()
        fresh = {k: state[k].detach().clone() for k in class_keys}
        class_source = {k: checkpoint["model"][k] for k in class_keys if k in checkpoint["model"]}
        incompatible = super()._load_model(checkpoint)
        order = {k: i for i, k in enumerate(state)}
        missing = sorted(_filter_reused_missing_keys(self.model, incompatible.missing_keys), key=order.get)
        problems = []
        # the class-dependent weights the checkpoint has are class_init's; those it lacks are missing
        shapes = {k: (a, b) for k, a, b in incompatible.incorrect_shapes if k not in class_source}
        missing = [k for k in missing if k not in shapes and k not in class_source and not self._declared("missing", k)]
        unexpected = [k for k in incompatible.unexpected_keys if not self._declared("unexpected", k)]
        wrong_shapes = [f"{k} {tuple(a)} in the checkpoint, {tuple(b)} in the model"
                        for k, (a, b) in shapes.items() if not self._declared("missing", k)]
        if missing:
            problems.append(f"{len(missing)} model weight(s) missing from it: {_first(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} weight(s) the model does not have: {_first(unexpected)}")
        if wrong_shapes:
            problems.append(f"{len(wrong_shapes)} weight(s) of another shape: {_first(wrong_shapes)}")
        if problems:
            hint = (
                "for a training initialised from part of it, declare which keys in train.init_checkpoint_partial"
                if self._partial
                else "only a training's initialisation may be partial (train.init_checkpoint_partial)"
            )
            raise CheckpointError(f"checkpoint {self._path} does not fit the model: " + "; ".join(problems)
                                  + self._origins(source, missing, unexpected) + f" ({hint})")
        if self._class_init is not None:
            values = self._class_init(self._path, fresh, class_source, source.get("thing_classes"))
            # into the model's tensors (load_state_dict with these keys alone would reset d2's FrozenBatchNorm2d
            # statistics: without version metadata it takes the missing ones for a legacy checkpoint's)
            with torch.no_grad():
                for key, value in values.items():
                    state[key].copy_(value)
            # what class_init filled is not "skipped" or "missing" for d2's warnings
            incompatible = incompatible._replace(
                missing_keys=[k for k in incompatible.missing_keys if k not in class_source],
                incorrect_shapes=[t for t in incompatible.incorrect_shapes if t[0] not in class_source],
            )
        return incompatible

    def _origins(self, source: Dict, missing: Sequence[str], unexpected: Sequence[str]) -> str:
        """What the refused checkpoint and the model are, where known; or a guess from the keys."""
        if source.get("architecture"):
            return f". The checkpoint is of {_describe(source)}, the model {_describe(self.metadata)}"
        if missing and unexpected:
            return (". It lacks weights of the model and holds others: a checkpoint of another method or variant? "
                    f"The model is {_describe(self.metadata)}")
        return ""

    def _declared(self, kind: str, key: str) -> bool:
        return any(re.match(pattern, key) for pattern in self._partial.get(kind, ()))

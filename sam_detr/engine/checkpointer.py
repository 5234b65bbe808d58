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
"""
import os
import re
from typing import Dict, List, Optional, Sequence

from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys

__all__ = ["StrictCheckpointer", "CheckpointError", "IMAGENET_BACKBONE"]

# An ImageNet backbone initialises a detector: every weight outside the backbone is new, and
# detectron2://ImageNetPretrained/torchvision/R-50.pkl (d2's conversion of torchvision's ResNet-50) also
# holds torchvision's classifier, as stem.fc.*
IMAGENET_BACKBONE = {"missing": [r"(?!backbone\.)"], "unexpected": [r"stem\.fc\."]}

# keys named in an error, of each kind
_NAMED_KEYS = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model."""


def _first(keys: Sequence[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _NAMED_KEYS else ""
    return ", ".join(keys[:_NAMED_KEYS]) + more


class StrictCheckpointer(DetectionCheckpointer):
    """`DetectionCheckpointer` whose loads are strict unless declared partial (see the module docstring)."""

    def __init__(self, model, save_dir: str = "", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self._partial: Dict[str, List[str]] = {}
        self._path = ""

    def load(self, path: str, *args, **kwargs):
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path} not found")
        self._path = path
        return super().load(path, *args, **kwargs)

    def load_partial(self, path: str, partial: Optional[Dict[str, Sequence[str]]] = None):
        """Loads the model's weights only (no trainer state) from `path`, accepting the missing and unexpected
        keys that the patterns of `partial` match; an empty path loads nothing."""
        partial = dict(partial or {})
        unknown = set(partial) - {"missing", "unexpected"}
        if unknown:
            raise ValueError(f"a partial load declares 'missing' and 'unexpected' patterns, not {sorted(unknown)}")
        self._partial = {kind: list(partial.get(kind) or []) for kind in ("missing", "unexpected")}
        try:
            return self.load(path, checkpointables=[])
        finally:
            self._partial = {}

    def _load_file(self, filename: str):
        try:
            return super()._load_file(filename)
        except Exception as e:  # torch.load and pickle raise many types, none naming the file
            raise CheckpointError(
                f"checkpoint {self._path or filename} cannot be read (truncated, or not a checkpoint?): "
                f"{type(e).__name__}: {e}"
            ) from e

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        if not isinstance(checkpoint, dict):
            return incompatible
        order = {k: i for i, k in enumerate(self.model.state_dict())}
        missing = sorted(_filter_reused_missing_keys(self.model, incompatible.missing_keys), key=order.get)
        problems = []
        shapes = {k: (a, b) for k, a, b in incompatible.incorrect_shapes}
        missing = [k for k in missing if k not in shapes and not self._declared("missing", k)]
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
                                  + f" ({hint})")
        return incompatible

    def _declared(self, kind: str, key: str) -> bool:
        return any(re.match(pattern, key) for pattern in self._partial.get(kind, ()))

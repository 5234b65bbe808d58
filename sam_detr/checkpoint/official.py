"""Which converter turns a model's official checkpoints into its weights: a registry keyed by
meta-architecture, and the conversion of a checkpoint for the model of a LazyConfig file
(tools/convert_official_weights.py is its command line)."""
import argparse
from typing import Callable, Dict, NamedTuple, Optional, Sequence

import torch
from torch import nn

from ..modeling import DETR, MSDETR, SAMDETR, ConditionalDETR, DeformableDETR, PlainDETR
from .conditional_detr import convert_conditional_detr, convert_detr
from .deformable_detr import convert_deformable_detr
from .ms_detr import convert_ms_detr
from .plain_detr import convert_plain_detr
from .sam_detr import convert_sam_detr
from .strict import dataset_class_ids

__all__ = ["OfficialConverter", "OFFICIAL_CONVERTERS", "official_converter", "load_official", "convert_official"]


class OfficialConverter(NamedTuple):
    convert: Callable  # (official state dict, target state dict, class_ids=None) -> converted state dict
    repository: str  # the official repository, owner/name


# meta-architecture -> the converter of its official checkpoints; a model takes the entry of its own class or,
# failing that, of its nearest base class (one line per new method)
OFFICIAL_CONVERTERS: Dict[type, OfficialConverter] = {
    DETR: OfficialConverter(convert_detr, "facebookresearch/detr"),
    ConditionalDETR: OfficialConverter(convert_conditional_detr, "Atten4Vis/ConditionalDETR"),
    SAMDETR: OfficialConverter(convert_sam_detr, "ZhangGongjie/SAM-DETR"),
    DeformableDETR: OfficialConverter(convert_deformable_detr, "fundamentalvision/Deformable-DETR"),
    MSDETR: OfficialConverter(convert_ms_detr, "Atten4Vis/MS-DETR"),
    PlainDETR: OfficialConverter(convert_plain_detr, "impiga/Plain-DETR"),
}


def official_converter(model: nn.Module) -> OfficialConverter:
    """The registered converter of the model's meta-architecture (or its nearest registered base)."""
    for cls in type(model).__mro__:
        if cls in OFFICIAL_CONVERTERS:
            return OFFICIAL_CONVERTERS[cls]
    known = sorted(c.__name__ for c in OFFICIAL_CONVERTERS)
    raise ValueError(f"no official-checkpoint converter for {type(model).__name__}; registered: {known}")


def load_official(path: str) -> dict:
    """The "model" dict of an official checkpoint (its "args" is an argparse.Namespace)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load and pickle raise many types, none naming the file
        raise ValueError(f"{path} cannot be read (truncated, or not a checkpoint?): {type(e).__name__}: {e}") from e
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint's dict")
    return checkpoint.get("model", checkpoint)


def convert_official(
    config_file: str, source: str, dataset: str = "coco_2017_val", opts: Sequence[str] = (),
    log: Optional[Callable[[str], None]] = None,
) -> dict:
    """A Detectron2 checkpoint ({"model": weights, ...}) for the model of a LazyConfig file (with `opts`
    overrides) from the official checkpoint at `source`, strictly (see `convert_strict`); the class heads keep
    the rows of `dataset`'s classes when the model predicts as many classes as it has."""
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))
    with torch.device("meta"):  # only the names and shapes of the model are needed
        model = instantiate(cfg.model)
    converter = official_converter(model)
    ids = dataset_class_ids(dataset)
    class_ids = ids if model.num_classes == len(ids) else None
    weights = converter.convert(load_official(source), model.state_dict(), class_ids=class_ids)
    if log is not None:
        log(f"converted {len(weights)} tensors" + (f", class heads mapped to {dataset}" if class_ids else ""))
    return {"model": weights, "__author__": f"{converter.repository} (converted by sam_detr)", "matching_heuristics": False}

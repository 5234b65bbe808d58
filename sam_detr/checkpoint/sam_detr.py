"""Official SAM-DETR checkpoints (ZhangGongjie/SAM-DETR) -> `SAMDETR` weights.

The official names are kept except for the backbone (torchvision -> d2 ResNet names) and the Semantics
Aligner, which is a submodule here:

    backbone.0.body.<torchvision name>                     backbone.<d2 name>
    transformer.decoder.layers.i.{point1,point2,attn1,attn2}.*
                                                          transformer.decoder.layers.i.semantics_aligner.*
    transformer.decoder.bbox_embed.*                       dropped: the same tensors as bbox_embed.*
"""
import re
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from .resnet import torchvision_resnet_key

__all__ = ["convert_sam_detr", "sam_detr_key", "dataset_class_ids"]

_TIED_PREFIX = "transformer.decoder.bbox_embed."
_ALIGNER = re.compile(r"^(transformer\.decoder\.layers\.\d+\.)(point1|point2|attn1|attn2)\.")


def sam_detr_key(key: str) -> str:
    """The name in `SAMDETR` of one official key (not a tied duplicate); KeyError for an unknown backbone key."""
    if key.startswith("backbone.0.body."):
        return "backbone." + torchvision_resnet_key(key[len("backbone.0.body.") :])
    return _ALIGNER.sub(r"\1semantics_aligner.\2.", key)


def dataset_class_ids(dataset_name: str = "coco_2017_val") -> List[int]:
    """The dataset's category id of each contiguous class, from its Detectron2 metadata: for COCO, the
    official class index of each of Detectron2's 80 classes."""
    import detectron2.data.datasets  # noqa: F401  (registers the builtin datasets' metadata)
    from detectron2.data import MetadataCatalog

    mapping = MetadataCatalog.get(dataset_name).thing_dataset_id_to_contiguous_id
    return [dataset_id for dataset_id, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def convert_sam_detr(
    official: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    class_ids: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """Renames an official state dict for the model whose state dict is `target`, strictly.

    Every official key must be used, every target key filled, with equal shapes; otherwise a KeyError or
    ValueError names the first offending key. The tied `transformer.decoder.bbox_embed.*` duplicates
    are checked to equal `bbox_embed.*` and dropped.

    Args:
        official: the "model" dict of an official checkpoint.
        target: the state dict of the `SAMDETR` to load into (only names and shapes are read).
        class_ids: the official class index of each target class (see `dataset_class_ids`): the rows of
            every `class_embed` kept, in this order. None copies the class heads as they are.
    Returns:
        the converted state dict, in the official order.
    """
    converted: Dict[str, torch.Tensor] = {}
    for key, value in official.items():
        if key.startswith(_TIED_PREFIX):
            head_key = key[len("transformer.decoder.") :]
            if head_key not in official:
                raise KeyError(f"official key {key!r} has no {head_key!r} to be tied to")
            if not torch.equal(value, official[head_key]):
                raise ValueError(f"official key {key!r} differs from {head_key!r}, which it should be tied to")
            continue
        try:
            name = sam_detr_key(key)
        except KeyError:
            raise KeyError(f"official key {key!r} is not a torchvision ResNet weight") from None
        if name not in target:
            raise KeyError(f"official key {key!r} (as {name!r}) is not in the target model")
        if class_ids is not None and name.startswith("class_embed."):
            if max(class_ids) >= value.shape[0]:
                raise ValueError(
                    f"official key {key!r} has {value.shape[0]} classes, class_ids go up to {max(class_ids)}"
                )
            value = value[list(class_ids)]
        if value.shape != target[name].shape:
            raise ValueError(
                f"official key {key!r} (as {name!r}) has shape {tuple(value.shape)}, "
                f"the target model {tuple(target[name].shape)}"
            )
        converted[name] = value
    missing = [k for k in target if k not in converted]
    if missing:
        raise KeyError(f"target key {missing[0]!r} is not filled by the official checkpoint ({len(missing)} missing)")
    return converted

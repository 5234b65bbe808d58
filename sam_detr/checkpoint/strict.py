"""The strict conversion loop that every official-checkpoint converter plugs its key mapping into."""
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from .resnet import torchvision_resnet_key

__all__ = ["convert_strict", "KeyRules", "FFN_RULES", "CLASS_HEAD", "dataset_class_ids", "official_class_names"]

# every official model's classifier: `class_embed.weight` / `class_embed.{i}.weight` and biases
CLASS_HEAD = re.compile(r"^class_embed\.(\d+\.)?(weight|bias)$")

# The FFN of the official layers (`linear1`, `linear2`, and `norm2` in encoder layers, `norm3` in decoder
# layers) is one `FFN` submodule here (sam_detr.layers.FFN).
FFN_RULES: Tuple[Tuple[str, str], ...] = (
    (r"^(.*\.layers\.\d+\.)linear([12])\.", r"\1ffn.linear\2."),
    (r"^(.*encoder\.layers\.\d+\.)norm2\.", r"\1ffn.norm."),
    (r"^(.*decoder\.layers\.\d+\.)norm3\.", r"\1ffn.norm."),
)


def dataset_class_ids(dataset_name: str = "coco_2017_val") -> List[int]:
    """The dataset's category id of each contiguous class, from its Detectron2 metadata: for COCO, the
    official class index of each of Detectron2's 80 classes."""
    import detectron2.data.datasets  # noqa: F401  (registers the builtin datasets' metadata)
    from detectron2.data import MetadataCatalog

    mapping = MetadataCatalog.get(dataset_name).thing_dataset_id_to_contiguous_id
    return [dataset_id for dataset_id, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def official_class_names(dataset_name: str, num_classes: int) -> Optional[List[str]]:
    """The class of each row of an official class head of `num_classes` rows, which the dataset's category
    ids index (COCO: 91 rows, "N/A" where COCO has no category, as the official code names them); None if
    the dataset's ids do not fit in that many rows."""
    import detectron2.data.datasets  # noqa: F401  (registers the builtin datasets' metadata)
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(dataset_name)
    names = {dataset_id: meta.thing_classes[k] for dataset_id, k in meta.thing_dataset_id_to_contiguous_id.items()}
    if max(names) >= num_classes:
        return None
    return [names.get(i, "N/A") for i in range(num_classes)]


class KeyRules:
    """Official key -> this package's key: the ResNet backbone renamed to d2's names, then every
    `(pattern, replacement)` rule that matches applied in order (`re.sub`); other keys are kept.

    Args:
        rules: regular-expression rules.
        backbone_prefix: the official prefix of torchvision ResNet weights (e.g. "backbone.0.body.");
            its keys become "backbone.<d2 name>", and a key that is not a ResNet weight raises KeyError.
    """

    def __init__(self, rules: Iterable[Tuple[str, str]] = (), backbone_prefix: Optional[str] = "backbone.0.body."):
        self.rules = [(re.compile(p), r) for p, r in rules]
        self.backbone_prefix = backbone_prefix

    def __call__(self, key: str) -> str:
        if self.backbone_prefix and key.startswith(self.backbone_prefix):
            name = key[len(self.backbone_prefix) :]
            try:
                return "backbone." + torchvision_resnet_key(name)
            except KeyError:
                raise KeyError(f"official key {key!r} is not a torchvision ResNet weight") from None
        for pattern, replacement in self.rules:
            key = pattern.sub(replacement, key)
        return key


def convert_strict(
    official: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    rename: Callable[[str], str],
    tied: Mapping[str, str] = {},
    class_ids: Optional[Sequence[int]] = None,
    class_head: "re.Pattern" = CLASS_HEAD,
    class_rows: Mapping[str, Sequence[int]] = {},
) -> Dict[str, torch.Tensor]:
    """Renames an official state dict for the model whose state dict is `target`, strictly.

    Every official key must be used, every target key filled, with equal shapes; otherwise a KeyError or
    ValueError names the first offending key. Official keys under a `tied` prefix are duplicates of the
    keys under the prefix they map to (the official models register their heads twice, e.g.
    `transformer.decoder.bbox_embed.` -> `bbox_embed.`): they are checked to be equal and dropped.

    Args:
        official: the "model" dict of an official checkpoint.
        target: the state dict of the model to load into (only names and shapes are read; the meta device
            will do). Its own tied keys (a head shared by several layers appears under each) are filled
            from the official key of the same name.
        rename: official key -> target key (e.g. a `KeyRules`); KeyError for a key that cannot be mapped.
        tied: official duplicate prefix -> the official prefix it duplicates.
        class_ids: the official class index of each target class (see `dataset_class_ids`): the rows of every
            class head (`class_head`) kept, in this order. None copies the class heads as they are.
        class_head: the official keys whose first dimension is the class.
        class_rows: official key prefix -> the rows kept there instead of `class_ids`, for a class head whose
            rows are not the dataset's classes (the two-stage proposal head keeps its objectness row 0 first).
    Returns:
        the converted state dict, in the official order.
    """
    converted: Dict[str, torch.Tensor] = {}
    for key, value in official.items():
        prefix = next((p for p in tied if key.startswith(p)), None)
        if prefix is not None:
            original = tied[prefix] + key[len(prefix) :]
            if original not in official:
                raise KeyError(f"official key {key!r} has no {original!r} to be tied to")
            if not torch.equal(value, official[original]):
                raise ValueError(f"official key {key!r} differs from {original!r}, which it should be tied to")
            continue
        name = rename(key)
        if name not in target:
            raise KeyError(f"official key {key!r} (as {name!r}) is not in the target model")
        if class_ids is not None and class_head.match(key):
            rows = next((r for p, r in class_rows.items() if key.startswith(p)), class_ids)
            if max(rows) >= value.shape[0]:
                raise ValueError(f"official key {key!r} has {value.shape[0]} classes, class_ids go up to {max(rows)}")
            value = value[list(rows)]
        if value.shape != target[name].shape:
            raise ValueError(
                f"official key {key!r} (as {name!r}) has shape {tuple(value.shape)}, "
                f"the target model {tuple(target[name].shape)}"
            )
        if name in converted:
            raise KeyError(f"official key {key!r} (as {name!r}) fills a target key already filled")
        converted[name] = value
    missing = [k for k in target if k not in converted]
    if missing:
        raise KeyError(f"target key {missing[0]!r} is not filled by the official checkpoint ({len(missing)} missing)")
    return converted

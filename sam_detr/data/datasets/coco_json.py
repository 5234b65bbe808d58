"""Your own COCO-format datasets: registered from config fields, and the class names a model is built for.

A dataset node of the configs (`dataloader.train.dataset`, `dataloader.test.dataset`: `checked_dataset_dicts`)
has `names`, and optionally `json_file` and `image_root`: given those two, `names` is registered as a COCO
instances json with its images (Detectron2's `register_coco_instances`), when the config is instantiated, so
that no Python file is needed:

    dataloader.train.dataset.names=mine_train dataloader.train.dataset.json_file=mine/train.json \
        dataloader.train.dataset.image_root=mine/images

The registration reads the json's `categories` once, so that the class names (`thing_classes`, in category-id
order, as Detectron2's `load_coco_json` orders them) are known before the data is loaded: the model configs
build their class heads for `num_classes_of(<the train dataset>)` classes. Category ids need not be contiguous
(1..K): they are mapped to 0..K-1 in id order, as Detectron2 maps them, and the log says so.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Union

import detectron2.data.datasets  # noqa: F401  (registers Detectron2's builtin datasets)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils.file_io import PathManager

__all__ = [
    "DatasetNotRegisteredError",
    "register_coco_json",
    "dataset_names",
    "require_registered",
    "dataset_classes",
    "num_classes_of",
]

logger = logging.getLogger(__name__)

# the datasets Detectron2 registers itself (COCO, LVIS, Cityscapes, VOC, ...): named apart from the others
# in an error, so that a user's own datasets stand out among its ~100
_DETECTRON2_BUILTIN = frozenset(DatasetCatalog.list())
_NAMED_BUILTIN = 5


class DatasetNotRegisteredError(KeyError):
    """A dataset name that neither Detectron2, sam_detr nor the config registered."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def require_registered(name: str) -> None:
    """Raises DatasetNotRegisteredError naming the registered datasets unless `name` is one of them."""
    registered = DatasetCatalog.list()
    if name in registered:
        return
    own = sorted(n for n in registered if n not in _DETECTRON2_BUILTIN)
    builtin = sorted(n for n in registered if n in _DETECTRON2_BUILTIN)
    examples = [n for n in ("coco_2017_train", "coco_2017_val") if n in builtin] or builtin[:_NAMED_BUILTIN]
    raise DatasetNotRegisteredError(
        f"dataset {name!r} is not registered. Registered: {', '.join(own) or 'none besides the builtin ones'}; "
        f"and {len(builtin)} of Detectron2's builtin datasets ({', '.join(examples)}, ...). Register a "
        "COCO-format json with its images from the config: <dataset node>.names=NAME <dataset node>.json_file=FILE "
        "<dataset node>.image_root=DIR (e.g. dataloader.train.dataset.json_file=...)"
    )


def _read_categories(name: str, json_file: str) -> List[Dict]:
    """The json's categories sorted by id, each with an integer "id" and a "name"."""
    if not PathManager.isfile(json_file):
        raise FileNotFoundError(f"dataset {name!r}: json_file {json_file} does not exist")
    with PathManager.open(json_file) as f:
        try:
            coco = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"dataset {name!r}: {json_file} is not valid json: {e}") from None
    categories = coco.get("categories") if isinstance(coco, dict) else None
    if not categories:
        raise ValueError(f"dataset {name!r}: {json_file} has no 'categories': the model would have no class to predict")
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or "name" not in category:
            raise ValueError(
                f"dataset {name!r}: {json_file}, categories[{index}] = {category!r}: a category needs an integer "
                "'id' and a 'name'"
            )
    return sorted(categories, key=lambda c: c["id"])


def register_coco_json(name: str, json_file: str, image_root: str) -> None:
    """Registers `name` as the COCO instances json `json_file` with its images under `image_root`, with its
    class names and category-id mapping in the metadata. Registering a name again with the same files does
    nothing; with other files it is an error (Detectron2's catalogs keep one definition per name)."""
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if (meta.get("json_file"), meta.get("image_root")) == (json_file, image_root):
            return
        raise ValueError(
            f"dataset {name!r} is already registered with json_file={meta.get('json_file')!r}, "
            f"image_root={meta.get('image_root')!r}; choose another name for {json_file}"
        )
    if not PathManager.isdir(image_root):
        raise FileNotFoundError(f"dataset {name!r}: image_root {image_root} is not a folder")
    categories = _read_categories(name, json_file)
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"dataset {name!r}: {json_file} lists category id(s) {duplicated} more than once")
    classes = [str(c["name"]) for c in categories]
    register_coco_instances(name, {}, json_file, image_root)
    MetadataCatalog.get(name).set(
        thing_classes=classes, thing_dataset_id_to_contiguous_id={i: k for k, i in enumerate(ids)}
    )
    if ids != list(range(1, len(ids) + 1)):
        mapping = ", ".join(f"{i} -> {k} ({c})" for k, (i, c) in enumerate(zip(ids, classes)))
        logger.info(
            f"dataset {name!r}: the category ids of {json_file} are not 1..{len(ids)}: mapped to the contiguous "
            f"classes 0..{len(ids) - 1} in id order, {mapping}"
        )
    logger.info(f"registered dataset {name!r}: {json_file}, images under {image_root}, {len(classes)} classes")


def dataset_names(
    names: Union[str, Sequence[str]], json_file: Optional[str] = None, image_root: Optional[str] = None
) -> List[str]:
    """The fields of a config's dataset node -> its dataset names as a list, registered from `json_file` and
    `image_root` when given (one name then)."""
    names = [names] if isinstance(names, str) else list(names)
    if json_file is None and image_root is None:
        return names
    if json_file is None or image_root is None:
        given, absent = ("json_file", "image_root") if image_root is None else ("image_root", "json_file")
        raise ValueError(f"dataset {names}: {given} is set but not {absent}; a COCO-format dataset needs both")
    if len(names) != 1:
        raise ValueError(f"json_file and image_root register one dataset, but names lists {len(names)}: {names}")
    register_coco_json(names[0], json_file, image_root)
    return names


def dataset_classes(
    names: Union[str, Sequence[str]], json_file: Optional[str] = None, image_root: Optional[str] = None
) -> List[str]:
    """The class names of the dataset(s) `names` (registered first from `json_file` and `image_root` when
    given; see the module docstring). Several datasets must have the same classes."""
    names = dataset_names(names, json_file, image_root)
    per_name = {}
    for name in names:
        require_registered(name)
        meta = MetadataCatalog.get(name)
        classes = meta.get("thing_classes")
        if classes is None and meta.get("json_file") is not None:
            # registered with Detectron2's register_coco_instances, whose classes come with the first load
            classes = [str(c["name"]) for c in _read_categories(name, meta.json_file)]
        if classes is None:
            raise ValueError(f"dataset {name!r} has no class names (thing_classes) in its metadata, nor a json_file")
        per_name[name] = list(classes)
    first = per_name[names[0]]
    for name, classes in per_name.items():
        if classes != first:
            raise ValueError(f"datasets {names[0]!r} and {name!r} have different classes: {first} and {classes}")
    return first


def num_classes_of(
    names: Union[str, Sequence[str]], json_file: Optional[str] = None, image_root: Optional[str] = None
) -> int:
    """The number of classes of the dataset(s) `names` (see `dataset_classes`): what the model configs build
    their class heads for, from the train dataset."""
    return len(dataset_classes(names, json_file, image_root))

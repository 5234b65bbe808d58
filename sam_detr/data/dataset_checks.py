"""What a detection dataset may hold, and what happens to the rest, before a model sees it.

`checked_dataset_dicts` is Detectron2's `get_detection_dataset_dicts` (datasets registered the d2 way,
e.g. with `register_coco_instances`) followed by `check_dataset_dicts`, which goes once over every image
and annotation and applies a policy to each problem, with a count in the log
(`skipped 3 annotations with zero area in image 42 (.../42.jpg)`), or raises an error naming the dataset,
the image id, the file, the annotation and the field. Nothing is dropped silently:

problem                                         policy                      field
an image file that does not exist               error | skip the image      missing_images
an annotation that cannot be right: a missing   error | skip it             bad_annotations
  field, a box that is not 4 finite numbers, a
  negative width or height, a category id that
  is not a class of the dataset
a box with zero width or height, or with none   skip it | error             empty_boxes
  left inside the image once clipped to it
a box partly outside the image                  clipped to it (counted)
an image without annotations                    kept, trained on as background (counted), unless filter_empty

In evaluation (`evaluation=True`) nothing can be skipped: `COCOEvaluator` reads the ground truth from the
dataset's json, so an image or annotation skipped here would still be counted there and the AP would be
wrong. The two skip policies are then refused, and empty boxes are reported but left in place.

What Detectron2's `load_coco_json` does before this runs, each with a message of its own: a category id
that is not among the json's categories raises a KeyError, re-raised here naming the image and the
annotation; annotations whose image is not in the json are dropped with a warning giving their count;
instances whose segmentation has no valid polygon are dropped with a warning giving their count.

Problems that show only when an image is read (a corrupt or truncated file, a size that disagrees with the
dataset's width and height, a grayscale or 4-channel image) are the mapper's (`DetrDatasetMapper`).
"""
import json
import logging
import math
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import filter_images_with_only_crowd_annotations, print_instances_class_histogram
from detectron2.data.detection_utils import check_metadata_consistency
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

from .datasets.coco_json import dataset_names, require_registered

__all__ = ["InvalidAnnotation", "annotation_box", "check_dataset_dicts", "checked_dataset_dicts", "describe_image"]

logger = logging.getLogger(__name__)

SUPPORTED_BOX_MODES = (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
POLICIES = ("error", "skip")
# images named one by one in the log for each kind of problem; the rest are counted together
_NAMED_IMAGES = 10


class InvalidAnnotation(ValueError):
    """An annotation that cannot be right; the message names the field."""


def describe_image(dataset_dict: Dict) -> str:
    return f"image_id={dataset_dict.get('image_id')!r} ({dataset_dict.get('file_name')})"


def annotation_box(anno: Dict, num_classes: Optional[int] = None) -> np.ndarray:
    """The box of one annotation as float32 (x0, y0, x1, y1) pixels, converted as the official DETR code
    converts it (in float32, x1 = x0 + w), so that it is bit-identical to the official targets.

    Raises InvalidAnnotation, naming the field, for a missing field, an unsupported box mode, a box that is
    not 4 finite numbers, a negative width or height, or a category id that is not an integer in
    [0, num_classes) (num_classes None: any non-negative integer).
    """
    for key in ("bbox", "bbox_mode", "category_id"):
        if key not in anno:
            raise InvalidAnnotation(f"no '{key}' field")
    mode = anno["bbox_mode"]
    if mode not in SUPPORTED_BOX_MODES:
        raise InvalidAnnotation(f"unsupported bbox_mode {mode!r}; expected one of {list(SUPPORTED_BOX_MODES)}")
    try:
        values = [float(v) for v in anno["bbox"]]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidAnnotation(f"bbox must be 4 finite numbers, got {anno['bbox']!r}")
    xywh = mode == BoxMode.XYWH_ABS
    width, height = (values[2], values[3]) if xywh else (values[2] - values[0], values[3] - values[1])
    if width < 0 or height < 0:
        raise InvalidAnnotation(f"bbox {anno['bbox']!r} ({BoxMode(mode).name}) has a negative width or height")
    category = anno["category_id"]
    if not isinstance(category, (int, np.integer)) or isinstance(category, bool) or category < 0:
        raise InvalidAnnotation(f"category_id must be a non-negative integer, got {category!r}")
    if num_classes is not None and category >= num_classes:
        raise InvalidAnnotation(f"category_id {category} is not a class of the dataset (it has {num_classes})")
    box = np.asarray(values, dtype=np.float32)
    if xywh:
        box[2:] += box[:2]
    return box


class _Report:
    """Counts of one kind of problem, per image, logged once at the end."""

    def __init__(self, what: str, outcome: str, why: str = ""):
        self.what, self.outcome, self.why = what, outcome, why
        self.per_image: Dict[str, int] = defaultdict(int)
        self.first_reason: Dict[str, str] = {}

    def add(self, image: str, reason: str = "") -> None:
        self.per_image[image] += 1
        self.first_reason.setdefault(image, reason)

    def log(self, name: str) -> None:
        if not self.per_image:
            return
        for i, (image, count) in enumerate(self.per_image.items()):
            reason = f": {self.first_reason[image]}" if self.first_reason[image] else self.why
            line = f"{self.outcome} {count} {self.what} in {image}{reason}"
            logger.log(logging.WARNING if i < _NAMED_IMAGES else logging.DEBUG, f"[{name}] {line}")
        total = sum(self.per_image.values())
        images = len(self.per_image)
        logger.warning(f"[{name}] {self.outcome} {total} {self.what} in {images} image(s) in all{self.why}")


def check_dataset_dicts(
    dataset_dicts: List[Dict],
    *,
    name: str = "dataset",
    num_classes: Optional[int] = None,
    missing_images: str = "error",
    bad_annotations: str = "error",
    empty_boxes: str = "skip",
    evaluation: bool = False,
) -> List[Dict]:
    """Applies the policies of the module docstring to Detectron2 dataset dicts.

    Args:
        dataset_dicts: Detectron2's format; "annotations" absent means an unannotated dataset (no check).
        name: of the dataset, in the messages.
        num_classes: category ids must be below it (None: not checked).
        missing_images, bad_annotations: "error" or "skip"; empty_boxes: "skip" or "error".
        evaluation: the dicts feed an evaluation: nothing is skipped (see the module docstring).
    Returns:
        new dicts, without what was skipped; the boxes are left as they are (the mapper clips them).
    """
    for field, value in (("missing_images", missing_images), ("bad_annotations", bad_annotations),
                         ("empty_boxes", empty_boxes)):
        if value not in POLICIES:
            raise ValueError(f"{field} must be one of {POLICIES}, got {value!r}")
        if evaluation and field != "empty_boxes" and value == "skip":
            raise ValueError(
                f"{field}='skip' is for training: COCOEvaluator reads the ground truth of what would be "
                "skipped from the dataset's json, so the AP would be wrong"
            )
    left_in_json = ("kept", ", as COCOEvaluator reads them from the json") if evaluation else None
    reports = {
        "missing": _Report("missing image file(s)", "skipped"),
        "bad": _Report("invalid annotation(s)", "skipped"),
        "zero": _Report("annotation(s) with zero area", *(left_in_json or ("skipped",))),
        "outside": _Report("annotation(s) wholly outside the image", *(left_in_json or ("skipped",))),
        "clipped": _Report("annotation(s) partly outside the image", *(left_in_json or ("clipped",))),
    }
    checked, num_unannotated = [], 0
    for record in dataset_dicts:
        image = describe_image(record)
        where = f"{name}: {image}"
        if not PathManager.isfile(record["file_name"]):
            if missing_images == "error":
                raise FileNotFoundError(f"{where}: the image file does not exist")
            reports["missing"].add(image)
            continue
        for key in ("height", "width"):
            value = record.get(key)
            if value is not None and (not isinstance(value, (int, np.integer)) or value <= 0):
                raise ValueError(f"{where}: '{key}' must be a positive integer, got {value!r}")
        if "annotations" not in record:
            checked.append(record)
            continue
        kept = []
        for index, anno in enumerate(record["annotations"]):
            try:
                box = annotation_box(anno, num_classes)
            except InvalidAnnotation as e:
                if bad_annotations == "error":
                    raise ValueError(f"{where}, annotation {index}: {e}") from None
                reports["bad"].add(image, f"annotation {index}: {e}")
                continue
            kind = _box_kind(box, record.get("width"), record.get("height"))
            if kind in ("zero", "outside") and not evaluation:
                if empty_boxes == "error":
                    area = "zero area" if kind == "zero" else "no area inside the image"
                    raise ValueError(f"{where}, annotation {index}: bbox {anno['bbox']!r} has {area}")
                reports[kind].add(image)
                continue
            if kind is not None:
                reports[kind].add(image)
            kept.append(anno)
        num_unannotated += not kept
        checked.append(dict(record, annotations=kept))
    for report in reports.values():
        report.log(name)
    if num_unannotated:
        use = "evaluated" if evaluation else "trained on as background"
        logger.info(f"[{name}] {num_unannotated} image(s) without annotations: {use}")
    return checked


def _box_kind(box: np.ndarray, width, height) -> Optional[str]:
    """"zero" (no width or height), "outside" (none left once clipped to the image), "clipped" (some left, but
    not all) or None (inside the image). The image size unknown, only "zero" is told."""
    if not (box[2] > box[0] and box[3] > box[1]):
        return "zero"
    if width is None or height is None:
        return None
    clipped = np.clip(box, 0, np.array([width, height, width, height], dtype=np.float32))
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        return "outside"
    return None if np.array_equal(clipped, box) else "clipped"


def checked_dataset_dicts(
    names: Union[str, Sequence[str]],
    *,
    json_file: Optional[str] = None,
    image_root: Optional[str] = None,
    filter_empty: bool = False,
    missing_images: str = "error",
    bad_annotations: str = "error",
    empty_boxes: str = "skip",
    evaluation: bool = False,
) -> List[Dict]:
    """Detectron2's `get_detection_dataset_dicts(names, filter_empty)` with `check_dataset_dicts` applied to
    each dataset (see the module docstring for the policies). filter_empty removes the images left without
    a non-crowd annotation after the check (d2 logs how many). With `json_file` and `image_root`, `names` (one
    name) is first registered as that COCO-format dataset (`sam_detr.data.datasets.register_coco_json`).
    A name that is not registered, or a dataset left without any image, is an error naming it."""
    names = dataset_names(names, json_file, image_root)
    dicts = []
    for name in names:
        require_registered(name)
        try:
            loaded = DatasetCatalog.get(name)
        except KeyError as e:
            raise _unknown_category_error(name) or e
        where = _json_of(name)
        if len(loaded) == 0:
            raise ValueError(f"dataset {name!r}{where} lists no image")
        meta = MetadataCatalog.get(name)
        num_classes = len(meta.thing_classes) if meta.get("thing_classes") is not None else None
        checked = check_dataset_dicts(
            loaded,
            name=name,
            num_classes=num_classes,
            missing_images=missing_images,
            bad_annotations=bad_annotations,
            empty_boxes=empty_boxes,
            evaluation=evaluation,
        )
        if not checked:
            raise ValueError(
                f"dataset {name!r}{where} has no usable image: the files of all its {len(loaded)} images are "
                f"missing (image_root {meta.get('image_root', '?')})"
            )
        dicts += checked
    if "annotations" in dicts[0]:
        if filter_empty:
            dicts = filter_images_with_only_crowd_annotations(dicts)
            if not dicts:
                raise ValueError(
                    f"dataset(s) {names}: no image has a non-crowd annotation, and filter_empty=True removes "
                    "every image without one"
                )
        classes = MetadataCatalog.get(names[0]).get("thing_classes")
        if classes is not None:
            check_metadata_consistency("thing_classes", names)
            print_instances_class_histogram(dicts, classes)
    return dicts


def _json_of(name: str) -> str:
    json_file = MetadataCatalog.get(name).get("json_file")
    return f" ({json_file})" if json_file else ""


def _unknown_category_error(name: str) -> Optional[ValueError]:
    """The error naming the first annotation of the dataset's json whose category id is not among its
    categories (what d2's load_coco_json raises a KeyError for, without the image), or None."""
    meta = MetadataCatalog.get(name)
    if meta.get("json_file") is None or name not in DatasetCatalog.list():
        return None
    with PathManager.open(meta.json_file) as f:
        coco = json.load(f)
    categories = {c["id"] for c in coco.get("categories", [])}
    files = {i["id"]: i.get("file_name") for i in coco.get("images", [])}
    for anno in coco.get("annotations", []):
        if anno.get("category_id") not in categories and anno.get("image_id") in files:
            return ValueError(
                f"{name}: image_id={anno['image_id']!r} ({files[anno['image_id']]}), annotation id "
                f"{anno.get('id')!r}: category_id {anno.get('category_id')!r} is not among the categories of "
                f"{meta.json_file} ({sorted(categories)})"
            )
    return None

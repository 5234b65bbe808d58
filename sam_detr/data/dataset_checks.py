"""What a detection dataset may hold before a model sees it: the checks of the data path.

`checked_dataset_dicts` is what the data configs load datasets with, for training and for evaluation (see
configs/common/data/coco_detr.py). For each dataset it

1. checks the json of a dataset registered with one (Detectron2's `register_coco_instances`, the builtin
   COCO datasets, the shapes datasets: metadata `json_file`) with `check_coco_json`, before Detectron2 reads
   it, so that nothing is merged or dropped silently: a json that Detectron2's loader must not read
   (`LOADER_BLOCKING`: duplicate ids, missing fields, ...) is refused there, naming its problems;
2. loads the dataset through Detectron2's `DatasetCatalog` (its registered loader, e.g. `load_coco_json`);
3. checks the loaded dicts (`check_records`): image files, sizes, annotations and boxes.

Every problem goes into one `Findings` per dataset, with the outcome its policy gives it (the kinds and the
policies: dataset_policies.py): the errors are raised together, as one `DatasetError` naming the dataset,
its json and, for each kind, the first entries (image id and file, annotation, field); what is skipped,
clipped, kept or noted is logged with a count (`skipped 3 annotation(s) with zero area in image_id=42
(.../42.jpg)`). Nothing is dropped silently. A dataset with no image, or none left once the policies
applied, is an error naming it and why.

Problems that show only when an image is read (a corrupt or truncated file, a size that disagrees with the
dataset's width and height, a grayscale or 4-channel image) are the mapper's (`DetrDatasetMapper`), under
its `bad_images` policy; tools/check_dataset.py checks them all before training (image_checks.py).
"""
import logging
import math
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import filter_images_with_only_crowd_annotations, print_instances_class_histogram
from detectron2.data.detection_utils import check_metadata_consistency
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

from .coco_json_checks import LOADER_BLOCKING, CocoEntries, check_coco_json, read_coco_json
from .dataset_policies import KINDS, DatasetError, Findings, Policies

__all__ = [
    "InvalidAnnotation",
    "annotation_box",
    "check_dataset_dicts",
    "check_dataset_json",
    "check_records",
    "checked_dataset_dicts",
    "crowd_flag",
    "dataset_findings",
    "describe_image",
    "require_images",
]

logger = logging.getLogger(__name__)

SUPPORTED_BOX_MODES = (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
# The pattern of (x0, y0, x1, y1) boxes written into COCO's (x, y, width, height): read as COCO boxes, nearly
# all have width >= x and height >= y (as x1 > x0, y1 > y0; about 12% of real COCO boxes do), and many reach
# past the image's right or bottom edge (as x0 + x1 > W), while as corners they lie inside it.
_XYXY_ORDERED = 0.95  # at least this share of the boxes has width >= x and height >= y
_XYXY_PAST_EDGE = 0.1  # and at least this share reaches past the image but lies inside it as corners
_EDGE_TOLERANCE = 1.0  # pixels past the image that labelling tools' rounding gives good boxes


class InvalidAnnotation(ValueError):
    """An annotation that cannot be right; the message names the field."""


def describe_image(dataset_dict: Dict) -> str:
    return f"image_id={dataset_dict.get('image_id')!r} ({dataset_dict.get('file_name')})"


def describe_annotation(index: int, anno: Dict) -> str:
    """"annotation 3" (its index in the image), with its json id where the dict has it."""
    return f"annotation {index}" + (f" (id {anno['id']!r})" if "id" in anno else "")


def annotation_box(anno: Dict, num_classes: Optional[int] = None) -> np.ndarray:
    """The box of one annotation as float32 (x0, y0, x1, y1) pixels, converted as the official DETR code
    converts it (in float32, x1 = x0 + w), so that it is bit-identical to the official targets.

    Raises InvalidAnnotation, naming the field, for a missing field, an unsupported box mode, a box that is
    not 4 finite numbers, a negative width or height, or a category id that is not an integer in
    [0, num_classes) (num_classes None: any non-negative integer).
    """
    if "bbox" not in anno:
        polygons = " (it has a 'segmentation' only: boxes are not derived from polygons)" if anno.get(
            "segmentation") else ""
        raise InvalidAnnotation(f"no 'bbox' field{polygons}")
    for key in ("bbox_mode", "category_id"):
        if key not in anno:
            raise InvalidAnnotation(f"no '{key}' field")
    mode = anno["bbox_mode"]
    if mode not in SUPPORTED_BOX_MODES:
        raise InvalidAnnotation(f"unsupported bbox_mode {mode!r}; expected one of {list(SUPPORTED_BOX_MODES)}")
    try:
        values = [float(v) for v in anno["bbox"]]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(map(math.isfinite, values)):
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


def crowd_flag(anno: Dict) -> bool:
    """Whether the annotation is a crowd region (COCO's iscrowd, 0 when absent). Raises InvalidAnnotation for
    another value: anything but 0 would otherwise be taken for a crowd, and left out of training."""
    crowd = anno.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, (bool, float)):
        raise InvalidAnnotation(f"iscrowd must be 0 or 1, got {crowd!r}")
    return crowd == 1


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
    """`check_records` on Detectron2 dataset dicts, with the policies given (see dataset_policies.py); logs
    what the policies did and raises a DatasetError listing the problems they refuse.

    Args:
        dataset_dicts: Detectron2's format; "annotations" absent means an unannotated dataset (no check).
        name: of the dataset, in the messages.
        num_classes: category ids must be below it (None: not checked).
        missing_images, bad_annotations: "error" or "skip"; empty_boxes: "skip" or "error".
        evaluation: the dicts feed an evaluation: nothing is skipped.
    Returns:
        new dicts, without what was skipped; the boxes are left as they are (the mapper clips them).
    """
    findings = Findings(name, Policies(missing_images, bad_annotations, empty_boxes, evaluation=evaluation))
    checked = check_records(dataset_dicts, findings, num_classes)
    findings.log()
    findings.raise_if_refused()
    return checked


def check_records(dataset_dicts: List[Dict], findings: Findings, num_classes: Optional[int] = None) -> List[Dict]:
    """Checks every dataset dict into `findings`, under its policies: the image file exists, the width and
    height are positive integers, every annotation is valid (`annotation_box`, `crowd_flag`) and its box has
    area inside the image; and whether the boxes look like (x0, y0, x1, y1) written as (x, y, w, h).

    Returns new dicts without what the policies skip (errors are left to the caller: `raise_if_refused`).
    """
    policies = findings.policies
    xyxy = _XyxyPattern()
    checked = []
    for record in dataset_dicts:
        image = describe_image(record)
        if not PathManager.isfile(record["file_name"]):
            findings.add("missing_image", image, "the image file does not exist")
            if policies.skips("missing_image"):
                continue
        width, height = record.get("width"), record.get("height")
        for key, value in (("width", width), ("height", height)):
            if value is not None and (not isinstance(value, (int, np.integer)) or value <= 0):
                findings.add("bad_size", image, f"'{key}' must be a positive integer, got {value!r}")
                width = height = None
        if "annotations" not in record:
            checked.append(record)
            continue
        kept = []
        for index, anno in enumerate(record["annotations"]):
            try:
                crowd_flag(anno)
                box = annotation_box(anno, num_classes)
            except InvalidAnnotation as e:
                findings.add("bad_annotation", image, f"{describe_annotation(index, anno)}: {e}")
                continue
            xyxy.add(anno, width, height, image, index)
            kind = _box_kind(box, width, height)
            if kind is not None:
                problem = _BOX_KINDS[kind].format(width, height)
                findings.add(kind, image, f"{describe_annotation(index, anno)}: bbox {anno['bbox']!r} {problem}")
                if policies.skips(kind):
                    continue
            kept.append(anno)
        if not kept:
            findings.add("background", image)
        checked.append(dict(record, annotations=kept))
    xyxy.report(findings)
    return checked


_BOX_KINDS = {"zero_area": "has zero area", "outside": "has no area inside the {}x{} image",
              "clipped": "reaches outside the {}x{} image"}


def _box_kind(box: np.ndarray, width, height) -> Optional[str]:
    """"zero_area" (no width or height), "outside" (none left once clipped to the image), "clipped" (some left,
    but not all) or None (inside the image). The image size unknown, only "zero_area" is told."""
    x0, y0, x1, y1 = box.tolist()  # in Python floats: the same comparisons, without numpy's per-call cost
    if not (x1 > x0 and y1 > y0):
        return "zero_area"
    if width is None or height is None:
        return None
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return None
    if min(x1, width) > max(x0, 0) and min(y1, height) > max(y0, 0):
        return "clipped"
    return "outside"


class _XyxyPattern:
    """Counts, over the valid (x, y, w, h) boxes of images of known size, those with w >= x and h >= y, and
    collects those that reach past the image but lie inside it read as corners; `report` records the latter
    as "xyxy_boxes" when the dataset shows the pattern (see _XYXY_ORDERED)."""

    def __init__(self):
        self.boxes = self.ordered = 0
        self.suspects = []

    def add(self, anno: Dict, width, height, image: str, index: int) -> None:
        if anno["bbox_mode"] != BoxMode.XYWH_ABS or width is None or height is None:
            return
        x, y, w, h = (float(v) for v in anno["bbox"])
        self.boxes += 1
        self.ordered += w >= x and h >= y
        past_edge = x + w > width + _EDGE_TOLERANCE or y + h > height + _EDGE_TOLERANCE
        if past_edge and x < w <= width + _EDGE_TOLERANCE and y < h <= height + _EDGE_TOLERANCE:
            self.suspects.append((image, f"{describe_annotation(index, anno)}: bbox {anno['bbox']!r} reaches "
                                         f"({x + w:g}, {y + h:g}) past the {width}x{height} image; as (x0, y0, x1, "
                                         "y1) it lies inside"))

    def report(self, findings: Findings) -> None:
        if (self.boxes and self.ordered >= _XYXY_ORDERED * self.boxes
                and len(self.suspects) >= _XYXY_PAST_EDGE * self.boxes):
            for image, detail in self.suspects:
                findings.add("xyxy_boxes", image, detail)


def check_dataset_json(name: str, findings: Findings) -> Optional[CocoEntries]:
    """Reads and checks the json of a dataset registered with one (metadata `json_file`) into `findings`;
    returns its entries that passed (None: no json, or unreadable)."""
    json_file = MetadataCatalog.get(name).get("json_file")
    if json_file is None:
        return None
    coco = read_coco_json(json_file, findings)
    return None if coco is None else check_coco_json(coco, json_file, findings)


def dataset_findings(name: str, policies: Policies) -> Findings:
    """An empty `Findings` for the registered dataset `name`, its json named as its source."""
    if name not in DatasetCatalog.list():
        raise KeyError(f"dataset {name!r} is not registered; registered: {', '.join(sorted(DatasetCatalog.list()))}")
    meta = MetadataCatalog.get(name)
    json_file, image_root = meta.get("json_file"), meta.get("image_root")
    # a dataset registered in the user's own code is not registered in the tool's process: name its files
    command = f"python tools/check_dataset.py --json {json_file} --image-root {image_root}" if (
        json_file and image_root) else ""
    if command and policies.evaluation:
        command += " --evaluation"
    return Findings(name, policies, source=f"json {json_file}" if json_file else "", check_command=command)


def require_images(dicts: List[Dict], findings: Findings, why: str) -> None:
    """Records "no_usable_images" when `dicts` is empty, saying what left none (`why`, and the skipped kinds)."""
    if dicts:
        return
    skipped = [f"{findings.count(k)} {KINDS[k].what} skipped ({KINDS[k].policy}='skip')"
               for k in findings.kinds("skipped")]
    findings.add("no_usable_images", findings.name, "; ".join([why] + skipped))


def checked_dataset_dicts(
    names: Union[str, Sequence[str]],
    *,
    filter_empty: bool = False,
    missing_images: str = "error",
    bad_annotations: str = "error",
    empty_boxes: str = "skip",
    evaluation: bool = False,
) -> List[Dict]:
    """The dataset dicts of the registered datasets `names`, checked (see the module docstring; the policies:
    dataset_policies.py). filter_empty removes the images left without a non-crowd annotation after the
    checks (d2 logs how many). Raises a DatasetError listing the problems that the policies refuse."""
    names = [names] if isinstance(names, str) else list(names)
    policies = Policies(missing_images, bad_annotations, empty_boxes, evaluation=evaluation)
    dicts = []
    for name in names:
        findings = dataset_findings(name, policies)
        check_dataset_json(name, findings)
        if LOADER_BLOCKING.intersection(findings.kinds()):
            findings.raise_if_refused()
        loaded = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        num_classes = len(meta.thing_classes) if meta.get("thing_classes") is not None else None
        if not loaded:
            findings.add("no_images", name, "its loader returned no image")
        checked = check_records(loaded, findings, num_classes)
        if loaded:
            require_images(checked, findings, f"all {len(loaded)} image(s) were skipped")
        findings.log()
        findings.raise_if_refused()
        if filter_empty and checked and "annotations" in checked[0]:
            checked = filter_images_with_only_crowd_annotations(checked)
            require_images(checked, findings, "no image has a non-crowd annotation (filter_empty=True)")
            findings.raise_if_refused()
        dicts += checked
    if "annotations" in dicts[0]:
        classes = MetadataCatalog.get(names[0]).get("thing_classes")
        if classes is not None:
            check_metadata_consistency("thing_classes", names)
            print_instances_class_histogram(dicts, classes)
    return dicts

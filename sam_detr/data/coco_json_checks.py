"""The checks of a COCO-format json itself, before Detectron2's loader reads it.

pycocotools and Detectron2's `load_coco_json` index the json by id and trust it: two images with one id are
merged (the second silently takes the first one's annotations), a missing field raises a KeyError that names
neither the file nor the entry, an empty 'categories' a `min()` error. `check_coco_json` goes once over the
json and records every problem of it in a `Findings` (kinds and policies: dataset_policies.py), each naming
the entry (image id and file name, annotation id and image id, category id and name) and the field; the
json file is named by the findings' source. What Detectron2 loads as it is (a NaN or a string in a bbox, a
missing bbox, iscrowd 2, ...) is the dataset checks' (dataset_checks.py), on the loaded dicts.

`json_records` turns the entries that passed into Detectron2's dataset dicts for the fields the dataset
checks read (with each annotation's json id), so that tools/check_dataset.py can run those checks on a json
that Detectron2 could not load as it is.
"""
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

from .dataset_policies import Findings

__all__ = ["LOADER_BLOCKING", "CocoEntries", "check_coco_json", "json_records", "read_coco_json"]

# the kinds of problem after which Detectron2's loader must not read the json: it would fail on it, naming
# neither the file nor the entry, or merge entries silently
LOADER_BLOCKING = frozenset({
    "json_unreadable", "no_categories", "bad_category", "duplicate_category", "bad_image_entry",
    "duplicate_image_id", "no_images", "bad_annotation_entry", "duplicate_annotation_id",
    "unknown_category",
})

_LISTS = ("images", "annotations", "categories")
# ids listed one by one in a message; longer lists are summarised
_LISTED_IDS = 12


@dataclass
class CocoEntries:
    """The entries of a json that passed its checks: images by id, annotations, categories' names by id."""

    images: Dict[int, dict] = field(default_factory=dict)
    annotations: List[dict] = field(default_factory=list)
    categories: Dict[int, str] = field(default_factory=dict)


def read_coco_json(json_file: str, findings: Findings) -> Optional[dict]:
    """The json's content, or None with the problem recorded (not JSON, not COCO's lists). A json that does not
    exist is a path to fix, not bad data: FileNotFoundError, naming the dataset."""
    try:
        with PathManager.open(json_file, "rb") as f:
            coco = json.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"dataset {findings.name!r}: its json {json_file} does not exist") from e
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        findings.add("json_unreadable", json_file, f"not valid JSON: {type(e).__name__}: {e}")
        return None
    if not isinstance(coco, dict):
        findings.add("json_unreadable", json_file, f"its top level is a {type(coco).__name__}, not an object with "
                                                   "the lists 'images', 'annotations' and 'categories'")
        return None
    missing = [key for key in _LISTS if not isinstance(coco.get(key), list)]
    if missing:
        what = ", ".join(f"{k!r} ({'absent' if k not in coco else type(coco[k]).__name__})" for k in missing)
        findings.add("json_unreadable", json_file, f"no list {what}: a COCO instances json has 'images', "
                                                   "'annotations' and 'categories'")
        return None
    return coco


def check_coco_json(coco: dict, json_file: str, findings: Findings) -> CocoEntries:
    """Records every problem of the json `coco` (read by `read_coco_json`) in `findings`; returns the entries
    that passed."""
    entries = CocoEntries()
    _check_categories(coco["categories"], json_file, findings, entries)
    image_ids = _check_images(coco["images"], json_file, findings, entries)
    _check_annotations(coco["annotations"], findings, entries, image_ids)
    return entries


def _is_int(value) -> bool:
    return type(value) is int  # JSON's integers; not a bool (true/false), not a float


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _listed(ids: List[int]) -> str:
    if len(ids) <= _LISTED_IDS:
        return str(ids)
    return f"[{', '.join(map(str, ids[:_LISTED_IDS // 2]))}, ..., {ids[-1]}] ({len(ids)} ids)"


def _objects(entries: list, key: str, kind: str, findings: Findings) -> Iterator[dict]:
    """The entries of the json's list `key` that are objects; the others are recorded as `kind`."""
    for index, entry in enumerate(entries):
        if isinstance(entry, dict):
            yield entry
        else:
            findings.add(kind, f"{key}[{index}]", f"not an object: {entry!r}")


def _check_categories(categories: list, json_file: str, findings: Findings, entries: CocoEntries) -> None:
    if not categories:
        findings.add("no_categories", json_file, "'categories' is empty: the dataset has no class to learn")
    names: Dict[str, int] = {}
    for category in _objects(categories, "categories", "bad_category", findings):
        cid, name = category.get("id"), category.get("name")
        subject = f"category id={cid!r} ({name!r})"
        if not _is_int(cid):
            findings.add("bad_category", subject, f"'id' must be an integer, got {cid!r}")
        elif not isinstance(name, str) or not name:
            findings.add("bad_category", subject, f"'name' must be a non-empty string, got {name!r}")
        elif cid in entries.categories:
            findings.add("duplicate_category", f"category id={cid}",
                         f"categories {entries.categories[cid]!r} and {name!r} share it")
        elif name in names:
            findings.add("duplicate_category", f"category name {name!r}",
                         f"categories id={names[name]} and id={cid} share it")
        else:
            entries.categories[cid], names[name] = name, cid
    ids = sorted(entries.categories)
    if ids and ids != list(range(len(ids))):
        findings.add("category_ids_mapped", "categories",
                     f"ids {_listed(ids)} are classes 0..{len(ids) - 1}, in id order")


def _check_images(images: list, json_file: str, findings: Findings, entries: CocoEntries) -> set:
    """Fills entries.images; returns every integer id of an image entry, usable or not (so that its annotations
    are not called orphans)."""
    if not images:
        findings.add("no_images", json_file, "'images' is empty")
    ids, by_file = set(), {}
    for image in _objects(images, "images", "bad_image_entry", findings):
        iid, file_name = image.get("id"), image.get("file_name")
        subject = f"image id={iid!r} ({file_name})"
        problem = _image_field_problem(image)
        if _is_int(iid):
            ids.add(iid)
        if problem:
            findings.add("bad_image_entry", subject, problem)
            continue
        if iid in entries.images:
            first = entries.images[iid]["file_name"]
            findings.add("duplicate_image_id", f"image id={iid}", f"{first} and {file_name} share it")
            continue
        size = f"{image['width']}x{image['height']}"
        if file_name in by_file:
            other = by_file[file_name]
            findings.add("duplicate_file_name", f"file_name {file_name!r}",
                         f"listed as image id={other['id']} ({other['width']}x{other['height']}) and id={iid} ({size})")
        else:
            by_file[file_name] = image
        entries.images[iid] = image
    return ids


def _image_field_problem(image: dict) -> str:
    if not _is_int(image.get("id")):
        return f"'id' must be an integer, got {image.get('id')!r}"
    if not isinstance(image.get("file_name"), str) or not image["file_name"]:
        return f"'file_name' must be a non-empty string, got {image.get('file_name')!r}"
    for key in ("width", "height"):
        if not _is_int(image.get(key)) or image[key] <= 0:
            return f"'{key}' must be a positive integer, got {image.get(key)!r}"
    return ""


def _check_annotations(annotations: list, findings: Findings, entries: CocoEntries, image_ids: set) -> None:
    evaluation = findings.policies.evaluation
    first_of_id: Dict[int, dict] = {}
    for anno in _objects(annotations, "annotations", "bad_annotation_entry", findings):
        aid, iid = anno.get("id"), anno.get("image_id")
        image = entries.images.get(iid) if _is_int(iid) else None
        problem = _annotation_field_problem(anno)
        if problem:
            findings.add("bad_annotation_entry", _describe_annotation(anno, image), problem)
            continue
        if aid in first_of_id:
            findings.add("duplicate_annotation_id", f"annotation id={aid}",
                         f"annotations of image_id={first_of_id[aid]['image_id']} and image_id={iid} share it")
        else:
            first_of_id[aid] = anno
        category = anno["category_id"]
        if category not in entries.categories:
            findings.add("unknown_category", _describe_annotation(anno, image),
                         f"category_id {category} is not among the categories {_listed(sorted(entries.categories))}")
        elif iid not in image_ids:
            findings.add("orphan_annotation", _describe_annotation(anno, image),
                         f"image_id {iid} is not an image of the json")
        elif image is not None:  # else its image entry is refused, which says so
            area = anno.get("area")
            if evaluation and not (_is_number(area) and area >= 0):
                findings.add("no_area", _describe_annotation(anno, image),
                             f"'area' must be a finite number >= 0, got {area!r}")
            entries.annotations.append(anno)


def _describe_annotation(anno: dict, image: Optional[dict]) -> str:
    where = f", {image['file_name']}" if image else ""
    return f"annotation id={anno.get('id')!r} (image_id={anno.get('image_id')!r}{where})"


def _annotation_field_problem(anno: dict) -> str:
    for key in ("id", "image_id", "category_id"):
        if key not in anno:
            return f"no '{key}' field"
        if not _is_int(anno[key]):
            return f"'{key}' must be an integer, got {anno[key]!r}"
    # absent, it is the dataset checks' (they name a segmentation without bbox); what has no length, or none,
    # Detectron2's loader fails on
    if "bbox" in anno and (not hasattr(anno["bbox"], "__len__") or len(anno["bbox"]) == 0):
        return f"'bbox' must be 4 numbers [x, y, width, height], got {anno['bbox']!r}"
    return ""


def json_records(entries: CocoEntries, image_root: str) -> List[dict]:
    """Detectron2's dataset dicts of the entries, as `load_coco_json` makes them (images in id order, boxes in
    XYWH_ABS, category ids mapped to classes 0..K-1 in id order), for the fields the dataset checks read; each
    annotation keeps its json "id"."""
    contiguous = {cid: i for i, cid in enumerate(sorted(entries.categories))}
    per_image = defaultdict(list)
    for anno in entries.annotations:
        view = {k: anno[k] for k in ("id", "bbox", "iscrowd", "segmentation") if k in anno}
        view.update(bbox_mode=BoxMode.XYWH_ABS, category_id=contiguous[anno["category_id"]])
        per_image[anno["image_id"]].append(view)
    return [
        {"file_name": os.path.join(image_root, image["file_name"]), "height": image["height"],
         "width": image["width"], "image_id": iid, "annotations": per_image[iid]}
        for iid, image in sorted(entries.images.items())
    ]

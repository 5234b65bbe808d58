"""The kinds of bad data a detection dataset can hold, and what happens to each: the one place for the policies
of the data path (the json checks of coco_json_checks.py, the dataset checks of dataset_checks.py, the image
checks of image_checks.py and `DetrDatasetMapper`), and `Findings`, the record of one dataset's problems that
training logs or raises and that tools/check_dataset.py prints.

A kind's outcome is an error, or its policy argument decides ("error" or "skip"), or it is fixed:

kind                    what                                                    outcome
json_unreadable         the json is not JSON, or lacks the                      error
                        lists 'images', 'annotations' or 'categories'
no_categories           'categories' is empty                                   error
bad_category            a category without an integer id or a name              error
duplicate_category      two categories with one id, or one name                 error
category_ids_mapped     category ids other than 0..K-1 (1-based, with gaps):    noted
                        Detectron2 maps them to classes 0..K-1 in id order
bad_image_entry         an image without an integer id, a file_name, or a       error
                        positive integer width and height
duplicate_image_id      two images with one id (Detectron2 would merge them)    error
duplicate_file_name     one file listed as two images                           error
no_images               the dataset has no image                                error
bad_annotation_entry    an annotation without an integer id, image_id or        error
                        category_id, or a bbox Detectron2 cannot load
duplicate_annotation_id two annotations with one id                             error
unknown_category        a category_id that is not among the categories          error
orphan_annotation       an annotation whose image_id is not an image of the     bad_annotations
                        json (Detectron2 drops it with a warning)
no_area                 in evaluation, an annotation without a finite           error
                        non-negative 'area' (COCOEvaluator reads it)
bad_size                an image whose width or height is not a positive int    error
missing_image           an image file that does not exist                       missing_images
bad_annotation          an annotation that cannot be right: no bbox (e.g.       bad_annotations
                        polygons only), a bbox that is not 4 finite numbers,
                        a negative width or height, iscrowd other than 0/1,
                        a category id that is not a class of the dataset
zero_area               a box with zero width or height                         empty_boxes
outside                 a box with nothing left inside the image once clipped   empty_boxes
clipped                 a box partly outside the image                          clipped
xyxy_boxes              boxes that look like (x0, y0, x1, y1) in COCO's         warning
                        (x, y, width, height) (see looks_like_xyxy)
background              an image without annotations                            noted
unreadable_image        an image file that cannot be read (corrupt, truncated)  bad_images
size_mismatch           an image file whose size is not its width and height    bad_images
converted               an image in another mode (grayscale, RGBA, ...)         noted
no_usable_images        no image left once the policies applied                 error

Policies: missing_images, bad_annotations, bad_images: "error" (default) or "skip" (training only);
empty_boxes: "skip" (default) or "error". In evaluation (`evaluation=True`) nothing can be skipped:
`COCOEvaluator` reads the ground truth from the dataset's json, so an image or annotation skipped here would
still be counted there and the AP would be wrong; the skip policies are refused, and zero-area, outside and
clipped boxes are kept (reported, left in place). "error" kinds are collected, not raised one at a time:
`Findings.raise_if_refused` raises one `DatasetError` that lists them.
"""
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

__all__ = ["DatasetError", "Findings", "KINDS", "Kind", "Policies", "POLICIES"]

logger = logging.getLogger(__name__)

POLICIES = ("error", "skip")
# subjects named one by one for each kind: in the log, and in a refusal's message
NAMED_IN_LOG = 10
NAMED_IN_ERROR = 5
# details kept for each subject (an image with many bad boxes)
DETAILS_PER_SUBJECT = 10


class DatasetError(ValueError):
    """Data that training or evaluation refuses; the message names the dataset and lists the problems."""


@dataclass(frozen=True)
class Kind:
    """A kind of problem: `what` counts it ("annotation(s) with zero area"); `policy` is the policy argument that
    decides its outcome, None for a fixed `outcome`; `in_evaluation` overrides the outcome in evaluation;
    `notes` is what happens to a noted kind (in training, in evaluation); `unit` is what its subjects are."""

    what: str
    policy: Optional[str] = None
    outcome: str = "error"
    in_evaluation: Optional[str] = None
    notes: Tuple[str, str] = ("", "")
    unit: str = "image"

    @property
    def counted(self) -> bool:
        """Whether a count of it means something (a json or a dataset is one subject)."""
        return self.unit not in ("json", "dataset")


_KEPT_IN_EVALUATION = dict(in_evaluation="kept")
KINDS: Dict[str, Kind] = {
    "json_unreadable": Kind("unreadable json file(s)", unit="json"),
    "no_categories": Kind("json file(s) without categories", unit="json"),
    "bad_category": Kind("category entries without an integer id or a name", unit="category"),
    "duplicate_category": Kind("categories sharing an id or a name", unit="category"),
    "category_ids_mapped": Kind(
        "category ids other than 0..K-1", outcome="noted", unit="json",
        notes=("mapped to classes 0..K-1 in id order, as Detectron2 maps them (legitimate)",) * 2),
    "bad_image_entry": Kind("image entries with a missing or mistyped field"),
    "duplicate_image_id": Kind("image ids shared by several images"),
    "duplicate_file_name": Kind("image files listed as several images"),
    "no_images": Kind("dataset(s) without images", unit="dataset"),
    "bad_annotation_entry": Kind("annotation entries Detectron2 cannot load", unit="annotation"),
    "duplicate_annotation_id": Kind("annotation ids shared by several annotations", unit="annotation"),
    "unknown_category": Kind("annotations of a category not in 'categories'", unit="annotation"),
    "orphan_annotation": Kind("annotation(s) whose image_id is not an image of the json", "bad_annotations",
                              unit="annotation"),
    "no_area": Kind("annotations without a valid 'area' (COCOEvaluator reads it)", unit="annotation"),
    "bad_size": Kind("images whose width or height is not a positive integer"),
    "missing_image": Kind("missing image file(s)", "missing_images"),
    "bad_annotation": Kind("invalid annotation(s)", "bad_annotations"),
    "zero_area": Kind("annotation(s) with zero area", "empty_boxes", **_KEPT_IN_EVALUATION),
    "outside": Kind("annotation(s) wholly outside the image", "empty_boxes", **_KEPT_IN_EVALUATION),
    "clipped": Kind("annotation(s) partly outside the image", outcome="clipped", **_KEPT_IN_EVALUATION),
    "xyxy_boxes": Kind("box(es) that look like (x0, y0, x1, y1), not COCO's (x, y, width, height)",
                       outcome="warning"),
    "background": Kind("image(s) without annotations", outcome="noted",
                       notes=("trained on as background", "evaluated")),
    "unreadable_image": Kind("unreadable image file(s)", "bad_images"),
    "size_mismatch": Kind("image file(s) whose size is not the json's width and height", "bad_images"),
    "converted": Kind("image file(s) converted to RGB", outcome="noted",
                      notes=("read as RGB, as Detectron2 reads them",) * 2),
    "no_usable_images": Kind("dataset(s) with no image left once the policies applied", unit="dataset"),
}


@dataclass(frozen=True)
class Policies:
    """What happens to each kind of problem (see the module docstring)."""

    missing_images: str = "error"
    bad_annotations: str = "error"
    empty_boxes: str = "skip"
    bad_images: str = "error"
    evaluation: bool = False

    def __post_init__(self):
        for field in ("missing_images", "bad_annotations", "empty_boxes", "bad_images"):
            value = getattr(self, field)
            if value not in POLICIES:
                raise ValueError(f"{field} must be one of {POLICIES}, got {value!r}")
            if self.evaluation and field != "empty_boxes" and value == "skip":
                raise ValueError(
                    f"{field}='skip' is for training: COCOEvaluator reads the ground truth of what would be "
                    "skipped from the dataset's json, so the AP would be wrong"
                )

    def outcome(self, kind: str) -> str:
        """"error", "skipped", "kept", "clipped", "warning" or "noted"."""
        k = KINDS[kind]
        if self.evaluation and k.in_evaluation:
            return k.in_evaluation
        if k.policy is None:
            return k.outcome
        return "skipped" if getattr(self, k.policy) == "skip" else "error"

    def skips(self, kind: str) -> bool:
        return self.outcome(kind) == "skipped"

    def describe(self, images: bool = True) -> str:
        """The policies, and whether for training or evaluation; images=False leaves out the mapper's bad_images
        (what the dataset checks do not apply)."""
        fields = ("missing_images", "bad_annotations", "empty_boxes") + ("bad_images",) * images
        use = "evaluation" if self.evaluation else "training"
        return ", ".join(f"{f}={getattr(self, f)!r}" for f in fields) + f" ({use})"


class Findings:
    """The problems found in one dataset: for each kind, its subjects (an image, an annotation, a category)
    in the order found, each with a count and the details of its first problems (DETAILS_PER_SUBJECT).

    Args:
        name: of the dataset, in the messages.
        policies: decide each kind's outcome.
        source: what the dataset is read from (its json), in a refusal's message.
        check_command: the command line of tools/check_dataset.py that reports every problem of the dataset.
    """

    def __init__(self, name: str, policies: Policies, source: str = "", check_command: str = ""):
        self.name, self.policies, self.source = name, policies, source
        self.check_command = check_command or f"python tools/check_dataset.py --dataset {name}"
        self.by_kind: Dict[str, Dict[str, List]] = defaultdict(dict)

    def add(self, kind: str, subject: str, detail: str = "") -> None:
        if kind not in KINDS:
            raise KeyError(f"unknown kind of problem {kind!r}")
        entry = self.by_kind[kind].setdefault(subject, [0, []])
        entry[0] += 1
        if detail and len(entry[1]) < DETAILS_PER_SUBJECT:
            entry[1].append(detail)

    def count(self, kind: str) -> int:
        return sum(count for count, _ in self.by_kind.get(kind, {}).values())

    def kinds(self, outcome: Optional[str] = None) -> List[str]:
        """The kinds found, in the order of KINDS; only those of `outcome` if given."""
        found = [k for k in KINDS if self.by_kind.get(k)]
        return [k for k in found if outcome is None or self.policies.outcome(k) == outcome]

    def refused(self) -> bool:
        return bool(self.kinds("error"))

    def describe_dataset(self) -> str:
        named = self.source and self.source != f"json {self.name}"  # a dataset named after its json
        return f"dataset {self.name!r}" + (f" ({self.source})" if named else "")

    def examples(self, kind: str, limit: int) -> List[str]:
        """The first `limit` problems of a kind, each "subject: detail" (or the subject alone)."""
        lines = []
        for subject, (_, details) in self.by_kind[kind].items():
            lines += [f"{subject}: {detail}" for detail in details] or [subject]
            if len(lines) >= limit:
                break
        return lines[:limit]

    def raise_if_refused(self) -> None:
        """One DatasetError listing the error kinds (the first few of each), if there is any."""
        kinds = self.kinds("error")
        if not kinds:
            return
        first = self.examples(kinds[0], 1)[0]
        more = sum(self.count(k) for k in kinds) - 1
        lines = [f"{self.describe_dataset()}: {first}" + (f" [and {more} more problem(s), listed below]" * bool(more))]
        for kind in kinds if more else ():
            k = KINDS[kind]
            policy = f"; {k.policy}='error'" if k.policy else ""
            lines.append(f"{self.count(kind)} {k.what}{policy}:")
            shown = self.examples(kind, NAMED_IN_ERROR)
            lines += [f"  {example}" for example in shown]
            if self.count(kind) > len(shown):
                lines.append(f"  ... and {self.count(kind) - len(shown)} more")
        lines.append(f"Policies: {self.policies.describe(images=False)}. `{self.check_command}` reports every "
                     "problem of the dataset")
        raise DatasetError("\n".join(lines))

    def log(self) -> None:
        """Logs every kind that is not an error: each subject of it (the first NAMED_IN_LOG as warnings, the
        rest at debug level), then its total."""
        for kind in self.kinds():
            outcome, k = self.policies.outcome(kind), KINDS[kind]
            if outcome == "error":
                continue
            total, subjects = self.count(kind), self.by_kind[kind]
            if outcome == "noted":
                note = k.notes[self.policies.evaluation]
                logger.info(f"[{self.name}] {f'{total} ' * k.counted}{k.what}: {note}" + _first_detail(subjects))
                continue
            why = ", as COCOEvaluator reads them from the json" if outcome == "kept" else ""
            verb = "found" if outcome == "warning" else outcome
            for i, (subject, (count, details)) in enumerate(subjects.items()):
                detail = details[0] if details else ""
                where = f" in {subject}" if k.unit == "image" else f": {subject}"
                level = logging.WARNING if i < NAMED_IN_LOG else logging.DEBUG
                logger.log(level, f"[{self.name}] {verb} {count} {k.what}{where}{why}" + (f": {detail}" * bool(detail)))
            logger.warning(f"[{self.name}] {verb} {total} {k.what} in {len(subjects)} {k.unit}(s) in all{why}")


def _first_detail(subjects: Dict[str, List]) -> str:
    subject, (_, details) = next(iter(subjects.items()))
    return f" ({subject}: {details[0]})" if details else ""

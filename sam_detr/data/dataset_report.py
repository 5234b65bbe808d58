"""Every problem of a registered dataset, in one report (the library of tools/check_dataset.py).

`inspect_dataset` runs the checks of the data path on the whole dataset without stopping at the first error:
the json checks (coco_json_checks.py), Detectron2's loader and the dataset checks (`check_records`), as
`checked_dataset_dicts` runs them for training and evaluation, then opens every image file once
(`check_image_files`: what `DetrDatasetMapper` finds only when training reaches the image). Where the json
has problems that Detectron2's loader must not read (duplicate ids, missing fields, ...), the dataset checks
run on the json's own entries instead (`json_records`), so the report still lists the problems of its files
and boxes. `format_report` prints it, grouped by kind, with the class histogram.
"""
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco_json_checks import LOADER_BLOCKING, json_records
from .dataset_checks import check_dataset_json, check_records, crowd_flag, dataset_findings, require_images
from .dataset_policies import KINDS, Findings, Policies
from .image_checks import check_image_files

__all__ = ["DatasetReport", "class_histogram", "format_report", "inspect_dataset"]

# the order of the report's sections
_OUTCOMES = ("error", "skipped", "kept", "clipped", "warning", "noted")
_HEADINGS = {
    "error": "Errors (refused under these policies)",
    "skipped": "Skipped by the policies",
    "kept": "Kept for the evaluation (COCOEvaluator reads them from the json)",
    "clipped": "Clipped to the image",
    "warning": "Warnings",
    "noted": "Notes",
}


@dataclass
class DatasetReport:
    """What `inspect_dataset` found: the problems, the counts, the checked dicts and the classes."""

    findings: Findings
    images: int = 0  # in the dataset (its json, or its loader)
    annotations: int = 0
    records: List[Dict] = field(default_factory=list)  # after the policies
    classes: List[str] = field(default_factory=list)
    dataset_ids: List[Optional[int]] = field(default_factory=list)  # the json's category id of each class
    records_from: str = ""
    read_images: bool = True
    files_read: int = 0
    decoded: bool = False
    seconds: float = 0.0

    @property
    def refused(self) -> bool:
        return self.findings.refused()


def inspect_dataset(name: str, policies: Policies, *, read_images: bool = True, decode: bool = False,
                    workers: int = 8, progress: bool = True) -> DatasetReport:
    """Runs every check of the data path on the registered dataset `name` under `policies` (see the module
    docstring); read_images=False leaves out the image files (a json-only check), decode=True decodes every
    image instead of reading its header."""
    start = time.perf_counter()
    findings = dataset_findings(name, policies)
    report = DatasetReport(findings, read_images=read_images, decoded=decode)
    meta = MetadataCatalog.get(name)
    entries = check_dataset_json(name, findings)
    if not LOADER_BLOCKING.intersection(findings.kinds()):
        dicts = DatasetCatalog.get(name)
        report.records_from = "Detectron2's loader"
        report.classes = list(meta.get("thing_classes", []))
        id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
        to_json = {v: k for k, v in id_map.items()} if id_map else {}
        report.dataset_ids = [to_json.get(i) for i in range(len(report.classes))]
        if not dicts:
            findings.add("no_images", name, "its loader returned no image")
    elif entries is not None and meta.get("image_root") is not None:
        dicts = json_records(entries, meta.image_root)
        report.records_from = "the json's entries that passed (Detectron2 cannot load the json as it is)"
        report.dataset_ids = sorted(entries.categories)
        report.classes = [entries.categories[i] for i in report.dataset_ids]
    else:
        dicts = []
        report.records_from = "nothing: " + ("the json cannot be read" if entries is None else
                                             "Detectron2 cannot load the json, and the dataset has no image_root")
    report.images = len(dicts)
    report.annotations = sum(len(d.get("annotations", ())) for d in dicts)
    if dicts:
        report.records = check_records(dicts, findings, len(report.classes) or None)
        require_images(report.records, findings, f"all {len(dicts)} image(s) were skipped")
    if read_images:
        report.files_read = check_image_files(report.records, findings, decode=decode, workers=workers,
                                              progress=progress)
    report.seconds = time.perf_counter() - start
    return report


def class_histogram(records: List[Dict], num_classes: int) -> List[Dict[str, int]]:
    """For each class: its "instances" (not crowd), "crowd" regions and "images" (that hold either)."""
    rows = [{"instances": 0, "crowd": 0, "images": 0} for _ in range(num_classes)]
    for record in records:
        seen = set()
        for anno in record.get("annotations", ()):
            category = anno["category_id"]
            rows[category]["crowd" if crowd_flag(anno) else "instances"] += 1
            seen.add(category)
        for category in seen:
            rows[category]["images"] += 1
    return rows


def format_report(report: DatasetReport, examples: int = 5) -> str:
    """The report as text: what was read, the problems grouped by outcome and kind (count, the first
    `examples` subjects), the class histogram and the verdict."""
    findings = report.findings
    if report.read_images:
        images = f"{report.files_read} image file(s) " + ("decoded" if report.decoded else "opened (headers)")
    else:
        images = "image files not opened"
    lines = [
        f"Checked {findings.describe_dataset()}",
        f"  {report.images} image(s), {report.annotations} annotation(s), {len(report.classes)} class(es), "
        f"from {report.records_from}; {images}; {report.seconds:.1f} s",
        f"  policies: {findings.policies.describe()}",
    ]
    for outcome in _OUTCOMES:
        kinds = findings.kinds(outcome)
        if not kinds:
            continue
        lines += ["", f"{_HEADINGS[outcome]}:"]
        for kind in kinds:
            k, subjects = KINDS[kind], findings.by_kind[kind]
            count = findings.count(kind)
            spread = f" in {len(subjects)} {k.unit}(s)" if len(subjects) != count else ""
            policy = f" [{k.policy}={getattr(findings.policies, k.policy)!r}]" if k.policy else ""
            note = f": {k.notes[findings.policies.evaluation]}" if outcome == "noted" else ""
            lines.append(f"  {f'{count} ' * k.counted}{k.what}{spread}{policy}{note}")
            shown = findings.examples(kind, examples)
            lines += [f"      {example}" for example in shown]
            if count > len(shown):
                lines.append(f"      ... and {count - len(shown)} more")
    if report.records and "annotations" in report.records[0] and report.classes:
        lines += ["", "Classes (after the policies):", "  class  json id  instances  crowd  images  name"]
        for i, row in enumerate(class_histogram(report.records, len(report.classes))):
            json_id = report.dataset_ids[i] if i < len(report.dataset_ids) else None
            empty = "   <- no instance" if not row["instances"] else ""
            lines.append(f"  {i:5d}  {str(json_id):>7}  {row['instances']:9d}  {row['crowd']:5d}  {row['images']:6d}"
                         f"  {report.classes[i]}{empty}")
    errors = sum(findings.count(k) for k in findings.kinds("error"))
    lines.append("")
    use = "evaluation" if findings.policies.evaluation else "training"
    if errors:
        lines.append(f"REFUSED: {use} would refuse this data: {errors} problem(s) of "
                     f"{len(findings.kinds('error'))} kind(s) are errors under these policies")
    else:
        lines.append(f"OK: {use} accepts this data under these policies")
    return "\n".join(lines)

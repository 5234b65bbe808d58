"""Does a model's AP, and does each image's detections, depend on the evaluation batch size?

`measure` evaluates a `DETRBase` model on a dataset with d2's test loader at batch 1 and at batch N, once
with the official batching (`batch_invariant=False`: the backbone sees each batch's zero padding) and once
with `batch_invariant=True`, and compares the box AP (`SubsetCOCOEvaluator`) and every image's detections
(`DetectionRecorder`, `compare_detections`); `format_table` prints the rows. tools/eval_batch_invariance.py
is the command line.
"""
import dataclasses
import tempfile
import time
from typing import Dict, List, Tuple

import torch
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from torch import nn

__all__ = [
    "SubsetCOCOEvaluator", "DetectionRecorder", "CPUTimed", "Evaluation", "evaluate", "compare_detections",
    "measure", "format_table",
]


class SubsetCOCOEvaluator(COCOEvaluator):
    """d2's COCOEvaluator (box AP) over the given images only (d2's own `evaluate(img_ids)`), so that
    `--num-images` scores the images evaluated, not the missed rest of the dataset."""

    def __init__(self, dataset_name: str, img_ids: List[int], output_dir: str):
        super().__init__(dataset_name, tasks=("bbox",), distributed=False, output_dir=output_dir)
        self._img_ids = list(img_ids)

    def evaluate(self, img_ids=None):
        return super().evaluate(self._img_ids if img_ids is None else img_ids)


class DetectionRecorder(DatasetEvaluator):
    """Keeps each image's detections, best first: {image_id: (scores (K,), boxes (K, 4) XYXY pixels of the
    original image, classes (K,))}."""

    def reset(self):
        self.detections: Dict[int, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def process(self, inputs, outputs):
        for x, y in zip(inputs, outputs):
            instances = y["instances"].to("cpu")
            order = instances.scores.argsort(descending=True, stable=True)
            self.detections[x["image_id"]] = (
                instances.scores[order], instances.pred_boxes.tensor[order], instances.pred_classes[order]
            )

    def evaluate(self):
        return {}


class CPUTimed(nn.Module):
    """`model` with the process CPU time of its forward passes summed in `seconds`, over `images` images."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.seconds, self.images = 0.0, 0

    def forward(self, batched_inputs):
        start = time.process_time()
        outputs = self.model(batched_inputs)
        self.seconds += time.process_time() - start
        self.images += len(batched_inputs)
        return outputs


@dataclasses.dataclass
class Evaluation:
    batch_size: int
    batch_invariant: bool
    AP: float
    AP50: float
    cpu_seconds_per_image: float
    detections: Dict[int, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = dataclasses.field(repr=False)


def evaluate(model: nn.Module, dataset: List[dict], mapper, dataset_name: str, batch_size: int,
             batch_invariant: bool) -> Evaluation:
    """Box AP and every image's detections of `model` on `dataset` (d2 dataset dicts of the registered
    `dataset_name`), the test loader batching `batch_size` consecutive images, with `model.batch_invariant`
    set as given."""
    model.batch_invariant = batch_invariant
    loader = build_detection_test_loader(dataset, mapper=mapper, batch_size=batch_size, num_workers=0)
    recorder, timed = DetectionRecorder(), CPUTimed(model)
    with tempfile.TemporaryDirectory() as output_dir:
        coco = SubsetCOCOEvaluator(dataset_name, [d["image_id"] for d in dataset], output_dir)
        results = inference_on_dataset(timed, loader, DatasetEvaluators([coco, recorder]))
    return Evaluation(
        batch_size, batch_invariant, results["bbox"]["AP"], results["bbox"]["AP50"],
        timed.seconds / max(timed.images, 1), recorder.detections,
    )


def compare_detections(single: Evaluation, batched: Evaluation, topk: int, box_tolerance: float) -> dict:
    """How far each image's `topk` best detections in `single` are from their partners in `batched`: the
    detection of the same class with the nearest box (the largest coordinate difference, in pixels), among
    all of `batched`'s detections of the image (ranks are not compared: a model's near-equal scores may swap
    places). Returns the largest score and box differences to the partners over all images, and the share
    of images whose top-k all have a partner within `box_tolerance` pixels among `batched`'s top-k."""
    max_score = max_box = 0.0
    same = 0
    for image_id, (scores, boxes, classes) in single.detections.items():
        if image_id not in batched.detections:
            raise ValueError(f"image {image_id} was evaluated at batch {single.batch_size} but not at "
                             f"batch {batched.batch_size}")
        other_scores, other_boxes, other_classes = batched.detections[image_id]
        k = min(topk, len(scores))
        if k == 0 or len(other_scores) == 0:
            same += k == 0 and len(other_scores) == 0
            continue
        # (k, M): the box distance to every detection of `batched`, infinite across classes
        distance = (boxes[:k, None] - other_boxes[None]).abs().amax(-1)
        distance = distance.masked_fill(classes[:k, None] != other_classes[None], float("inf"))
        box_diff, partner = distance.min(1)
        if torch.isinf(box_diff).any():  # a class that `batched` does not detect at all
            max_box = float("inf")
            continue
        max_score = max(max_score, (scores[:k] - other_scores[partner]).abs().max().item())
        max_box = max(max_box, box_diff.max().item())
        in_topk = distance[:, :topk].min(1).values
        same += bool((in_topk <= box_tolerance).all())
    return {"max_score_diff": max_score, "max_box_diff_px": max_box,
            "same_topk": same / max(len(single.detections), 1)}


def measure(model: nn.Module, dataset: List[dict], mapper, dataset_name: str, batch_size: int, topk: int,
            box_tolerance: float) -> List[dict]:
    """Per mode (official batching, then batch_invariant), the evaluations at batch 1 and at `batch_size`
    and how they differ; `model.batch_invariant` is restored afterwards."""
    if not hasattr(model, "batch_invariant"):
        raise ValueError(f"{type(model).__name__} has no batch_invariant option (a DETRBase model has)")
    initial, rows = model.batch_invariant, []
    try:
        for invariant in (False, True):
            single, batched = (evaluate(model, dataset, mapper, dataset_name, b, invariant) for b in (1, batch_size))
            rows.append({
                "batch_invariant": invariant,
                "batch_size": batch_size,
                "AP": {1: single.AP, batch_size: batched.AP},
                "AP50": {1: single.AP50, batch_size: batched.AP50},
                "AP_change": batched.AP - single.AP,
                **compare_detections(single, batched, topk, box_tolerance),
                "cpu_seconds_per_image": {1: single.cpu_seconds_per_image, batch_size: batched.cpu_seconds_per_image},
            })
    finally:
        model.batch_invariant = initial
    return rows


def format_table(rows: List[dict], topk: int) -> str:
    """The rows of `measure` as a Markdown table."""
    n = rows[0]["batch_size"]
    header = (f"| mode | AP b1 | AP b{n} | AP change | AP50 b1 | AP50 b{n} | max score diff (top-{topk}) | "
              f"max box diff px (top-{topk}) | same top-{topk} | CPU s/image b1 | CPU s/image b{n} |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        mode = "batch_invariant=True" if r["batch_invariant"] else "official (batch_invariant=False)"
        lines.append(
            f"| {mode} | {r['AP'][1]:.2f} | {r['AP'][n]:.2f} | {r['AP_change']:+.2f} | {r['AP50'][1]:.2f} | "
            f"{r['AP50'][n]:.2f} | {r['max_score_diff']:.2e} | {r['max_box_diff_px']:.2e} | "
            f"{100 * r['same_topk']:.0f}% | {r['cpu_seconds_per_image'][1]:.3f} | {r['cpu_seconds_per_image'][n]:.3f} |"
        )
    return "\n".join(lines)

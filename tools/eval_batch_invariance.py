#!/usr/bin/env python
"""Do a model's AP and each image's detections depend on the evaluation batch size?

    OMP_NUM_THREADS=1 python tools/eval_batch_invariance.py --config-file configs/quickstart/conditional_detr.py \\
        --checkpoint output/quickstart_conditional_detr/model_final.pth --batch-size 8
    python tools/eval_batch_invariance.py --config-file configs/conditional_detr_r50_dc5_50ep.py \\
        --checkpoint conditional_detr_dc5.pth --batch-size 8 --num-images 32 \\
        --coco-json ../shared/data/coco_val2017_mini/annotations/instances_val2017.json \\
        --image-root ../shared/data/coco_val2017_mini/val2017 \\
        dataloader.test.mapper.augmentations.0.short_edge_length=480

The model of `--config-file` with the weights of `--checkpoint` is evaluated on the config's test dataset
(or `--dataset`, or the COCO-format `--coco-json` + `--image-root`, registered here; `--num-images` keeps
the first images) four times: with the test loader at batch 1 and at `--batch-size`, once with the official
batching (`model.batch_invariant = False`: the backbone sees each batch's zero padding, the masks come from
the padded image mask) and once with `batch_invariant = True` (backbone and input projection per image at
its own size, exact masks). Detectron2's machinery does the rest: `build_detection_test_loader(batch_size=)`,
`COCOEvaluator` (over the evaluated images), `inference_on_dataset`.

It prints one table, a row per mode: box AP and AP50 at batch 1 and at batch N and the AP change; how far
an image's detections at batch N are from its detections at batch 1 (over all images, the largest score
difference and the largest box-coordinate difference in pixels between each of the `--topk` best
detections at batch 1 and its partner at batch N, the detection of the same class with the nearest box;
and the share of images whose top-k all have such a partner within `--box-tolerance` pixels among the
top-k at batch N); and the model's CPU time per image (time.process_time around the model's
forward, which another process's load does not inflate; it sums the threads', so run with
OMP_NUM_THREADS=1 to read it as time). `--json` writes the same figures. `key=value` arguments override
the config.
"""
import argparse
import dataclasses
import json
import logging
import os
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from detectron2.utils.logger import setup_logger
from torch import nn

from sam_detr.engine.defaults import build_inference_model
from sam_detr.utils.cli import load_config, one_line_errors

logger = logging.getLogger("detectron2")

# the name under which --coco-json is registered
COCO_JSON_DATASET = "batch_invariance_coco"


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


def register_coco_json(json_file: str, image_root: str) -> str:
    """Registers --coco-json / --image-root (once per process) and returns the dataset's name."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"--coco-json {json_file}: no such file")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"--image-root {image_root}: no such folder")
    if COCO_JSON_DATASET in DatasetCatalog.list():
        registered = MetadataCatalog.get(COCO_JSON_DATASET)
        if (registered.json_file, registered.image_root) != (json_file, image_root):
            raise ValueError(f"{COCO_JSON_DATASET} is already registered with {registered.json_file}")
        return COCO_JSON_DATASET
    register_coco_instances(COCO_JSON_DATASET, {}, json_file, image_root)
    return COCO_JSON_DATASET


def run(cfg, batch_size: int, num_images: Optional[int], topk: int, box_tolerance: float,
        device: Optional[str] = None) -> Tuple[List[dict], dict]:
    """Builds the model and the test data of `cfg` (its test dataset: cfg.dataloader.test.dataset.names)
    and returns `measure`'s rows and a description of the run."""
    dataset_name = cfg.dataloader.test.dataset.names
    if not isinstance(dataset_name, str):
        raise ValueError(f"dataloader.test.dataset.names {list(dataset_name)}: give one dataset (--dataset)")
    dataset = instantiate(cfg.dataloader.test.dataset)
    if num_images is not None:
        dataset = dataset[:num_images]
    if not dataset:
        raise ValueError(f"dataset {dataset_name} has no image to evaluate")
    model = build_inference_model(cfg, device)
    classes = MetadataCatalog.get(dataset_name).get("thing_classes", None)
    if classes is not None and model.num_classes != len(classes):
        raise ValueError(f"the model predicts {model.num_classes} classes; dataset {dataset_name} has {len(classes)}")
    mapper = instantiate(cfg.dataloader.test.mapper)
    rows = measure(model, dataset, mapper, dataset_name, batch_size, topk, box_tolerance)
    about = {"model": type(model).__name__, "dataset": dataset_name, "images": len(dataset),
             "checkpoint": cfg.train.init_checkpoint, "threads": torch.get_num_threads()}
    return rows, about


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--checkpoint", help="weights to evaluate (default: the config's train.init_checkpoint)")
    parser.add_argument("--batch-size", type=int, default=8, help="the evaluation batch compared with batch 1")
    parser.add_argument("--dataset", help="a registered dataset to evaluate on (default: the config's test set)")
    parser.add_argument("--coco-json", metavar="FILE", help="evaluate on this COCO-format annotation file ...")
    parser.add_argument("--image-root", metavar="DIR", help="... whose images are in this folder")
    parser.add_argument("--num-images", type=int, help="evaluate the first images of the dataset only")
    parser.add_argument("--topk", type=int, default=10, help="detections per image compared (best first)")
    parser.add_argument("--box-tolerance", type=float, default=1.0, help="pixels, for the same-top-k share")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the config's train.device)")
    parser.add_argument("--json", metavar="FILE", help="write the figures there")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)

    if args.batch_size < 2:
        parser.error(f"--batch-size must be at least 2 (it is compared with batch 1), got {args.batch_size}")
    if args.num_images is not None and args.num_images < 1:
        parser.error(f"--num-images must be at least 1, got {args.num_images}")
    if args.topk < 1:
        parser.error(f"--topk must be at least 1, got {args.topk}")
    if (args.coco_json is None) != (args.image_root is None):
        parser.error("--coco-json and --image-root go together")
    if args.coco_json is not None and args.dataset is not None:
        parser.error("give --dataset or --coco-json, not both")
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    cfg = load_config(parser, args.config_file, args.opts)
    if args.checkpoint is not None:
        cfg.train.init_checkpoint = args.checkpoint
    setup_logger()
    with one_line_errors(parser):
        if args.coco_json is not None:
            args.dataset = register_coco_json(args.coco_json, args.image_root)
        if args.dataset is not None:
            cfg.dataloader.test.dataset.names = args.dataset
        rows, about = run(cfg, args.batch_size, args.num_images, args.topk, args.box_tolerance, args.device)
    print(f"\n{about['model']} ({args.config_file}, {about['checkpoint'] or 'random initialisation'}) on "
          f"{about['images']} images of {about['dataset']}, batch 1 vs {args.batch_size}, {about['threads']} thread(s):")
    print(format_table(rows, args.topk))
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump({**about, "config": args.config_file, "topk": args.topk, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

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

The measurement is `sam_detr.evaluation.batch_invariance`; this file is its command line.
"""
import argparse
import json
import os
from typing import List, Optional, Tuple

import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils.logger import setup_logger

from sam_detr.engine.defaults import build_inference_model
from sam_detr.evaluation.batch_invariance import format_table, measure
from sam_detr.utils.cli import load_config, one_line_errors

# the name under which --coco-json is registered
COCO_JSON_DATASET = "batch_invariance_coco"


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

#!/usr/bin/env python
"""Check a detection dataset before training on it: one report of every problem.

    python tools/check_dataset.py --json annotations.json --image-root images/
    python tools/check_dataset.py --dataset coco_2017_train            # a registered Detectron2 dataset
    python tools/check_dataset.py --config-file configs/detr_r50_50ep.py [--split test]

It runs every check of the data path (sam_detr/data/dataset_policies.py lists them, with their policies) on
the whole dataset without stopping at the first problem: the json itself (unique ids, references, required
fields and their types, categories), every annotation (boxes, categories, iscrowd) and every image file,
opened once in parallel (its header: the size, oriented by its EXIF tag as Detectron2 reads it, against the
json's width and height; --decode decodes every image, which also finds truncated files). It prints the
problems grouped by kind, with counts and the first few ids of each, and the class histogram. The exit
status is 1 if training (with --evaluation or --split test: evaluation) would refuse the data under the
policies, 0 if not, 2 for a bad option or path.

The policies are those of the data configs unless given (--missing-images, --bad-annotations, --empty-boxes,
--bad-images), or those of --config-file, which also names the datasets (dataloader.train, or
dataloader.test with --split test) and registers those it registers.
"""
import argparse
import logging
import os
import sys
from typing import List, Tuple

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

from sam_detr.data.dataset_policies import POLICIES, Policies
from sam_detr.data.dataset_report import format_report, inspect_dataset
from sam_detr.utils.cli import load_config, one_line_errors

_POLICY_FIELDS = ("missing_images", "bad_annotations", "empty_boxes", "bad_images")


def datasets_of_config(parser, args) -> Tuple[List[str], dict]:
    """The dataset names of the config's loader (--split) and its policies."""
    cfg = load_config(parser, args.config_file)
    loader = cfg.dataloader.get(args.split)
    dataset = loader.get("dataset") if loader is not None else None
    if dataset is None or "names" not in dataset:
        parser.error(f"--config-file {args.config_file}: no dataloader.{args.split}.dataset.names")
    names = [dataset.names] if isinstance(dataset.names, str) else list(dataset.names)
    policies = {f: dataset[f] for f in _POLICY_FIELDS if f in dataset}
    mapper = loader.get("mapper")
    if mapper is not None and "bad_images" in mapper:
        policies["bad_images"] = mapper.bad_images
    policies["evaluation"] = bool(dataset.get("evaluation", args.split == "test"))
    return names, policies


def register_json(parser, json_file: str, image_root: str) -> str:
    if not os.path.isfile(json_file):
        parser.error(f"--json {json_file}: no such file")
    if not os.path.isdir(image_root):
        parser.error(f"--image-root {image_root}: no such folder")
    name = json_file  # as the user named it
    while name in DatasetCatalog.list():
        name += "_"
    register_coco_instances(name, {}, json_file, image_root)
    return name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", nargs="+", metavar="NAME", help="registered Detectron2 dataset(s)")
    source.add_argument("--json", metavar="FILE", help="a COCO-format json (with --image-root)")
    source.add_argument("--config-file", metavar="FILE", help="the datasets and policies of a LazyConfig")
    parser.add_argument("--image-root", metavar="DIR", help="the folder of the json's file_name paths")
    parser.add_argument("--split", choices=("train", "test"), default="train", help="with --config-file")
    parser.add_argument("--evaluation", action="store_true", help="check for an evaluation: nothing skipped")
    for policy in _POLICY_FIELDS:
        default = getattr(Policies(), policy)
        parser.add_argument(f"--{policy.replace('_', '-')}", choices=POLICIES, help=f"default: {default}")
    parser.add_argument("--skip-images", action="store_true", help="the json and annotations only: open no image")
    parser.add_argument("--decode", action="store_true", help="decode every image (finds truncated files)")
    parser.add_argument("--workers", type=int, default=8, help="threads that open the images (default 8)")
    parser.add_argument("--examples", type=int, default=5, help="subjects listed for each kind (default 5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if (args.json is None) != (args.image_root is None):
        parser.error("--json and --image-root go together")
    if args.workers < 1 or args.examples < 0:
        parser.error("--workers must be at least 1 and --examples at least 0")

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    policies = {}
    if args.config_file:
        names, policies = datasets_of_config(parser, args)
    elif args.json:
        names = [register_json(parser, args.json, args.image_root)]
    else:
        names = args.dataset
    policies.update({f: getattr(args, f) for f in _POLICY_FIELDS if getattr(args, f) is not None})
    if args.evaluation:
        policies["evaluation"] = True
    refused = False
    with one_line_errors(parser):
        policies = Policies(**policies)
        for name in names:
            report = inspect_dataset(name, policies, read_images=not args.skip_images, decode=args.decode,
                                     workers=args.workers, progress=not args.no_progress)
            print(format_report(report, args.examples), flush=True)
            refused |= report.refused
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())

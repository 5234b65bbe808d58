#!/usr/bin/env python
"""Make the pictures of docs/gallery.md: what each method's race checkpoint looks at on a shapes_val image,
and a COCO-size model on a COCO image.

    python tools/make_gallery.py --runs output/race --methods detr conditional_detr sam_detr \\
        deformable_detr ms_detr plain_detr --output docs/images/gallery \\
        --coco-image ../shared/data/coco_val2017_mini/val2017/000000000139.jpg \\
        --coco-checkpoint deformable_detr_r50_50ep.pth

For each method (`--methods`, default: every configs/quickstart/*.py) it draws image `--image-id` of
shapes_val with configs/quickstart/<method>.py and the weights <runs>/<method>/model_final.pth (what
`tools/race.py --output <runs>` leaves) into <output>/<method>.png; with `--coco-image`, that image with the
model of `--coco-config` and `--coco-checkpoint` (none: the model's own random initialisation, seed 0) into
<output>/coco_<config name>.png. Every picture shows the `--topk` best detections at the last decoder layer
(tools/visualize.py draws any image with any layer); `--colors` keeps the files small; `key=value`
arguments override every config.
"""
import argparse
import logging
import os

import torch
from detectron2.utils.logger import setup_logger

from sam_detr.engine.defaults import Predictor
from sam_detr.engine.race import find_methods
from sam_detr.utils.cli import load_config, one_line_errors
from sam_detr.utils.image_files import dataset_image_files
from sam_detr.visualization import explain_file, write_pictures

logger = logging.getLogger("detectron2")
QUICKSTART_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "quickstart")


def draw(cfg, image: str, out: str, args) -> None:
    torch.manual_seed(0)  # the random initialisation, where there is no checkpoint
    predictor = Predictor(cfg, "cpu")
    explanation, rgb = explain_file(predictor, image, -1, args.topk, args.score_threshold)
    if not explanation.detections:
        raise ValueError(f"{image}: no detection scores >= {args.score_threshold}")
    write_pictures(explanation, rgb, out, predictor.metadata, colors=args.colors)
    logger.info(f"{out}: {cfg.train.init_checkpoint or 'random initialisation'} on {image}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--runs", default="output/race", help="the race's folder (<method>/model_final.pth)")
    parser.add_argument("--methods", nargs="+", help="quickstart configs to draw (default: all)")
    parser.add_argument("--image-id", type=int, default=3, help="the shapes_val image drawn")
    parser.add_argument("--coco-image", help="an image file drawn with the COCO model")
    parser.add_argument("--coco-config", default="configs/deformable_detr_r50_50ep.py")
    parser.add_argument("--coco-checkpoint", help="its weights (default: its random initialisation)")
    parser.add_argument("--output", default="docs/images/gallery", help="folder of the PNGs")
    parser.add_argument("--topk", type=int, default=3, help="detections per picture")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="lowest score of a detection drawn")
    parser.add_argument("--colors", type=int, default=256, help="colours per PNG (0: all)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value overrides of every config")
    args = parser.parse_args(argv)
    if args.coco_image is not None and not os.path.isfile(args.coco_image):
        parser.error(f"--coco-image {args.coco_image}: no such file")
    setup_logger()
    with one_line_errors(parser):
        methods = find_methods(QUICKSTART_DIR, args.methods)
        configs = {}  # every config and checkpoint checked before the first picture
        for method, config_file in methods.items():
            checkpoint = os.path.join(args.runs, method, "model_final.pth")
            if not os.path.isfile(checkpoint):
                parser.error(f"{checkpoint}: no such file (the race trains it: python tools/race.py --methods "
                             f"{method} --output {args.runs})")
            configs[os.path.join(args.output, f"{method}.png")] = load_config(parser, config_file, args.opts,
                                                                              checkpoint)
        if args.coco_image is not None:
            name = os.path.splitext(os.path.basename(args.coco_config))[0]
            coco = load_config(parser, args.coco_config, args.opts, args.coco_checkpoint)
            if args.coco_checkpoint is None:
                coco.train.init_checkpoint = ""
        ((_, shapes_image),) = dataset_image_files("shapes_val", [args.image_id])
        for out, cfg in configs.items():
            draw(cfg, shapes_image, out, args)
        if args.coco_image is not None:
            draw(coco, args.coco_image, os.path.join(args.output, f"coco_{name}.png"), args)


if __name__ == "__main__":
    main()

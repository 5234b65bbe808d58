#!/usr/bin/env python
"""Draw what a model looks at for each of its detections: the picture its method's paper shows.

    python tools/visualize.py --config-file configs/quickstart/deformable_detr.py \\
        --checkpoint output/quickstart_deformable_detr/model_final.pth --dataset shapes_val --image-id 0 1 \\
        --output vis/

    python tools/visualize.py --config-file configs/quickstart/sam_detr.py --input photo.jpg --output vis/ \\
        --layer 0 --topk 2

Per image, one PNG (<output>/<image name>.png, or <dataset>_<image id>.png), a column per detection (the
`--topk` best scoring at least `--score-threshold`) and a row per panel; `--per-detection` writes one PNG
per detection (<name>_<i>.png). The pictures come from the model's own tensors in decoder layer `--layer`
(default: the last), captured by forward hooks as it runs (sam_detr/visualization):

    Deformable DETR, MS-DETR, DINO (any decoder whose cross-attention is MSDeformAttn): the sampling points
        the deformable op was given, coloured by feature level, sized by attention weight; the reference point
        (star) and box (dashed);
    SAM-DETR: the RoIAlign box of the query (its reference box, dashed) and each head's salient point;
    Conditional DETR: the cross-attention's spatial part softmax(q_spatial . k_pos), its content part
        softmax(q_content . k_content) and the combined weights the layer used, per head;
    DETR: the cross-attention weights, per head;
    Plain-DETR: the BoxRPB bias of the query's reference box (mean over heads) and its attention weights.

All heads share a panel (each cell in the colour of its strongest head) unless `--per-head`. Images are
read and resized as the config's test loader does; `key=value` arguments override the config.
"""
import argparse
import logging
import os

import torch
from detectron2.utils.logger import setup_logger

from sam_detr.engine.defaults import Predictor
from sam_detr.utils.cli import load_config, one_line_errors
from sam_detr.utils.image_files import dataset_image_files, find_images
from sam_detr.visualization import explain_file, picture_of_layer, write_pictures

logger = logging.getLogger("detectron2")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--checkpoint", help="weights to load (default: the config's train.init_checkpoint)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    source.add_argument("--dataset", help="a registered dataset (e.g. shapes_val) whose images to draw")
    parser.add_argument("--image-id", type=int, nargs="+", help="with --dataset: the image ids (default: its first)")
    parser.add_argument("--output", required=True, help="folder of the PNGs")
    parser.add_argument("--layer", type=int, default=-1, help="decoder layer, 0-based (negative: from the last)")
    parser.add_argument("--topk", type=int, default=3, help="explain at most this many detections per image")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="lowest score of a detection explained")
    parser.add_argument("--per-detection", action="store_true", help="one PNG per detection")
    parser.add_argument("--per-head", action="store_true", help="a panel per attention head")
    parser.add_argument("--colors", type=int, default=0, help="reduce the PNGs to this many colours (smaller files)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)

    if args.topk < 1:
        parser.error(f"--topk must be at least 1, got {args.topk}")
    if not 0 <= args.score_threshold <= 1:
        parser.error(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if not 0 <= args.colors <= 256:
        parser.error(f"--colors must be in 0..256 (0: all), got {args.colors}")
    if args.image_id is not None and args.dataset is None:
        parser.error("--image-id needs --dataset")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: there is no CUDA device here")
    cfg = load_config(parser, args.config_file, args.opts, args.checkpoint)
    setup_logger()
    with one_line_errors(parser, also=(RuntimeError,)):
        run(parser, args, cfg)


def run(parser, args, cfg) -> None:
    if args.dataset is not None:
        images = [(f"{args.dataset}_{i}", path) for i, path in dataset_image_files(args.dataset, args.image_id)]
    else:
        images = [(os.path.splitext(os.path.basename(p))[0], p) for p in find_images(args.input)]
    names = [name for name, _ in images]
    if len(set(names)) < len(names):
        raise ValueError("several input images have the same file name: their pictures would overwrite each other")
    predictor = Predictor(cfg, args.device)
    picture_of_layer(predictor.model, args.layer)  # a layer or a model with no picture fails before any image
    written = []
    for name, path in images:
        explanation, image = explain_file(predictor, path, args.layer, args.topk, args.score_threshold)
        if not explanation.detections:
            logger.warning(f"{path}: no detection scores >= {args.score_threshold}")
            continue
        written += write_pictures(
            explanation, image, os.path.join(args.output, name + ".png"), predictor.metadata, args.per_detection,
            args.per_head, args.colors,
        )
    if not written:
        parser.exit(1, f"{parser.prog}: no detection scores >= {args.score_threshold} in "
                       f"{len(images)} image(s): lower --score-threshold\n")
    logger.info(f"{len(written)} picture(s) written to {args.output}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Detect objects in images with the model of a LazyConfig file and draw the detections.

    python tools/demo.py --config-file configs/quickstart/detr.py \\
        --checkpoint output/quickstart_detr/model_final.pth --input photo.jpg other/ 'more/*.png' \\
        --output vis/ --json detections.json

`--input` takes image files, folders (their images, not recursively) and glob patterns. Each image is
resized as the config's test loader resizes it (cfg.dataloader.test.mapper.augmentations). The detections
scoring at least `--score-threshold` are drawn with Detectron2's Visualizer and the class names of the
test dataset into the folder `--output` (for a single image, `--output` may also be a file such as
out.jpg), and written to `--json` as a COCO-style list of {"file_name", "category_id" (the dataset's id),
"bbox" [x, y, w, h] in pixels, "score"}. `key=value` arguments override the config.
"""
import argparse
import json
import logging
import os
from typing import Dict, List

import torch
import tqdm
from detectron2.data.detection_utils import convert_image_to_rgb, read_image
from detectron2.structures import BoxMode, Instances
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from sam_detr.engine.defaults import Predictor
from sam_detr.utils.cli import load_config, one_line_errors
from sam_detr.utils.image_files import IMAGE_EXTENSIONS, find_images

logger = logging.getLogger("detectron2")

def to_coco(instances: Instances, file_name: str, contiguous_to_dataset_id: Dict[int, int]) -> List[dict]:
    """COCO-style detections; a class the mapping lacks keeps the model's (contiguous) id."""
    boxes = BoxMode.convert(instances.pred_boxes.tensor.numpy(), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    return [
        {
            "file_name": file_name,
            "category_id": contiguous_to_dataset_id.get(int(c), int(c)),
            "bbox": [round(float(x), 2) for x in box],
            "score": round(float(s), 4),
        }
        for box, c, s in zip(boxes, instances.pred_classes, instances.scores)
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--checkpoint", help="weights to load (default: the config's train.init_checkpoint)")
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders or glob patterns")
    parser.add_argument("--output", help="folder of the drawings; for a single image, also a file name")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="lowest score drawn and written")
    parser.add_argument("--json", metavar="FILE", help="write the detections there, as a COCO-style list")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the config's train.device)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)

    if not 0 <= args.score_threshold <= 1:
        parser.error(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError as e:
            parser.error(f"--device {args.device}: {e}")
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error(f"--device {args.device}: there is no CUDA device here")
    if args.json is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        parser.error(f"--json {args.json}: its folder does not exist")
    try:
        paths = find_images(args.input)
    except FileNotFoundError as e:
        parser.error(str(e))
    output_is_dir = args.output is not None and not args.output.lower().endswith(IMAGE_EXTENSIONS)
    if len(paths) > 1 and not output_is_dir:
        parser.error(f"--output must name a folder to draw {len(paths)} images")
    if output_is_dir:
        names = [os.path.basename(p) for p in paths]
        if len(set(names)) < len(names):
            parser.error("several input images have the same file name: their drawings would overwrite each other")
    cfg = load_config(parser, args.config_file, args.opts, args.checkpoint)
    setup_logger()
    with one_line_errors(parser):
        run(args, cfg, paths, output_is_dir)


def run(args, cfg, paths: List[str], output_is_dir: bool) -> None:
    if args.output is not None:
        os.makedirs(args.output if output_is_dir else os.path.dirname(args.output) or ".", exist_ok=True)
    predictor = Predictor(cfg, args.device)
    metadata = predictor.metadata
    # the model predicts contiguous ids; datasets such as COCO number their categories otherwise
    contiguous_to_dataset_id = {v: k for k, v in metadata.get("thing_dataset_id_to_contiguous_id", {}).items()}

    detections = []
    for path in tqdm.tqdm(paths, disable=len(paths) == 1):
        try:
            image = read_image(path, format=predictor.input_format)
        except Exception as e:  # PIL raises several types, none naming the file
            raise ValueError(f"cannot read image {path}: {e}") from e
        instances = predictor(image)
        instances = instances[instances.scores >= args.score_threshold]
        detections += to_coco(instances, path, contiguous_to_dataset_id)
        if args.output is not None:
            visualizer = Visualizer(convert_image_to_rgb(image, predictor.input_format), metadata)
            drawing = visualizer.draw_instance_predictions(instances).get_image()
            out = os.path.join(args.output, os.path.basename(path)) if output_is_dir else args.output
            Image.fromarray(drawing).save(out)

    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(detections, f)
    logger.info(
        f"{len(detections)} detection(s) scoring >= {args.score_threshold} in {len(paths)} image(s)"
        + (f"; drawn into {args.output}" if args.output else "")
        + (f"; written to {args.json}" if args.json else "")
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Export the model of a LazyConfig file to ONNX: images in, final detections out, any batch and image size.

    python tools/deploy/export_model.py --config-file configs/deformable_detr_r50_two_stage_50ep.py \\
        --checkpoint deformable_detr_r50_two_stage_50ep.pth --output deformable_detr.onnx

The file's inputs are `images` (B, 3, H, W) uint8 (`--input-dtype float32` for float) in the config's input
format (RGB), each image at the top-left of the padded batch, and `image_sizes` (B, 2) int64, each image's
(h, w); its outputs `boxes` (B, N, 4) (x1, y1, x2, y2) in input pixels, `scores` (B, N) and `labels` (B, N)
(the model's contiguous class ids), N fixed by the model (`num_select`). The method's own post-processing is
in the graph (top-k over queries x classes, or DETR's softmax). `--random-weights` exports the randomly
initialised model (for tests). `--verify` runs the file with ONNX Runtime against the PyTorch model on random
images of two sizes other than the export size and a padded batch of two, and prints the largest
differences. `key=value` arguments override the config. Needs the deploy extra (`pip install -e .[deploy]`).
"""
import argparse
import logging
import os
import sys

import torch
from detectron2.config import instantiate
from detectron2.utils.logger import setup_logger

from sam_detr.engine.defaults import load_checkpoint, test_metadata
from sam_detr.utils.cli import load_config, one_line_errors

logger = logging.getLogger("sam_detr.export")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", metavar="FILE", help="the model's weights (a Detectron2 checkpoint)")
    weights.add_argument("--random-weights", action="store_true", help="export the randomly initialised model")
    parser.add_argument("--output", required=True, metavar="FILE", help="the .onnx file to write")
    parser.add_argument("--input-dtype", choices=("uint8", "float32"), default="uint8")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17; default 18)")
    parser.add_argument("--verify", action="store_true", help="compare ONNX Runtime with PyTorch after export")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)

    from sam_detr.export import export_onnx, require_deploy_extra, verify_export

    try:
        require_deploy_extra("onnx", "onnxscript", *(["onnxruntime"] if args.verify else []))
    except ImportError as e:
        parser.error(str(e))
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        parser.error(f"--output {args.output}: its folder does not exist")
    cfg = load_config(parser, args.config_file, args.opts)
    setup_logger(name="sam_detr")
    with one_line_errors(parser):
        torch.manual_seed(0)
        model = instantiate(cfg.model).to("cpu").eval()
        if args.checkpoint is not None:
            load_checkpoint(model, args.checkpoint)
        mapper = cfg.dataloader.test.mapper
        metadata = test_metadata(cfg)
        info = {
            "config_file": os.path.basename(args.config_file),
            "input_format": mapper.get("image_format", "RGB"),
            "thing_classes": list(metadata.get("thing_classes", [])),
            "thing_dataset_id_to_contiguous_id": {
                str(k): v for k, v in metadata.get("thing_dataset_id_to_contiguous_id", {}).items()
            },
        }
        export_onnx(model, args.output, input_dtype=args.input_dtype, opset=args.opset, metadata=info)
        logger.info(f"wrote {args.output} ({os.path.getsize(args.output) / 2**20:.1f} MiB, opset {args.opset})")
        if args.verify:
            for line in verify_export(model, args.output):
                logger.info(line)


if __name__ == "__main__":
    sys.exit(main())

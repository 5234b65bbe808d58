#!/usr/bin/env python
"""Evaluate an exported ONNX file with ONNX Runtime on the test dataset of a LazyConfig file, as
`tools/lazyconfig_train_net.py --eval-only` evaluates the PyTorch model (its test loader, its evaluator:
COCOEvaluator for COCO), so that the AP of what is deployed can be checked.

    python tools/deploy/evaluate_onnx.py --config-file configs/deformable_detr_r50_two_stage_50ep.py \\
        --onnx deformable_detr.onnx dataloader.test.batch_size=2

`--threads` sets ONNX Runtime's intra-op threads (default: one per core). `key=value` arguments override
the config (the dataset: dataloader.test.dataset.names=...; the batch: dataloader.test.batch_size=...).
Needs the deploy extra (`pip install -e .[deploy]`).
"""
import argparse
import os

from detectron2.utils.logger import setup_logger

from sam_detr.engine.train_net import do_test
from sam_detr.utils.cli import load_config, one_line_errors


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--onnx", required=True, metavar="FILE", help="the exported file")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.onnx):
        parser.error(f"--onnx {args.onnx}: no such file")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    cfg = load_config(parser, args.config_file, args.opts)
    if cfg.dataloader.get("evaluator") is None:
        parser.error(f"{args.config_file} has no dataloader.evaluator")
    setup_logger()
    setup_logger(name="sam_detr")
    with one_line_errors(parser, also=(ImportError,)):
        from sam_detr.export import OnnxDetector

        return do_test(cfg, OnnxDetector(args.onnx, num_threads=args.threads))


if __name__ == "__main__":
    main()

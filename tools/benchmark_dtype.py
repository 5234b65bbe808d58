#!/usr/bin/env python
"""Inference in bfloat16 against float32 (`model.inference_dtype`): box AP and seconds per image, side by side;
and the training step with train.amp in bfloat16 against float32.

    # a trained checkpoint: AP on the config's test dataset and the model's time per image, at each dtype
    python tools/benchmark_dtype.py --threads 1 --clock cpu \\
        --config-file configs/quickstart/deformable_detr.py --checkpoint output/race/deformable_detr/model_final.pth
    # a published-size model (its random initialisation: the time does not depend on the weights)
    python tools/benchmark_dtype.py --threads 1 --clock cpu --config-file configs/deformable_detr_r50_50ep.py \\
        --sizes 480x640 800x1333 --iters 3
    # the training step (forward, losses, backward, optimizer step) at float32 and with train.amp in bfloat16
    python tools/benchmark_dtype.py --threads 1 --clock cpu --config-file configs/deformable_detr_r50_50ep.py \\
        --train-sizes 480x640 --iters 3

With `--checkpoint` the model is evaluated on its config's test dataset at each dtype (d2's test loader and
`COCOEvaluator`); with `--sizes`, one random image of each size goes through the model `--warmup` + `--iters`
times per dtype (the median is printed); with `--train-sizes`, one random image of each size with three boxes
goes through the training step (`sam_detr.engine.train_net.build_trainer`, as training runs it) `--warmup` +
`--iters` times per dtype, each from the same initialisation. Any of them can be given. `--clock cpu` reports
the process's CPU seconds (which other processes' load changes far less than wall seconds; they sum the threads', so use it with
`--threads 1`), `--clock wall` wall seconds. `--profile HxW` adds torch.profiler's operators by CPU time for
one image of that size, per dtype: where the time goes. `key=value` arguments override the config. The
measurements are `sam_detr.evaluation.inference_dtype` and `.training_dtype`; this file is their command line.
"""
import argparse

import torch
from detectron2.utils.logger import setup_logger

from sam_detr.engine.defaults import build_inference_model
from sam_detr.evaluation.inference_dtype import evaluate_dtypes, format_rows, profile_dtypes, time_dtypes
from sam_detr.evaluation.training_dtype import time_training_dtypes
from sam_detr.utils.cli import image_size, load_config, one_line_errors


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--checkpoint", help="weights to evaluate (AP and time on the config's test dataset)")
    parser.add_argument("--sizes", nargs="+", type=image_size, default=[], metavar="HxW",
                        help="time one image of each size (random weights unless --checkpoint)")
    parser.add_argument("--train-sizes", nargs="+", type=image_size, default=[], metavar="HxW",
                        help="time the training step on one image of each size, float32 against train.amp bfloat16")
    parser.add_argument("--profile", type=image_size, metavar="HxW", help="operators by CPU time at this size")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)
    if not (args.checkpoint or args.sizes or args.train_sizes or args.profile):
        parser.error("give --checkpoint (AP and time on the test dataset), --sizes, --train-sizes and/or --profile")
    cfg = load_config(parser, args.config_file, args.opts)
    if args.threads:
        torch.set_num_threads(args.threads)
    setup_logger(name="sam_detr")
    cfg.train.init_checkpoint = args.checkpoint or ""
    rows = []
    with one_line_errors(parser):
        model = build_inference_model(cfg, args.device)
        if not hasattr(model, "inference_dtype"):
            parser.error(f"{type(model).__name__} has no inference_dtype (a DETRBase model has)")
        name = args.config_file
        if args.checkpoint:
            results = evaluate_dtypes(model, cfg)
            dataset = cfg.dataloader.test.dataset.names
            rows.append({"model": name, "measure": f"box AP, {dataset}",
                         **{k: v["AP"] for k, v in results.items()}})
            rows.append({"model": name, "measure": f"s/image, {dataset}", **results})
        for hw, results in time_dtypes(model, args.sizes, args.iters, args.warmup).items():
            rows.append({"model": name, "measure": f"s/image, {hw[0]}x{hw[1]}", **results})
        tables = profile_dtypes(model, args.profile, args.iters, args.warmup) if args.profile else {}
        for hw, results in time_training_dtypes(cfg, args.train_sizes, args.iters, args.warmup, args.device).items():
            rows.append({"model": name, "measure": f"s/training step, {hw[0]}x{hw[1]}", **results})
    where = (f"{args.device}, {torch.get_num_threads()} thread(s), {args.clock} seconds of the model's forward "
             "(inference) or of the training step (train.amp for bfloat16)")
    print(f"\nfloat32 against bfloat16 inference (model.inference_dtype) and training on {where}")
    if rows:
        print(format_rows(rows, args.clock))
    for dtype, table in tables.items():
        print(f"\n{dtype}, {args.iters} image(s) at {args.profile[0]}x{args.profile[1]}, operators by self CPU time:"
              f"\n{table}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Inference speed and peak memory of a model exported to ONNX and run by ONNX Runtime, side by side with
the PyTorch model, in one run on the CPU.

    python tools/deploy/benchmark_onnx.py --config-file configs/quickstart/deformable_detr.py \\
        --threads 1 --clock cpu --sizes 480x640 800x1333

The model of the config (random weights: the cost does not depend on them) is exported once
(`sam_detr.export.export_onnx`) and both run the same batched inputs (one image of each size, uint8 RGB, as
the test loader gives it): the PyTorch model in eval mode without gradients, with `--threads` torch threads;
the file through `OnnxDetector` (the same padding and `detector_postprocess`), with `--threads` ONNX Runtime
intra-op threads. After `--warmup` untimed calls, `--iters` calls are timed one by one
(`sam_detr.utils.benchmark.time_calls`); `--clock cpu` reports the process's CPU seconds per call, which
other load on the machine changes far less than wall seconds. Peak memory: how far the process's peak
resident memory rose during the calls (MiB). `key=value` arguments override the config. Needs the deploy
extra (`pip install -e .[deploy]`).
"""
import argparse
import os
import tempfile

import torch
from detectron2.config import instantiate
from tabulate import tabulate

from sam_detr.utils.benchmark import time_calls
from sam_detr.utils.cli import image_size, load_config, one_line_errors


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--sizes", nargs="+", type=image_size, default=[(480, 640), (800, 1333)], metavar="HxW")
    parser.add_argument("--threads", type=int, default=1, help="torch threads and ONNX Runtime intra-op threads")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    cfg = load_config(parser, args.config_file, args.opts)
    torch.set_num_threads(args.threads)
    with one_line_errors(parser, also=(ImportError,)):
        from sam_detr.export import OnnxDetector, export_onnx

        model = instantiate(cfg.model).to("cpu").eval()
        directory = tempfile.TemporaryDirectory()
        detector = OnnxDetector(export_onnx(model, os.path.join(directory.name, "model.onnx")), args.threads)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for height, width in args.sizes:
        inputs = [{"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)}]
        seconds, peaks = [], []
        for run in (model, detector):
            with torch.no_grad():
                timing = time_calls(lambda: run(inputs), args.iters, args.warmup)
            seconds.append(timing.seconds(args.clock))
            peaks.append(timing.memory.rise_mib)
        rows.append([f"{height}x{width}", *seconds, seconds[0] / seconds[1], *peaks])
    directory.cleanup()
    print(f"{args.config_file} on the CPU, {args.threads} thread(s), batch 1, {args.warmup} warm-up + {args.iters} "
          f"timed call(s); {args.clock} seconds per call; peak memory: rise of the peak RSS (MiB)")
    headers = ["size", "PyTorch (s)", "ONNX Runtime (s)", "ONNX Runtime speed-up", "peak PyTorch", "peak ONNX Runtime"]
    print(tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".3f"))
    return rows


if __name__ == "__main__":
    main()

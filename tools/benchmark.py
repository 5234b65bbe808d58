#!/usr/bin/env python
"""Training and inference speed and peak memory of the model of a LazyConfig file, on one device.

    python tools/benchmark.py --config-file configs/detr_r50_500ep.py --device cuda \\
        dataloader.train.total_batch_size=4
    python tools/benchmark.py --config-file configs/quickstart/detr.py --device cpu --iters 10 --warmup 2

Data loading is excluded: the first 8 batches of the config's train loader and the first 16 images of its
test loader are loaded before anything is timed, then reused in turn.

  train       iterations of the training step (`sam_detr.engine.train_net.build_trainer`: forward, losses,
              backward, gradient clipping, optimizer step, with AMP when train.amp.enabled) on batches of
              dataloader.train.total_batch_size images, in one process (no DDP)
  inference   images per second through the model in eval mode, without gradients, in batches of 1 and 4

After `--warmup` untimed iterations, `--iters` iterations are timed (`sam_detr.utils.benchmark.time_calls`:
CUDA events on a GPU). Peak memory (`sam_detr.utils.benchmark.PeakMemory`, over the warm-up and the timed
iterations): on CUDA, torch.cuda.max_memory_allocated (the model, optimizer state and activations); on
the CPU, how far the process's peak resident memory (Linux VmHWM) rose above its resident memory at the
start of the warm-up (activations, gradients, optimizer state: the model is already there). The weights keep their random initialisation: the cost of these models does not depend on
them. `key=value` arguments override the config.
"""
import argparse
import gc
import itertools
from typing import List, Optional

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from sam_detr.engine.train_net import build_trainer
from sam_detr.utils.benchmark import time_calls

PRELOAD_TRAIN = 8
PRELOAD_TEST = 16
INFERENCE_BATCH_SIZES = (1, 4)


def memory_mib(timing) -> Optional[float]:
    """The peak memory this tool prints (see the module's doc)."""
    return timing.memory.peak_mib if timing.memory.device.type == "cuda" else timing.memory.rise_mib


def benchmark_inference(cfg, device: torch.device, warmup: int, iters: int) -> List[list]:
    images = [batch[0] for batch in itertools.islice(instantiate(cfg.dataloader.test), PRELOAD_TEST)]
    model = instantiate(cfg.model).to(device).eval()
    rows = []
    for batch_size in INFERENCE_BATCH_SIZES:
        batches = [images[i : i + batch_size] for i in range(0, len(images) - batch_size + 1, batch_size)]
        if not batches:
            raise ValueError(f"the test loader has fewer than {batch_size} images")
        inputs = itertools.cycle(batches)
        with torch.no_grad():
            timing = time_calls(lambda: model(next(inputs)), iters, warmup, device)
        seconds = sum(timing.wall)
        rows.append(["inference", batch_size, iters / seconds, batch_size * iters / seconds, memory_mib(timing)])
    return rows


def benchmark_train(cfg, device: torch.device, warmup: int, iters: int) -> List[list]:
    batches = list(itertools.islice(instantiate(cfg.dataloader.train), PRELOAD_TRAIN))
    model = instantiate(cfg.model).to(device).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    trainer = build_trainer(cfg, model, itertools.cycle(batches), optimizer)
    with EventStorage() as trainer.storage:
        timing = time_calls(trainer.run_step, iters, warmup, device)
    seconds = sum(timing.wall)
    batch_size = sum(len(b) for b in batches) / len(batches)
    return [["train", f"{batch_size:g}", iters / seconds, batch_size * iters / seconds, memory_mib(timing)]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--tasks", nargs="+", choices=["train", "inference"], default=["train", "inference"])
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the config's train.device)")
    parser.add_argument("--iters", type=int, default=50, help="timed iterations of each measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations before them")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be positive and --warmup not negative")

    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    if args.device is not None:
        cfg.train.device = args.device
    device = torch.device(cfg.train.device)
    setup_logger()

    rows = []
    # inference first: the CPU measure is a rise of the resident memory, which the memory that training
    # leaves to the allocator would hide
    for task, run in (("inference", benchmark_inference), ("train", benchmark_train)):
        if task in args.tasks:
            rows += run(cfg, device, args.warmup, args.iters)
            gc.collect()  # the task's model and data go before the next task measures its memory

    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, peak memory: max_memory_allocated"
    else:
        where = f"CPU ({torch.get_num_threads()} torch threads), peak memory: rise of the peak RSS"
    print(f"\n{args.config_file} on {where}; {args.warmup} warm-up + {args.iters} timed iterations, data pre-loaded")
    print(
        tabulate(
            rows,
            headers=["task", "batch", "iter/s", "images/s", "peak memory (MiB)"],
            floatfmt=".2f",
            missingval="n/a",
            tablefmt="pipe",
        )
    )


if __name__ == "__main__":
    main()

"""Inference in bfloat16 (or float16) against float32: the AP it costs and the speed it gives.

A `DETRBase` model's `inference_dtype` autocasts its backbone and head in eval mode (the post-processing stays in
float32). `evaluate_dtypes` evaluates a model on its config's test dataset once per dtype (d2's test loader,
`COCOEvaluator`, `inference_on_dataset`), with the time of the model's forward; `time_dtypes` times one forward
of a batch of one image of a given size per dtype; `profile_dtypes` lists where the time goes, by operator.
tools/benchmark_dtype.py is the command line.
"""
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import instantiate
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from torch import nn

from ..utils.benchmark import time_calls
from .batch_invariance import CPUTimed

__all__ = ["DTYPES", "dtype_name", "evaluate_dtypes", "time_dtypes", "profile_dtypes", "format_rows"]

DTYPES = (None, "bfloat16")  # None: float32


def dtype_name(dtype: Optional[str]) -> str:
    return dtype or "float32"


def evaluate_dtypes(model: nn.Module, cfg, dtypes: Sequence[Optional[str]] = DTYPES) -> Dict[str, dict]:
    """Per dtype: box AP and AP50 of `model` (eval mode) on cfg.dataloader.test, and the seconds of its forward
    per image ("cpu": the process's CPU time, "wall"); `model.inference_dtype` is restored afterwards."""
    initial, results = model.inference_dtype, {}
    loader = instantiate(cfg.dataloader.test)
    dataset_name = cfg.dataloader.test.dataset.names
    try:
        for dtype in dtypes:
            model.inference_dtype = dtype
            # eval: d2's inference_context restores the wrapper's mode, and with it the model's
            timed = CPUTimed(model).eval()
            with tempfile.TemporaryDirectory() as output_dir:
                evaluator = COCOEvaluator(dataset_name, tasks=("bbox",), distributed=False, output_dir=output_dir)
                ap = inference_on_dataset(timed, loader, evaluator)["bbox"]
            images = max(timed.images, 1)
            results[dtype_name(dtype)] = {"AP": ap["AP"], "AP50": ap["AP50"], "cpu": timed.seconds / images,
                                     "wall": timed.wall_seconds / images}
    finally:
        model.inference_dtype = initial
    return results


def _image(size: Tuple[int, int], device) -> List[dict]:
    """One random image of `size` (H, W) in d2's input format, returned at its own size."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator)
    return [{"image": image.to(device), "height": size[0], "width": size[1]}]


def time_dtypes(model: nn.Module, sizes: Sequence[Tuple[int, int]], iters: int, warmup: int,
                dtypes: Sequence[Optional[str]] = DTYPES) -> Dict[Tuple[int, int], Dict[str, dict]]:
    """Per image size and dtype: the median seconds ("cpu" and "wall") of `model`'s forward of one image of that
    size (eval mode, no gradients) over `iters` calls after `warmup`."""
    initial, results = model.inference_dtype, {}
    model.eval()
    try:
        for size in sizes:
            inputs = _image(size, model.device)
            results[size] = {}
            for dtype in dtypes:
                model.inference_dtype = dtype
                with torch.no_grad():
                    timing = time_calls(lambda: model(inputs), iters, warmup, model.device)
                results[size][dtype_name(dtype)] = {c: timing.seconds(c, "median") for c in ("cpu", "wall")}
    finally:
        model.inference_dtype = initial
    return results


def profile_dtypes(model: nn.Module, size: Tuple[int, int], iters: int = 2, warmup: int = 1, rows: int = 15,
                   dtypes: Sequence[Optional[str]] = DTYPES) -> Dict[str, str]:
    """Per dtype: torch.profiler's table of the operators taking the most CPU time (self time) in `iters`
    forwards of an image of `size`, after `warmup` untimed ones."""
    initial, tables = model.inference_dtype, {}
    inputs = _image(size, model.device)
    model.eval()
    try:
        for dtype in dtypes:
            model.inference_dtype = dtype
            with torch.no_grad():
                for _ in range(warmup):
                    model(inputs)
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                    for _ in range(iters):
                        model(inputs)
            tables[dtype_name(dtype)] = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    finally:
        model.inference_dtype = initial
    return tables


def format_rows(rows: List[dict], clock: str) -> str:
    """Rows of {"model", "measure", "float32", "bfloat16"} (figures, or dicts with the clocks) as a Markdown
    table, with the speed-up where the figures are seconds."""
    lines = ["| model | measure | float32 | bfloat16 | bfloat16 against float32 |", "|---|---|---|---|---|"]
    for row in rows:
        full, half = row["float32"], row["bfloat16"]
        if isinstance(full, dict):  # seconds
            full, half = full[clock], half[clock]
            change = f"{full / half:.2f}x faster"
            figures = f"{full:.3f} s | {half:.3f} s"
        else:
            change = f"{half - full:+.2f} AP"
            figures = f"{full:.2f} | {half:.2f}"
        lines.append(f"| {row['model']} | {row['measure']} | {figures} | {change} |")
    return "\n".join(lines)

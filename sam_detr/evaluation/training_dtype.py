"""Training with train.amp in bfloat16 (or float16) against float32: the time of the training step.

`time_training_dtypes` times the step that training runs (`sam_detr.engine.train_net.build_trainer`: forward,
losses, backward, optimizer step; under autocast with train.amp) on one image of a given size with three boxes,
once per dtype, each from the same initialisation. tools/benchmark_dtype.py (`--train-sizes`) is the command line.
"""
import copy
import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..engine.train_net import build_trainer
from ..utils.benchmark import time_calls
from .inference_dtype import DTYPES, dtype_name

__all__ = ["time_training_dtypes"]


def _training_image(size: Tuple[int, int], num_classes: int) -> List[dict]:
    """One random image of `size` (H, W) with three boxes of the first classes, in d2's training format."""
    height, width = size
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8], [0.6, 0.05, 0.95, 0.4]])
    boxes = boxes * torch.tensor([width, height, width, height], dtype=torch.float32)
    classes = torch.arange(3) % num_classes
    return [{"image": image, "instances": Instances(size, gt_boxes=Boxes(boxes), gt_classes=classes)}]


def time_training_dtypes(cfg, sizes: Sequence[Tuple[int, int]], iters: int, warmup: int, device="cpu",
                         dtypes: Sequence[Optional[str]] = DTYPES) -> Dict[Tuple[int, int], Dict[str, dict]]:
    """Per image size and dtype (None: float32, train.amp off; else train.amp on in that precision): the median
    seconds ("cpu" and "wall") of the training step of cfg's model on one image of that size, over `iters` steps
    after `warmup`. Each dtype starts from the same initialisation (seed 0)."""
    results = {}
    for size in sizes:
        results[size] = {}
        for dtype in dtypes:
            run = copy.deepcopy(cfg)
            run.train.amp.enabled = dtype is not None
            if dtype is not None:
                run.train.amp.precision = dtype
            torch.manual_seed(0)
            model = instantiate(run.model).to(device).train()
            run.optimizer.params.model = model
            optimizer = instantiate(run.optimizer)
            batch = _training_image(size, model.num_classes)
            trainer = build_trainer(run, model, itertools.repeat(batch), optimizer)
            with EventStorage() as trainer.storage:
                timing = time_calls(trainer.run_step, iters, warmup, device)
            results[size][dtype_name(dtype)] = {c: timing.seconds(c, "median") for c in ("cpu", "wall")}
    return results

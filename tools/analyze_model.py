#!/usr/bin/env python
"""FLOPs, activations, parameters or structure of the model of a LazyConfig file (Detectron2's analyze_model).

    python tools/analyze_model.py --config-file configs/detr_r50_500ep.py --tasks flop -n 100
    python tools/analyze_model.py --config-file configs/sam_detr_r50.py --tasks flop --input-size 800x1333
    python tools/analyze_model.py --config-file configs/quickstart/detr.py --tasks parameter structure

FLOPs and activations depend on the image, so they are counted on the first `-n` images of the config's
test loader (cfg.dataloader.test, after its test-time resize), or with `--input-size HxW` on one synthetic
image of that size as the model's input (no dataset needed), by tracing the model in eval mode with
fvcore; one multiply-add counts as one flop, as in the DETR papers. Elementwise ops are not counted (d2's
convention); the other ops without a handle are listed as uncounted. The model keeps its random
initialisation (no download): the counts of these models do not depend on the weights; `--checkpoint FILE`
loads weights. `key=value` arguments override the config, e.g. `train.device=cpu`.
"""
import argparse
import itertools
from collections import Counter
from typing import Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import tqdm
from detectron2.config import instantiate
from detectron2.utils.analysis import parameter_count_table
from detectron2.utils.logger import setup_logger
from fvcore.nn import flop_count_table
from fvcore.nn.jit_analysis import JitModelAnalysis

from sam_detr.engine.defaults import load_checkpoint
from sam_detr.utils.analysis import ActivationCountAnalysis, FlopCountAnalysis
from sam_detr.utils.cli import image_size, load_config, one_line_errors


class Counts(NamedTuple):
    totals: np.ndarray  # per image
    by_operator: Counter  # summed over the images
    uncounted: Counter  # occurrences of the operators without a handle, summed over the images
    first: JitModelAnalysis  # of the first image, for the per-module table
    mean_size: np.ndarray  # (height, width) of the model's inputs


def model_inputs(cfg, num_inputs: int, input_size: Optional[Tuple[int, int]]) -> Iterable[List[dict]]:
    """Batches of one image: the first `num_inputs` of the test loader, or one random image of `input_size`."""
    if input_size is None:
        return itertools.islice(instantiate(cfg.dataloader.test), num_inputs)
    image = torch.randint(0, 256, (3, *input_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return [[{"image": image}]]


def count_over_inputs(model, analysis_class, inputs_list: Iterable[List[dict]]) -> Counts:
    """Runs `analysis_class(model, inputs)` on each batch of `inputs_list`."""
    totals, by_operator, uncounted, sizes, first = [], Counter(), Counter(), [], None
    for inputs in tqdm.tqdm(inputs_list, desc=analysis_class.__name__):
        # the operators left uncounted are summed up below, rather than warned about at every image
        analysis = analysis_class(model, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        totals.append(analysis.total())
        by_operator += analysis.by_operator()
        uncounted += analysis.unsupported_ops()
        sizes.append(inputs[0]["image"].shape[-2:])
        if first is None:
            first = analysis
    if not totals:
        raise ValueError("the test loader (cfg.dataloader.test) yielded no image")
    return Counts(np.array(totals), by_operator, uncounted, first, np.mean(sizes, axis=0))


def do_flop(model, inputs_list, max_depth: int) -> None:
    c = count_over_inputs(model, FlopCountAnalysis, inputs_list)
    n = len(c.totals)
    print(f"GFLOPs by module, first image ({c.first.total() / 1e9:.3f} GFLOPs):")
    print(flop_count_table(c.first, max_depth=max_depth))
    print(f"\nGFLOPs by operator, mean over {n} image(s):")
    for name, count in c.by_operator.most_common():
        print(f"  {name:<32} {count / n / 1e9:.4f}")
    if c.uncounted:
        uncounted = ", ".join(f"{name} x{count}" for name, count in c.uncounted.most_common())
        print(f"\nUncounted operators (no FLOP handle), occurrences over the images: {uncounted}")
    print(
        f"\nTotal GFLOPs over {n} image(s) of mean size {c.mean_size[0]:.0f}x{c.mean_size[1]:.0f}: "
        f"{c.totals.mean() / 1e9:.3f} ± {c.totals.std() / 1e9:.3f}"
    )


def do_activation(model, inputs_list) -> None:
    c = count_over_inputs(model, ActivationCountAnalysis, inputs_list)
    n = len(c.totals)
    print(f"Million activations by operator, mean over {n} image(s):")
    for name, count in c.by_operator.most_common():
        print(f"  {name:<32} {count / n / 1e6:.3f}")
    print(
        f"\nTotal million activations over {n} image(s) of mean size {c.mean_size[0]:.0f}x{c.mean_size[1]:.0f}: "
        f"{c.totals.mean() / 1e6:.3f} ± {c.totals.std() / 1e6:.3f}"
    )


def do_parameter(model, max_depth: int) -> None:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"Parameters: {total / 1e6:.3f} M, of which trainable: {trainable / 1e6:.3f} M")
    print(parameter_count_table(model, max_depth=max_depth))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--tasks", nargs="+", required=True, choices=["flop", "activation", "parameter", "structure"]
    )
    parser.add_argument(
        "-n", "--num-inputs", type=int, default=100, help="images of the test loader to count FLOPs/activations on"
    )
    parser.add_argument("--max-depth", type=int, default=3, help="depth of the module tree in the tables")
    parser.add_argument(
        "--input-size", type=image_size, metavar="HxW", help="count on one image of this size, not on the test loader"
    )
    parser.add_argument("--checkpoint", metavar="FILE", help="weights to load (default: none, random initialisation)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)
    if args.num_inputs < 1:
        parser.error(f"-n must be positive, got {args.num_inputs}")

    cfg = load_config(parser, args.config_file, args.opts)
    setup_logger()
    setup_logger(name="fvcore")
    with one_line_errors(parser):
        model = instantiate(cfg.model).to(cfg.train.device).eval()
        if args.checkpoint:
            load_checkpoint(model, args.checkpoint)
        for task in args.tasks:
            print(f"\n===== {task} =====")
            if task in ("flop", "activation"):
                try:
                    inputs_list = model_inputs(cfg, args.num_inputs, args.input_size)
                except FileNotFoundError as e:
                    raise FileNotFoundError(f"the test data of the config cannot be read ({e}); --input-size HxW "
                                            "counts on an image of that size instead") from e
            if task == "flop":
                do_flop(model, inputs_list, args.max_depth)
            elif task == "activation":
                do_activation(model, inputs_list)
            elif task == "parameter":
                do_parameter(model, args.max_depth)
            else:
                print(model)


if __name__ == "__main__":
    main()

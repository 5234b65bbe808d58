"""Times sam_detr.layers.roi_align against torchvision.ops.roi_align on CPU at SAM-DETR's shapes.

The Semantics Aligner pools 7x7 bins (aligned, adaptive sampling) of 256-channel encoder memory for
300 reference boxes per image: sigmoid(logits) as (cx, cy, w, h) scaled to the feature map.

    python tools/benchmark_roi_align.py --threads 2 --repeat 20

Prints, per shape, the median (and min) milliseconds of the forward, the backward alone and both,
and torchvision's time over ours.
"""

import argparse
from typing import List

import torch
import torchvision

from sam_detr.layers import _ext, roi_align
from sam_detr.utils.benchmark import time_calls

# (name, batch, height, width): stride 32 (R50), stride 16 (DC5), stride 8 (the largest multi-scale level)
SHAPES = [
    ("R50 15x20 b1", 1, 15, 20),
    ("R50 15x20 b2", 2, 15, 20),
    ("R50 15x20 b4", 4, 15, 20),
    ("DC5 30x40 b1", 1, 30, 40),
    ("DC5 30x40 b2", 2, 30, 40),
    ("MS  60x80 b1", 1, 60, 80),
]


def reference_boxes(batch: int, num: int, height: int, width: int, gen: torch.Generator) -> List[torch.Tensor]:
    """`batch` tensors (num, 4) x1y1x2y2 in feature-map pixels, as SAM-DETR's sigmoid reference boxes."""
    cxcywh = torch.randn(batch, num, 4, generator=gen).sigmoid()
    xyxy = torch.cat([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1)
    return list(xyxy * torch.tensor([width, height, width, height], dtype=torch.float32))


def bench(op, x, boxes, grad, repeat):
    """Milliseconds (median, min) of the forward, the backward alone and both, after two warm-up calls."""

    def forward():
        return op(x, boxes, 7, 1.0, -1, True)

    def clear_grad():
        x.grad = None

    def fresh_forward():  # untimed before each timed backward
        clear_grad()
        return forward()

    def backward(out):
        out.backward(grad)

    def both(_):
        forward().backward(grad)

    timings = [
        time_calls(forward, repeat, warmup=2),
        time_calls(backward, repeat, warmup=2, setup=fresh_forward),
        time_calls(both, repeat, warmup=2, setup=clear_grad),
    ]
    return [(t.seconds("wall", "median") * 1e3, t.seconds("wall", "min") * 1e3) for t in timings]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--boxes", type=int, default=300, help="boxes per image")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--shapes", nargs="*", help="subset of shape names (e.g. 'R50 15x20 b1')")
    parser.add_argument(
        "--isa", choices=["default", "avx2", "avx512"], help="instruction set of sam_detr's kernels (default: widest)"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    ext = _ext.get_extension()
    if ext is None or not hasattr(ext, "roi_align_forward"):
        raise SystemExit("sam_detr._C with roi_align is not built: python setup.py build_ext --inplace")
    if args.isa:
        ext.set_cpu_isa(args.isa)
    isa = ext.cpu_isa()
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads, {args.dtype}, "
        f"kernels: {isa}; {args.boxes} boxes/image, {args.channels} channels, 7x7, aligned, sampling_ratio -1"
    )
    print("milliseconds, median (min) of", args.repeat, "runs; ratio = torchvision / sam_detr (medians)")
    header = f"{'shape':<14} {'op':<12} {'forward':>17} {'backward':>17} {'fwd+bwd':>17}"
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    for name, batch, height, width in SHAPES:
        if args.shapes and name not in args.shapes:
            continue
        x = torch.randn(batch, args.channels, height, width, generator=gen, dtype=dtype).requires_grad_(True)
        boxes = [b.to(dtype) for b in reference_boxes(batch, args.boxes, height, width, gen)]
        grad = torch.randn(batch * args.boxes, args.channels, 7, 7, generator=gen, dtype=dtype)
        results = {}
        for label, op in (("torchvision", torchvision.ops.roi_align), ("sam_detr", roi_align)):
            results[label] = bench(op, x, boxes, grad, args.repeat)
            cells = " ".join(f"{med:>8.2f} ({low:>6.2f})" for med, low in results[label])
            print(f"{name:<14} {label:<12} {cells}")
        ratios = " ".join(f"{tv[0] / ours[0]:>16.1f}x" for tv, ours in zip(results["torchvision"], results["sam_detr"]))
        print(f"{name:<14} {'ratio':<12} {ratios}")


if __name__ == "__main__":
    main()

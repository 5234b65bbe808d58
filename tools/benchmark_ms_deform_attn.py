#!/usr/bin/env python
"""Times multi-scale deformable attention: the compiled op (`sam_detr._C`) against the PyTorch path, and
on CUDA against the official Deformable DETR kernel when it is importable.

Shapes (800x1333 input by default; 8 heads of 32 channels, 4 points):
  encoder   Deformable DETR encoder: 4 levels at strides 8/16/32/64 (100x167, 50x84, 25x42, 13x21),
            Lq = S = 22,223 queries on the grid of reference points
  decoder   Deformable DETR decoder: 300 queries at random reference points over the same value
  samdetr   SAM-DETR multi-scale encoder: 3 levels (100x167, 50x84, 25x42), Lq = S

Locations are the module's initial sampling pattern (head direction times point index, in pixels of
each level) around the reference points, plus N(0, 1 px) noise; weights are a softmax of N(0, 1)
logits. Times are medians over --repeat runs after one warm-up; "fwd+bwd" runs the forward and the
backward through autograd (`sam_detr.utils.benchmark.time_calls`: CUDA events on a GPU). Peak memory is
the increase over the inputs while the calls run (`sam_detr.utils.benchmark.PeakMemory`): CUDA from
torch.cuda.max_memory_allocated, CPU from the process's peak resident memory (with glibc's mmap threshold
fixed at 1 MiB, so that freed tensors leave the resident memory between measurements).

  python tools/benchmark_ms_deform_attn.py --device cpu               # batch 1, all shapes
  python tools/benchmark_ms_deform_attn.py --device cuda --official /path/to/built/ops
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sam_detr.layers import _ext  # noqa: E402
from sam_detr.layers.ms_deform_attn import ms_deform_attn, ms_deform_attn_pytorch  # noqa: E402
from sam_detr.utils.benchmark import time_calls  # noqa: E402

STRIDES = {"encoder": (8, 16, 32, 64), "decoder": (8, 16, 32, 64), "samdetr": (8, 16, 32)}
# H100 SXM / H200 HBM3(e) peak bandwidth in GB/s, for the roofline fraction
PEAK_BANDWIDTH = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}


def level_shapes(image_hw, strides):
    return [(math.ceil(image_hw[0] / s), math.ceil(image_hw[1] / s)) for s in strides]


def make_inputs(name, image_hw, batch, heads, channels, points, dtype, device, seed=0):
    """value (N, S, M, D), spatial_shapes, level_start_index, locations (N, Lq, M, L, P, 2), weights."""
    g = torch.Generator().manual_seed(seed)
    shapes = level_shapes(image_hw, STRIDES[name])
    L = len(shapes)
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S = int(areas.sum())
    if name == "decoder":
        refs = torch.rand(batch, 300, 2, generator=g)
    else:  # pixel centres of every level, as the encoder's reference points
        centres = []
        for h, w in shapes:
            ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
            centres.append(torch.stack([xs.flatten(), ys.flatten()], -1))
        refs = torch.cat(centres)[None].expand(batch, -1, -1)
    Lq = refs.shape[1]
    thetas = torch.arange(heads) * (2 * math.pi / heads)
    direction = torch.stack([thetas.cos(), thetas.sin()], -1)
    direction = direction / direction.abs().max(-1, keepdim=True)[0]
    pattern = direction[:, None, :] * torch.arange(1, points + 1)[None, :, None]  # (M, P, 2) pixels
    offsets = pattern[None, None, :, None] + torch.randn(batch, Lq, heads, L, points, 2, generator=g)
    normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)[None, None, None, :, None]
    locations = refs[:, :, None, None, None, :] + offsets / normalizer
    weights = torch.randn(batch, Lq, heads, L * points, generator=g).softmax(-1).view(batch, Lq, heads, L, points)
    value = torch.randn(batch, S, heads, channels, generator=g)
    loc_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return (
        value.to(device, dtype),
        spatial_shapes.to(device),
        level_start_index.to(device),
        locations.to(device, loc_dtype).contiguous(),
        weights.to(device, loc_dtype).contiguous(),
    )


def compulsory_bytes(inputs):
    """HBM bytes touched once each: forward reads value, locations, weights and writes the output;
    backward reads those inputs and grad_output and writes the three gradients (no memsets)."""
    value, _, _, loc, attn = inputs
    N, _, M, D = value.shape
    out = N * loc.shape[1] * M * D * value.element_size()
    ins = sum(t.numel() * t.element_size() for t in (value, loc, attn))
    return ins + out, 2 * ins + out


def make_runs(fn, inputs, grad_output):
    """(forward, forward + backward) closures of an op with the signature of ms_deform_attn."""
    value, ss, lsi, loc, attn = inputs
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]

    def forward():
        with torch.no_grad():
            return fn(value, ss, lsi, loc, attn)

    def forward_backward():
        out = fn(leaves[0], ss, lsi, leaves[1], leaves[2])
        return torch.autograd.grad(out, leaves, grad_output)

    return forward, forward_backward


def official_op(module):
    """ms_deform_attn-like callable around the official MultiScaleDeformableAttention extension."""

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value, ss, lsi, loc, attn):
            ctx.save_for_backward(value, ss, lsi, loc, attn)
            return module.ms_deform_attn_forward(value, ss, lsi, loc, attn, 64)

        @staticmethod
        def backward(ctx, grad_output):
            grads = module.ms_deform_attn_backward(*ctx.saved_tensors, grad_output.contiguous(), 64)
            return grads[0], None, None, grads[1], grads[2]

    return Function.apply


def measure(fn, device, repeat):
    """Median seconds and peak memory increase (MiB) of fn(), after one warm-up call."""
    timing = time_calls(fn, repeat, warmup=1, device=device)
    return timing.seconds("wall", "median"), timing.memory.rise_mib


def fmt_mib(mib):
    return f"{'n/a':>8}" if mib is None else f"{mib:8.1f}"


def peak_bandwidth(override):
    if override:
        return override, "given"
    name = torch.cuda.get_device_name()
    for key, gbs in PEAK_BANDWIDTH.items():
        if key in name:
            return gbs, f"{key} spec"
    # unknown GPU: a large device-to-device copy as a practical bound
    x = torch.empty(1 << 28, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize()
    return 2 * x.numel() * 4 * 10 / (start.elapsed_time(end) / 1e3) / 1e9, "measured copy"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="default: 1 on CPU, 2 on CUDA")
    parser.add_argument("--repeat", type=int, help="timed runs per measurement (default: 3 on CPU, 50 on CUDA)")
    parser.add_argument("--shapes", default="encoder,decoder,samdetr", help="comma list of encoder, decoder, samdetr")
    parser.add_argument("--image", default="800x1333", help="input image HxW the levels are derived from")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--isa", choices=["default", "avx2", "avx512"], help="instruction set of the CPU kernels (default: widest)"
    )
    parser.add_argument("--no-pytorch", action="store_true", help="skip the (slow) PyTorch path")
    parser.add_argument("--official", help="directory holding the built official MultiScaleDeformableAttention")
    parser.add_argument("--bandwidth", type=float, help="peak memory bandwidth in GB/s for the roofline fraction")
    args = parser.parse_args()

    device = args.device
    if device == "cpu" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # glibc otherwise keeps freed large blocks in the heap (its mmap threshold grows with each free),
        # and the RSS would not fall back between measurements; rerun with a fixed threshold
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    batch = args.batch or (2 if device == "cuda" else 1)
    repeat = args.repeat or (50 if device == "cuda" else 3)
    dtype = getattr(torch, args.dtype)
    image_hw = tuple(int(v) for v in args.image.split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if not _ext.kernel_available("ms_deform_attn", torch.device(device)):
        reason = _ext.unavailable_reason("ms_deform_attn", torch.device(device))
        sys.exit(f"sam_detr._C has no {device} kernels: {reason}")
    if args.isa:
        _ext.get_extension().set_cpu_isa(args.isa)

    ops = {"compiled": ms_deform_attn}
    if not args.no_pytorch:
        ops["pytorch"] = ms_deform_attn_pytorch
    if args.official:
        if device != "cuda" or dtype not in (torch.float32, torch.float64):
            sys.exit("--official needs --device cuda and float32 or float64 (the official kernel has no others)")
        sys.path.insert(0, args.official)
        import MultiScaleDeformableAttention

        ops["official"] = official_op(MultiScaleDeformableAttention)

    if device == "cuda":
        bandwidth, source = peak_bandwidth(args.bandwidth)
        print(f"device: {torch.cuda.get_device_name()}, peak bandwidth {bandwidth:.0f} GB/s ({source})")
    else:
        print(f"device: CPU, {torch.get_num_threads()} threads, kernels for {_ext.get_extension().cpu_isa()}")
    print(f"batch {batch}, {args.dtype}, image {image_hw[0]}x{image_hw[1]}, median of {repeat} runs\n")

    header = f"{'shape':8} {'op':9} {'fwd ms':>9} {'f+b ms':>9} {'fwd x':>7} {'f+b x':>7} {'fwd MiB':>8} {'f+b MiB':>8}"
    if device == "cuda":
        header += f" {'fwd %bw':>8} {'bwd %bw':>8}"
    print(header)
    for name in args.shapes.split(","):
        inputs = make_inputs(name, image_hw, batch, 8, 32, 4, dtype, device)
        N, S, M, D = inputs[0].shape
        Lq = inputs[3].shape[1]
        grad_output = torch.randn(N, Lq, M * D, device=device, dtype=dtype)
        fwd_bytes, bwd_bytes = compulsory_bytes(inputs)
        results = {}
        for op_name, fn in ops.items():
            forward, forward_backward = make_runs(fn, inputs, grad_output)
            results[op_name] = measure(forward, device, repeat), measure(forward_backward, device, repeat)
        base = results.get("pytorch")
        for op_name, ((t_f, m_f), (t_fb, m_fb)) in results.items():
            ratio_f = f"{base[0][0] / t_f:7.1f}" if base else f"{'-':>7}"
            ratio_fb = f"{base[1][0] / t_fb:7.1f}" if base else f"{'-':>7}"
            row = (
                f"{name:8} {op_name:9} {t_f * 1e3:9.3f} {t_fb * 1e3:9.3f} {ratio_f} {ratio_fb}"
                f" {fmt_mib(m_f)} {fmt_mib(m_fb)}"
            )
            if device == "cuda":
                t_b = max(t_fb - t_f, 1e-9)
                row += f" {fwd_bytes / t_f / 1e9 / bandwidth:8.1%} {bwd_bytes / t_b / 1e9 / bandwidth:8.1%}"
            print(row, flush=True)
        print(
            f"{'':8} S = {S}, Lq = {Lq}, levels {level_shapes(image_hw, STRIDES[name])};"
            f" compulsory bytes: fwd {fwd_bytes / 1e6:.1f} MB, bwd {bwd_bytes / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()

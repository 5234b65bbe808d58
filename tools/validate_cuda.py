#!/usr/bin/env python
"""Proves the CUDA path of sam_detr's compiled ops in one run on a GPU machine, from the repository root:

    python tools/validate_cuda.py --build --official /path/to/Deformable-DETR/models/ops

--build first compiles sam_detr._C in place with its CUDA kernels for the visible GPU's architecture only
(FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=<its compute capability>, unless set); --official compiles the official
kernel (Deformable DETR's models/ops: its src/ is copied into a temporary folder, with one patch for current
torch, and built with torch's cpp_extension.load, in parallel with --build) and compares with it. Without
--official those checks are skipped. Sized for under 5 minutes on an H100 with 16 cores, build included
(an estimate until it has run on one).

    python tools/validate_cuda.py --device cpu        # the checks that run on the CPU kernels (a test runs it)
    compute-sanitizer python tools/validate_cuda.py --quick --no-train

Prints one line per check, PASS / FAIL / SKIP (with why) / INFO, then a summary; exits 1 when a check failed.
The checks run smallest first and synchronise after each, so an asynchronous fault (illegal address) is
reported at the check that caused it; after one the CUDA context is lost and every later check fails too:
look at the first FAIL.

Checks ("cpu": also run with --device cpu, on the CPU kernels, with small stand-ins for the large shapes):
  build           (--build) sam_detr._C compiled with CUDA for this GPU
  env        cpu  sam_detr._C imports from this checkout, with CUDA kernels on a GPU (else nothing is meaningful)
  fp64, fp32 cpu  forward and the three gradients vs ms_deform_attn_pytorch (grid_sample) over the unit-test
                  shapes (D = 1..2048, odd D, 1-pixel levels, N = 64) and the model shapes (Deformable DETR
                  encoder / decoder, SAM-DETR's multi-scale encoder)
  cpu-vs-cuda     float64 CUDA kernel vs the CPU kernel
  edges      cpu  float64 vs the official kernel's formula at pixel centres, borders and just inside / outside
                  the map, grad_loc included (grid_sample's one-sided derivative differs there)
  gradcheck  cpu  torch.autograd.gradcheck in float64, scalar and vector paths
  fp16, bf16 cpu  float16 / bfloat16 values (float32 locations / weights) vs float64 on the same rounded values
  autocast   cpu  MSDeformAttn under autocast (float16 with a GradScaler step, bfloat16); roi_align under autocast
  levels     cpu  a level table that does not fit in value is refused
  paths      cpu  vector path vs scalar path (value 4 bytes off 16-byte alignment)
  empty      cpu  N = 0, Lq = 0, D = 0
  determinism cpu CUDA: the backward raises under torch.use_deterministic_algorithms; CPU: bit-identical
  stream          a side stream gives the default stream's result
  multi-gpu       tensors on cuda:k while cuda:0 is current, and the converse (SKIP with one GPU)
  big value  cpu  value with > 2^31 elements (batch offsets beyond int32) vs the same kernel on a slice
  big output cpu  output with > 2^31 elements, scalar and vector paths, first / last queries vs a slice
  official        outputs and gradients vs the official CUDA kernel, float32 and float64
  speed      cpu  compiled vs the PyTorch path and the official kernel: Deformable DETR encoder / decoder at
                  800x1333, batch 2, float32 and float16 (CPU: a small image, figures only)
  train      cpu  5 iterations of the Deformable DETR and SAM-DETR quickstarts on the GPU through
                  tools/lazyconfig_train_net.py, float32 and AMP, finite losses (CPU: configs and overrides load)
"""
import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from fractions import Fraction
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tools")]

import benchmark_ms_deform_attn as bench  # noqa: E402

from sam_detr.layers import _ext, roi_align  # noqa: E402
from sam_detr.layers.ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_pytorch  # noqa: E402

DEV = "cuda"
RESULTS = []
OFFICIAL_NAME = "MultiScaleDeformableAttention_official"
SMOKE_CONFIGS = ("deformable_detr", "sam_detr")


class Skip(Exception):
    pass


class Failed(Exception):
    pass


def report(status, name, detail=""):
    RESULTS.append((status, name, detail))
    print(f"{status:4} {name}: {detail}", flush=True)


def run_check(name, fn, *args):
    """Runs one check: its return value is the PASS detail; Failed / any exception is a FAIL, Skip a SKIP."""
    start = time.time()
    try:
        detail = fn(*args)
        if DEV == "cuda":
            torch.cuda.synchronize()
        report("PASS", name, f"{detail} [{time.time() - start:.1f} s]")
    except Skip as e:
        report("SKIP", name, str(e))
    except Failed as e:
        report("FAIL", name, f"{e} [{time.time() - start:.1f} s]")
    except Exception as e:  # noqa: BLE001 - any error is this check's failure
        where = " / ".join(traceback.format_exc(limit=-2).strip().splitlines()[-3:])
        report("FAIL", name, f"{type(e).__name__}: {str(e)[:800]} | {where}")


def cuda_only():
    if DEV != "cuda":
        raise Skip("needs a GPU")


def synchronize():
    if DEV == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------
# inputs and comparisons


def make_inputs(N, M, D, shapes, Lq, P, dtype=torch.float64, device=None, seed=0, lo=-0.2, hi=1.2):
    """Random inputs; locations uniform in [lo, hi] (about a fifth outside [0, 1] by default), weights summing
    to 1 per query and head; locations / weights in value's op-math dtype."""
    g = torch.Generator().manual_seed(seed)
    ss = torch.tensor(shapes, dtype=torch.int64).view(-1, 2)
    areas = ss.prod(1)
    lsi = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S, L = int(areas.sum()), len(shapes)
    value = torch.randn(N, S, M, D, generator=g, dtype=torch.float64)
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=torch.float64) * (hi - lo) + lo
    attn = torch.rand(N, Lq, M, L, P, generator=g, dtype=torch.float64)
    attn = attn / attn.sum((-1, -2), keepdim=True).clamp_min(1e-12)
    loc_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    device = device or DEV
    return (value.to(device, dtype), ss.to(device), lsi.to(device), loc.to(device, loc_dtype),
            attn.to(device, loc_dtype))


def grad_for(inputs, seed=1):
    value, _, _, loc, _ = inputs
    N, _, M, D = value.shape
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, loc.shape[1], M * D, generator=g, dtype=torch.float64).to(value.device, value.dtype)


def run_op(fn, value, ss, lsi, loc, attn, grad_output=None):
    """Output and the gradients (value, locations, weights) of fn through autograd."""
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
    out = fn(leaves[0], ss, lsi, leaves[1], leaves[2])
    if grad_output is None or out.numel() == 0:
        return out.detach(), None
    return out.detach(), list(torch.autograd.grad(out, leaves, grad_output))


def rel_err(actual, expected, chunk=1 << 26):
    """max |a - e| / (|e| + max |e|): round-off relative to the largest entry, as the unit tests measure it;
    in float64, a chunk at a time (the large checks compare gradients of billions of elements)."""
    a, e = actual.reshape(-1), expected.reshape(-1).to(actual.device)
    if e.numel() == 0:
        return 0.0
    scale = max(e.abs().max().item(), 1e-30)
    worst = 0.0
    for start in range(0, e.numel(), chunk):
        a_part, e_part = a[start:start + chunk].double(), e[start:start + chunk].double()
        if not torch.isfinite(a_part).all():
            return math.inf
        worst = max(worst, ((a_part - e_part).abs() / (e_part.abs() + scale)).max().item())
    return worst


def compare(actual, expected, tol, names=("out", "grad_value", "grad_loc", "grad_attn")):
    """(all within tol, "name=err ..." )."""
    errs = [rel_err(a, e) for a, e in zip(actual, expected)]
    return all(e <= tol for e in errs), " ".join(f"{n}={e:.1e}" for n, e in zip(names, errs))


# (name, (N, M, D, level shapes, Lq, P)): the unit tests' shapes, vector widths 1 to 2048, then model shapes
CASES = [
    ("D1", (1, 1, 1, [(5, 7)], 4, 1)),
    ("D2", (2, 3, 2, [(3, 5)], 7, 3)),
    ("D8", (2, 3, 8, [(3, 5), (2, 2)], 7, 3)),
    ("D12", (2, 3, 12, [(3, 5), (2, 2)], 7, 3)),
    ("D30", (3, 2, 30, [(6, 4), (3, 2)], 5, 2)),
    ("D32-4levels", (1, 4, 32, [(8, 9), (4, 5), (2, 3), (1, 1)], 6, 4)),
    ("D71-thin", (3, 3, 71, [(1, 6), (7, 1), (3, 3)], 3, 3)),
    ("D256-chunked", (2, 1, 256, [(4, 4), (2, 2)], 3, 2)),
    ("D1025", (2, 2, 1025, [(5, 4), (2, 3)], 3, 2)),
    ("D2048", (1, 1, 2048, [(3, 4)], 2, 2)),
    ("N64-partial-block", (64, 2, 8, [(4, 5)], 3, 2)),
    ("many-heads", (1, 16, 16, [(4, 4)], 33, 2)),
    ("ddetr-decoder-512px", (2, 8, 32, [(64, 86), (32, 43), (16, 22), (8, 11)], 300, 4)),
    ("ddetr-encoder-256px", (2, 8, 32, [(32, 43), (16, 22), (8, 11), (4, 6)], 1840, 4)),
    ("samdetr-encoder-400px", (1, 8, 32, [(50, 67), (25, 34), (13, 17)], 500, 4)),
]
SMALL = {"D1", "D8", "D30", "D32-4levels", "D71-thin", "D256-chunked", "N64-partial-block"}


# ------------------------------------------------------------------------------------------------
# build and environment


def gpu_arch():
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def set_toolchain_env():
    """CUDA_HOME (where unset: /usr/local/cuda when it holds nvcc) and TORCH_CUDA_ARCH_LIST (where unset: this
    GPU's), for both builds, set before anything imports torch.utils.cpp_extension."""
    if not os.environ.get("CUDA_HOME") and os.path.isfile("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", gpu_arch())


def check_build():
    env = dict(os.environ, FORCE_CUDA="1")
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]
        raise Failed("setup.py build_ext failed: " + " | ".join(errors[:8] or [proc.stderr[-2000:]]))
    return f"FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST={env['TORCH_CUDA_ARCH_LIST']} CUDA_HOME={env.get('CUDA_HOME')}"


def check_env():
    report("INFO", "torch", f"{torch.__version__}, CUDA {torch.version.cuda}, repository {REPO}")
    if DEV == "cuda":
        if not torch.cuda.is_available():
            raise Failed("no CUDA device visible (run with --device cpu for the CPU checks)")
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            report("INFO", f"cuda:{i}", f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB")
    ext = _ext.get_extension()
    if ext is None:
        raise Failed(f"sam_detr._C does not import: {_ext._import_error}")
    if not Path(ext.__file__).resolve().is_relative_to(REPO):
        raise Failed(f"sam_detr._C comes from {ext.__file__}, not from this checkout ({REPO}): build it here (--build)")
    if not _ext.kernel_available("ms_deform_attn", torch.device(DEV)):
        raise Failed(_ext.missing_kernel_message("ms_deform_attn", torch.device(DEV)) + " (or run with --build)")
    return f"sam_detr._C from {ext.__file__}, CUDA kernels: {ext.with_cuda()}"


# ------------------------------------------------------------------------------------------------
# correctness


def check_reference(dtype, fwd_tol, bwd_tol, small):
    fails, worst = [], 0.0
    cases = [(name, case) for name, case in CASES if name in SMALL or not small]
    for name, case in cases:
        inputs = make_inputs(*case, dtype=dtype)
        grad = grad_for(inputs)
        out, grads = run_op(ms_deform_attn, *inputs, grad)
        ref, ref_grads = run_op(ms_deform_attn_pytorch, *inputs, grad)
        errs = [rel_err(out, ref)] + [rel_err(a, b) for a, b in zip(grads, ref_grads)]
        tols = [fwd_tol] + [bwd_tol] * 3
        worst = max([worst] + [e / t for e, t in zip(errs, tols)])
        dtypes = [out.dtype] + [g.dtype for g in grads]
        if any(e > t for e, t in zip(errs, tols)) or dtypes != [dtype] * 4:
            fails.append(f"{name}: " + " ".join(f"{e:.1e}" for e in errs) + f" dtypes {dtypes}")
    if fails:
        raise Failed("; ".join(fails))
    return f"{len(cases)} shapes, out and 3 gradients within tolerance (worst at {worst:.2f} of it)"


def check_cpu_vs_cuda():
    cuda_only()
    inputs = make_inputs(2, 3, 32, [(8, 9), (4, 5)], 10, 4, device="cpu")
    grad = grad_for(inputs)
    out, grads = run_op(ms_deform_attn, *inputs, grad)
    out_c, grads_c = run_op(ms_deform_attn, *[t.cuda() for t in inputs], grad.cuda())
    ok, detail = compare([out_c, *grads_c], [out, *grads], 1e-12)
    if not ok:
        raise Failed(detail)
    return f"float64, within 1e-12: {detail}"


def official_formula(value, ss, lsi, loc, attn, grad, fma):
    """float64 loops over the official kernel's arithmetic: floor corners, zero padding, rejection outside
    (-1, H) x (-1, W); grad_loc = W * a * sum_c dw_c <g, v_c> (likewise for y). fma: x * W - 0.5 rounded
    once, as a fused multiply-add computes it; the two roundings differ only within an ulp of a half-integer,
    where the floor (hence the one-sided derivative in grad_loc) can differ."""
    value, loc, attn, grad = (t.double().cpu() for t in (value, loc, attn, grad))
    ss, lsi = ss.cpu(), lsi.cpu()
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = loc.shape
    out = torch.zeros(N, Lq, M, D, dtype=torch.float64)
    gv, gl, ga = torch.zeros_like(value), torch.zeros_like(loc), torch.zeros_like(attn)
    grad = grad.view(N, Lq, M, D)
    for n, q, m, lvl, p in ((n, q, m, lvl, p) for n in range(N) for q in range(Lq) for m in range(M)
                            for lvl in range(L) for p in range(P)):
        H, W, start = int(ss[lvl, 0]), int(ss[lvl, 1]), int(lsi[lvl])
        x, y = float(loc[n, q, m, lvl, p, 0]), float(loc[n, q, m, lvl, p, 1])
        a = float(attn[n, q, m, lvl, p])
        if fma:
            w_im, h_im = float(Fraction(x) * W - Fraction(1, 2)), float(Fraction(y) * H - Fraction(1, 2))
        else:
            w_im, h_im = x * W - 0.5, y * H - 0.5
        if not (-1 < h_im < H and -1 < w_im < W):
            continue
        h0, w0 = math.floor(h_im), math.floor(w_im)
        lh, lw = h_im - h0, w_im - w0
        hh, hw = 1 - lh, 1 - lw
        sample = torch.zeros(D, dtype=torch.float64)
        sw = sh = 0.0
        for hc, wc, wt, dw, dh in ((h0, w0, hh * hw, -hh, -hw), (h0, w0 + 1, hh * lw, hh, -lw),
                                   (h0 + 1, w0, lh * hw, -lh, hw), (h0 + 1, w0 + 1, lh * lw, lh, lw)):
            if 0 <= hc < H and 0 <= wc < W:
                v = value[n, start + hc * W + wc, m]
                sample += wt * v
                dot = float((grad[n, q, m] * v).sum())
                sw += dw * dot
                sh += dh * dot
                gv[n, start + hc * W + wc, m] += a * wt * grad[n, q, m]
        out[n, q, m] += a * sample
        ga[n, q, m, lvl, p] = float((grad[n, q, m] * sample).sum())
        gl[n, q, m, lvl, p, 0] = sw * a * W
        gl[n, q, m, lvl, p, 1] = sh * a * H
    return out.view(N, Lq, M * D), gv, gl, ga


def check_edges():
    shapes = [(4, 5), (2, 3)]
    value, ss, lsi, _, _ = make_inputs(1, 2, 8, shapes, 1, 1)

    def coords(K):
        eps = 1e-6
        return [0.0, 1.0, 0.5 / K, 1 - 0.5 / K, -0.5 / K + eps, 1 + 0.5 / K - eps, -0.5 / K - eps,
                1 + 0.5 / K + eps, 0.25 / K, 1 - 0.25 / K, 1.0 / K, 0.5, -0.5 / K, 1 + 0.5 / K]

    n = len(coords(1))
    fails, worst, ties = [], 0.0, 0
    g = torch.Generator().manual_seed(2)
    for row in range(n):
        loc = torch.zeros(1, n, 2, 2, 1, 2, dtype=torch.float64)
        for lvl, (H, W) in enumerate(shapes):
            loc[0, :, :, lvl, 0, 0] = torch.tensor(coords(W), dtype=torch.float64)[:, None]
            loc[0, :, :, lvl, 0, 1] = coords(H)[row]
        attn = torch.rand(1, n, 2, 2, 1, generator=g, dtype=torch.float64)
        grad = torch.randn(1, n, 16, generator=g, dtype=torch.float64)
        loc, attn, grad = loc.to(DEV), attn.to(DEV), grad.to(DEV)
        out, grads = run_op(ms_deform_attn, value, ss, lsi, loc, attn, grad)
        ref = official_formula(value, ss, lsi, loc, attn, grad, fma=False)
        ref_fma = official_formula(value, ss, lsi, loc, attn, grad, fma=True)
        errs = [rel_err(a.cpu(), b) for a, b in zip([out, *grads], ref)]
        # grad_loc: either one-sided derivative where the two roundings of x * W - 0.5 take other floors
        errs[2] = min(rel_err(grads[1].cpu(), ref[2]), rel_err(grads[1].cpu(), ref_fma[2]))
        scale = max(ref[2].abs().max().item(), 1e-30)
        ties += int(((ref[2] - ref_fma[2]).abs() > 1e-12 * scale).sum())
        gs_out, gs_grads = run_op(ms_deform_attn_pytorch, value, ss, lsi, loc, attn, grad)
        errs_gs = [rel_err(out, gs_out), rel_err(grads[0], gs_grads[0]), rel_err(grads[2], gs_grads[2])]
        worst = max([worst] + errs)
        if max(errs) > 1e-12 or max(errs_gs) > 1e-9:
            fails.append(f"row {row}: vs formula " + ",".join(f"{e:.1e}" for e in errs)
                         + " vs grid_sample " + ",".join(f"{e:.1e}" for e in errs_gs))
    detail = f"{n} x {n} edge points x 2 levels, worst {worst:.1e}; {ties} grad_loc entries at rounding ties"
    if fails:
        raise Failed("; ".join(fails) + " | " + detail)
    return detail


def check_gradcheck():
    # float64: D odd takes the scalar path, D = 8 the vector path (2 doubles) on CUDA
    for D, seed in ((5, 0), (8, 3)):
        value, ss, lsi, loc, attn = make_inputs(2, 2, D, [(4, 3), (2, 5)], 3, 2, seed=seed)
        leaves = [t.clone().requires_grad_() for t in (value, loc, attn)]

        def op(v, p, a, ss=ss, lsi=lsi):
            return ms_deform_attn(v, ss, lsi, p, a)

        if not torch.autograd.gradcheck(op, leaves, nondet_tol=1e-12, raise_exception=False):
            raise Failed(f"gradcheck fails for D={D}")
    return "float64, D=5 (scalar path) and D=8 (vector path)"


def check_half(dtype, tol):
    fails, worst = [], 0.0
    for D in (8, 30, 32, 64):
        inputs = make_inputs(2, 4, D, [(12, 10), (6, 5), (3, 3)], 20, 4, dtype=dtype)
        grad = grad_for(inputs)
        out, grads = run_op(ms_deform_attn, *inputs, grad)
        dtypes = [out.dtype] + [g.dtype for g in grads]
        if dtypes != [dtype, dtype, torch.float32, torch.float32]:
            fails.append(f"D={D}: dtypes {dtypes}")
        inputs64 = [inputs[0].double(), inputs[1], inputs[2], inputs[3].double(), inputs[4].double()]
        ref, ref_grads = run_op(ms_deform_attn_pytorch, *inputs64, grad.double())
        ok, detail = compare([out, *grads], [ref, *ref_grads], tol)
        worst = max([worst] + [rel_err(a, b) for a, b in zip([out, *grads], [ref, *ref_grads])])
        if not ok:
            fails.append(f"D={D}: {detail}")
    if fails:
        raise Failed("; ".join(fails))
    return f"D = 8, 30, 32, 64: worst {worst:.1e} (tolerance {tol}), gradients in the inputs' dtypes"


def module_inputs():
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[24, 32], [12, 16], [6, 8]])
    areas = shapes.prod(1)
    lsi = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    N, Lq, S = 2, 50, int(areas.sum())
    query = torch.randn(N, Lq, 64, generator=g)
    refs = torch.rand(N, Lq, 3, 2, generator=g)
    values = torch.randn(N, S, 64, generator=g)
    mask = torch.zeros(N, S, dtype=torch.bool)
    mask[1, 500:700] = True
    return [t.to(DEV) for t in (query, refs, values, shapes, lsi, mask)]


def check_autocast(dtype):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=64, n_levels=3, n_heads=8, n_points=4).to(DEV)
    torch.nn.init.normal_(module.sampling_offsets.weight, std=0.3)
    inputs = module_inputs()
    expected = module(*inputs)
    scaler = torch.amp.GradScaler(DEV, enabled=dtype == torch.float16)
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
    with torch.autocast(DEV, dtype=dtype):
        out = module(*inputs)
        loss = out.float().pow(2).mean()
    if out.dtype != dtype:
        raise Failed(f"output {out.dtype} under {dtype} autocast")
    err = rel_err(out.float(), expected)
    scaler.scale(loss).backward()
    finite_grads = all(torch.isfinite(p.grad).all() for p in module.parameters())
    scaler.step(optimizer)
    scaler.update()
    finite = finite_grads and all(torch.isfinite(p).all() for p in module.parameters())
    # SAM-DETR's RoIAlign: features in the autocast dtype, boxes in float32
    features = torch.randn(2, 8, 12, 10, device=DEV)
    rois = torch.tensor([[0.0, 0.5, 1.0, 6.0, 7.5], [1.0, 2.0, 0.0, 9.0, 11.0]], device=DEV)
    with torch.autocast(DEV, dtype=dtype):
        pooled = roi_align(features.to(dtype), rois, 4, 1.0, 2, True)
    # computed in float32, as torchvision's autocast kernel does, and returned in the features' dtype
    roi_exact = torch.equal(pooled, roi_align(features.to(dtype).float(), rois, 4, 1.0, 2, True).to(dtype))
    if err > 3e-2 or not finite or not roi_exact:
        raise Failed(f"out vs float32 {err:.1e} (tolerance 3e-2), gradients and parameters finite: {finite}; "
                     f"roi_align under autocast equal to float32 rounded to {dtype}: {roi_exact}")
    step = "a GradScaler step" if scaler.is_enabled() else "an optimizer step"
    return f"out vs float32 {err:.1e}, {step} with finite gradients; roi_align {dtype} features with float32 boxes"


def check_levels():
    ext = _ext.get_extension()
    value, ss, lsi, loc, attn = make_inputs(1, 2, 4, [(3, 4), (1, 2)], 2, 2, dtype=torch.float32)
    refused = []
    for name, call in (("forward, shapes x2", lambda: ext.ms_deform_attn_forward(value, ss * 2, lsi, loc, attn)),
                       ("backward, starts +1", lambda: ext.ms_deform_attn_backward(
                           value, ss, lsi + 1, loc, attn, torch.zeros(1, 2, 8, device=DEV)))):
        try:
            call()
            synchronize()
        except RuntimeError as e:
            if "does not fit" not in str(e):
                raise
            refused.append(name)
            continue
        raise Failed(f"{name}: levels beyond value's S were accepted")
    return "refused: " + ", ".join(refused)


def check_paths():
    fails = []
    for dtype, D in ((torch.float32, 32), (torch.float16, 32), (torch.float64, 32), (torch.bfloat16, 64)):
        inputs = make_inputs(2, 2, D, [(5, 6), (2, 3)], 4, 3, dtype=dtype)
        value = inputs[0]
        shifted = torch.empty(value.numel() + 1, dtype=dtype, device=DEV)[1:].view(value.shape).copy_(value)
        grad = grad_for(inputs)
        out, grads = run_op(ms_deform_attn, *inputs, grad)
        out_s, grads_s = run_op(ms_deform_attn, shifted, *inputs[1:], grad)
        tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
        ok, detail = compare([out_s, *grads_s], [out, *grads], tol)
        if not ok:
            fails.append(f"{dtype}: {detail}")
        elif not torch.equal(out, out_s):  # the same summation order on both paths: expected bit-identical
            report("INFO", "vector vs scalar path", f"{dtype} forward equal to rounding, not bit-identical")
    if fails:
        raise Failed("; ".join(fails))
    return "float32 / float16 / float64 / bfloat16: the unaligned (scalar) path equals the vector path"


def check_empty():
    for N, Lq, D in ((0, 3, 8), (2, 0, 8), (2, 3, 0)):
        value, ss, lsi, loc, attn = make_inputs(N, 2, D, [(3, 4)], Lq, 2, dtype=torch.float32)
        value.requires_grad_()
        out = ms_deform_attn(value, ss, lsi, loc, attn)
        if out.shape != (N, Lq, 2 * D):
            raise Failed(f"N={N} Lq={Lq} D={D}: output shape {tuple(out.shape)}")
        out.sum().backward()
        if value.grad.shape != value.shape or value.grad.any():
            raise Failed(f"N={N} Lq={Lq} D={D}: grad_value not zeros of value's shape")
    return "N=0, Lq=0, D=0: empty outputs, zero grad_value"


def check_determinism():
    inputs = make_inputs(2, 2, 32, [(5, 6)], 4, 2, dtype=torch.float32)
    grad = grad_for(inputs)
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        try:
            _, grads = run_op(ms_deform_attn, *inputs, grad)
            raised = None
        except RuntimeError as e:
            raised = str(e)
    finally:
        torch.use_deterministic_algorithms(previous)
    if DEV == "cuda":
        if raised is None or "ms_deform_attn_backward_cuda" not in raised:
            raise Failed(f"the CUDA backward (atomics) must raise under deterministic mode; got {raised!r}")
        _, g1 = run_op(ms_deform_attn, *inputs, grad)
        _, g2 = run_op(ms_deform_attn, *inputs, grad)
        same = [torch.equal(a, b) for a, b in zip(g1, g2)]
        return f"raises under deterministic mode; two backward runs bit-identical (value, loc, attn): {same}"
    if raised is not None:
        raise Failed(f"the CPU backward raised under deterministic mode: {raised}")
    _, again = run_op(ms_deform_attn, *inputs, grad)
    if not all(torch.equal(a, b) for a, b in zip(grads, again)):
        raise Failed("two CPU backward runs differ")
    return "the CPU backward runs under deterministic mode, bit-identical run to run"


def check_stream():
    cuda_only()
    inputs = make_inputs(2, 8, 32, [(20, 30), (10, 15)], 100, 4, dtype=torch.float32)
    expected = ms_deform_attn(*inputs)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = ms_deform_attn(*inputs)
        doubled = out * 2  # queued behind the kernel on the same stream
    torch.cuda.current_stream().wait_stream(stream)
    if not (torch.equal(out, expected) and torch.equal(doubled, 2 * expected)):
        raise Failed("the side stream's result differs from the default stream's")
    # (no CUDA-graph capture: the level-table check copies the table to the host, which capture forbids)
    return "side stream == default stream"


def check_multi_gpu():
    cuda_only()
    n = torch.cuda.device_count()
    if n < 2:
        raise Skip(f"{n} GPU visible: the device guard needs 2+")
    fails = []
    for k in range(1, n):
        dev = f"cuda:{k}"
        inputs = make_inputs(2, 4, 32, [(12, 10), (6, 5)], 30, 4, dtype=torch.float32, device=dev)
        grad = grad_for(inputs)
        torch.cuda.synchronize(0)
        before = torch.cuda.memory_allocated(0)
        with torch.cuda.device(0):  # the current device is not the tensors'
            out, grads = run_op(ms_deform_attn, *inputs, grad)
            side = torch.cuda.Stream(device=dev)
            with torch.cuda.stream(side):
                out_side = ms_deform_attn(*inputs)
            torch.cuda.current_stream(dev).wait_stream(side)
        torch.cuda.synchronize(k)
        ref, ref_grads = run_op(ms_deform_attn_pytorch, *inputs, grad)
        ok, detail = compare([out, *grads], [ref, *ref_grads], 2e-5)
        if not ok or any(t.device != torch.device(dev) for t in [out, *grads]):
            fails.append(f"{dev}: {detail}, devices {[str(t.device) for t in [out, *grads]]}")
        if not torch.equal(out_side, out):
            fails.append(f"{dev}: the result on a stream of {dev} differs")
        if torch.cuda.memory_allocated(0) != before:
            fails.append(f"{dev}: memory on cuda:0 changed")
        with torch.cuda.device(k):  # and the converse
            out0 = ms_deform_attn(*[t.to("cuda:0") for t in inputs])
        if rel_err(out0.to(dev), out) > 1e-6:
            fails.append(f"cuda:0 inputs while {dev} is current: the result differs")
    if fails:
        raise Failed("; ".join(fails))
    return f"{n} GPUs: results on each device, the guard works both ways"


def free_gib():
    if DEV != "cuda":
        return math.inf
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info()[0] / 2**30


def one_level(N, H, W, M, D):
    """value (N, H * W, M, D) float32 of one H x W level on the device, its level table, and the generator that
    drew it (for the rest of the inputs)."""
    g = torch.Generator(device=DEV).manual_seed(0)
    value = torch.randn(N, H * W, M, D, device=DEV, generator=g)
    return value, torch.tensor([[H, W]], device=DEV), torch.zeros(1, dtype=torch.int64, device=DEV), g


def check_big_value(big):
    """value (3, S, 8, 128) float32, S = H * W: with H = 1024, W = 1025, batch 2 starts at element 2 * S * 1024 >
    2^31 (12.9 GB); the points sample the bottom rows (the largest offsets). Batch 2 must equal the same kernel
    run on that batch alone (small offsets), and that run the PyTorch path."""
    H, W = (1024, 1025) if big else (16, 17)
    N, M, D, Lq, P = 3, 8, 128, 64, 4
    if big and free_gib() < 40:
        raise Skip(f"needs ~40 GiB free, {free_gib():.0f} GiB free")
    ext = _ext.get_extension()
    value, ss, lsi, g = one_level(N, H, W, M, D)
    loc = torch.rand(N, Lq, M, 1, P, 2, device=DEV, generator=g)
    loc[..., 1] = loc[..., 1] * 0.1 + 0.9
    attn = torch.rand(N, Lq, M, 1, P, device=DEV, generator=g)
    grad = torch.randn(N, Lq, M * D, device=DEV, generator=g)
    out = ext.ms_deform_attn_forward(value, ss, lsi, loc, attn)
    gv, gl, ga = ext.ms_deform_attn_backward(value, ss, lsi, loc, attn, grad)
    last = [out[2:], gv[2:], gl[2:], ga[2:]]
    del out, gv
    small = [value[2:].contiguous(), ss, lsi, loc[2:].contiguous(), attn[2:].contiguous()]
    del value
    out_s = ext.ms_deform_attn_forward(*small)
    ok, detail = compare(last, [out_s, *ext.ms_deform_attn_backward(*small, grad[2:].contiguous())], 1e-5)
    del last
    e_ref = rel_err(out_s, ms_deform_attn_pytorch(*small))
    if not ok or e_ref > 1e-5:
        raise Failed(f"batch 2 vs alone: {detail}; alone vs PyTorch {e_ref:.1e}")
    return f"value {N}x{H * W}x{M}x{D} ({N * H * W * M * D / 2**31:.2f} x 2^31 elements); batch 2 vs alone: {detail}"


def check_big_output(D, big):
    """output (1, Lq, 8 * D) float32 with > 2^31 elements. D = 127: scalar path, thread index beyond 2^31;
    D = 128: vector path, output offsets beyond 2^31. The queries between the first and last k sample
    outside the map (no loads, no atomics: fast; their output rows must be zeros); the first / last k queries
    must equal the same kernel on those queries alone."""
    M, H, W, P, k = 8, 32, 40, 2, 512
    Lq = 2**31 // (M * D) + 4096 if big else 3 * k
    if big and free_gib() < 20:
        raise Skip(f"needs ~20 GiB free, {free_gib():.0f} GiB free")
    ext = _ext.get_extension()
    value, ss, lsi, g = one_level(1, H, W, M, D)
    loc = torch.rand(1, Lq, M, 1, P, 2, device=DEV, generator=g) * 1.2 - 0.1
    loc[:, k:Lq - k] = 5.0
    attn = torch.rand(1, Lq, M, 1, P, device=DEV, generator=g)
    grad_last = torch.randn(1, k, M * D, device=DEV, generator=g)
    out = ext.ms_deform_attn_forward(value, ss, lsi, loc, attn)
    parts = {"first": slice(0, k), "last": slice(Lq - k, Lq)}
    ends = {name: out[:, s].clone() for name, s in parts.items()}
    middle_zero = not out[:, k:Lq - k].any().item()
    grad = torch.zeros_like(out)
    del out
    grad[:, Lq - k:] = grad_last  # grad_value then comes from the last k queries alone
    gv, gl, ga = ext.ms_deform_attn_backward(value, ss, lsi, loc, attn, grad)
    gl_last, ga_last = gl[:, Lq - k:].clone(), ga[:, Lq - k:].clone()
    del grad, gl, ga
    fails, details = [], []
    if not middle_zero:
        fails.append("nonzero output where every point is outside the map")
    for name, s in parts.items():
        alone = ext.ms_deform_attn_forward(value, ss, lsi, loc[:, s].contiguous(), attn[:, s].contiguous())
        e = rel_err(ends[name], alone)
        details.append(f"{name} {k} queries out={e:.1e}")
        if e > 1e-6:
            fails.append(f"{name} queries: forward {e:.1e}")
    alone = ext.ms_deform_attn_backward(value, ss, lsi, loc[:, Lq - k:].contiguous(), attn[:, Lq - k:].contiguous(),
                                        grad_last)
    ok, detail = compare([gv, gl_last, ga_last], alone, 1e-5, names=("grad_value", "grad_loc", "grad_attn"))
    details.append("backward " + detail)
    if not ok:
        fails.append("backward: " + detail)
    path = "scalar" if D % 4 else "vector"
    summary = f"D={D} ({path} path), output {Lq * M * D / 2**31:.2f} x 2^31 elements: " + "; ".join(details)
    if fails:
        raise Failed("; ".join(fails) + " | " + summary)
    return summary


# ------------------------------------------------------------------------------------------------
# the official kernel


def official_sources(ops_dir, work):
    """The official src/ copied into `work`, patched for current torch (AT_DISPATCH on the scalar type)."""
    src = Path(ops_dir) / "src"
    if not (src / "cuda" / "ms_deform_attn_cuda.cu").is_file():
        raise FileNotFoundError(f"{src}/cuda/ms_deform_attn_cuda.cu (give Deformable-DETR/models/ops)")
    dst = Path(work) / "src"
    if not dst.exists():
        shutil.copytree(src, dst)
        cu = dst / "cuda" / "ms_deform_attn_cuda.cu"
        cu.write_text(cu.read_text().replace("AT_DISPATCH_FLOATING_TYPES(value.type(),",
                                             "AT_DISPATCH_FLOATING_TYPES(value.scalar_type(),"))
    return dst


def cuda_wheel_includes():
    """include/ folders of the CUDA libraries' pip wheels (nvidia/cu13/include, nvidia/cusparse/include, ...):
    the official sources include ATen/cuda/CUDAContext.h, which needs cuBLAS and cuSPARSE headers that a
    minimal toolkit lacks."""
    try:
        import nvidia
    except ImportError:
        return []
    return sorted(str(p) for root in nvidia.__path__ for p in Path(root).glob("*/include") if p.is_dir())


def load_official(ops_dir, work):
    """Compiles (or, when built there already, loads) the official extension in `work`."""
    from torch.utils.cpp_extension import load

    src = official_sources(ops_dir, work)
    return load(
        name=OFFICIAL_NAME,
        sources=[str(src / "vision.cpp"), str(src / "cpu" / "ms_deform_attn_cpu.cpp"),
                 str(src / "cuda" / "ms_deform_attn_cuda.cu")],
        extra_include_paths=[str(src), *cuda_wheel_includes()],
        extra_cflags=["-DWITH_CUDA", "-O3"],
        extra_cuda_cflags=["-DCUDA_HAS_FP16=1", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                           "-D__CUDA_NO_HALF2_OPERATORS__", "-O3"],
        build_directory=str(work),
        verbose=False,
    )


def start_official_build(ops_dir, work):
    """Builds the official extension in a child process, while this one builds and checks sam_detr._C."""
    log = open(Path(work) / "build.log", "w")
    cmd = [sys.executable, __file__, "--build-official-only", str(ops_dir), "--official-dir", str(work)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def finish_official_build(proc, ops_dir, work):
    if proc is not None and proc.wait() != 0:
        lines = (Path(work) / "build.log").read_text().splitlines()
        errors = [line for line in lines if "error" in line.lower()] or lines[-10:]
        report("FAIL", "official kernel", "could not be built: " + " | ".join(errors[:8]))
        return None
    start = time.time()
    try:
        module = load_official(ops_dir, work)
    except Exception as e:  # noqa: BLE001
        report("FAIL", "official kernel", f"could not be built or loaded: {type(e).__name__}: {str(e)[:600]}")
        return None
    report("INFO", "official kernel", f"loaded from {work} [{time.time() - start:.1f} s]")
    return module


def check_official(official):
    cuda_only()
    if official is None:
        raise Skip("no --official (Deformable-DETR/models/ops), or it could not be built")
    op = bench.official_op(official)
    fails, details = [], []
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        for name in ("decoder", "samdetr", "encoder"):
            inputs = bench.make_inputs(name, (512, 683), 2, 8, 32, 4, dtype, DEV)
            grad = grad_for(inputs)
            ours, theirs = run_op(ms_deform_attn, *inputs, grad), run_op(op, *inputs, grad)
            ok, detail = compare([ours[0], *ours[1]], [theirs[0], *theirs[1]], tol)
            details.append(f"{name} {str(dtype)[6:]}: {detail}")
            if not ok:
                fails.append(details[-1])
    if fails:
        raise Failed(" | ".join(fails))
    return "512x683, batch 2: " + " | ".join(details)


def check_speed(official, repeat, big):
    image = (800, 1333) if big else (96, 128)
    rows, slow = [], []
    dtypes = (torch.float32, torch.float16) if DEV == "cuda" else (torch.float32,)
    for dtype in dtypes:
        for name in ("encoder", "decoder"):
            inputs = bench.make_inputs(name, image, 2, 8, 32, 4, dtype, DEV)
            N, _, M, D = inputs[0].shape
            grad = torch.randn(N, inputs[3].shape[1], M * D, device=DEV, dtype=dtype)
            ops = {"compiled": ms_deform_attn, "pytorch": ms_deform_attn_pytorch}
            if official is not None and dtype == torch.float32:
                ops["official"] = bench.official_op(official)
            times = {}
            for op_name, fn in ops.items():
                forward, forward_backward = bench.make_runs(fn, inputs, grad)
                times[op_name] = [bench.measure(run, DEV, repeat)[0] * 1e3 for run in (forward, forward_backward)]
            figures = ", ".join(f"{op_name} {f:.2f}/{fb:.2f}" for op_name, (f, fb) in times.items())
            rows.append(f"{name} {str(dtype)[6:]}: {figures}")
            if DEV == "cuda" and times["compiled"][1] > times["pytorch"][1]:
                slow.append(f"{name} {dtype}: compiled slower than the PyTorch path")
            if "official" in times and times["compiled"][1] > 1.5 * times["official"][1]:
                ratio = times["compiled"][1] / times["official"][1]
                slow.append(f"{name}: compiled forward+backward {ratio:.1f}x the official")
    detail = f"{image[0]}x{image[1]}, batch 2, median ms forward/forward+backward: " + " | ".join(rows)
    if slow:
        raise Failed("; ".join(slow) + " | " + detail)
    return detail


# ------------------------------------------------------------------------------------------------
# training smoke


def smoke_overrides(output_dir, amp):
    return [
        f"train.device={DEV}", "train.max_iter=5", "train.log_period=1", "train.checkpointer.period=1000",
        "train.eval_period=1000", "dataloader.evaluator=null", "dataloader.train.dataset.names=shapes_val",
        "dataloader.train.num_workers=0", f"train.output_dir={output_dir}", f"train.amp.enabled={amp}",
    ]


def check_train_configs():
    """CPU mode: each smoke's config loads and every key it overrides exists (nothing is trained)."""
    from detectron2.config import LazyConfig

    for method in SMOKE_CONFIGS:
        cfg = LazyConfig.load(str(REPO / "configs" / "quickstart" / f"{method}.py"))
        for override in smoke_overrides("/tmp/unused", True):
            node, *path = override.split("=")[0].split(".")
            value = cfg[node]
            for key in path[:-1]:
                value = value[key]
            if path[-1] not in value:
                raise Failed(f"configs/quickstart/{method}.py has no {override.split('=')[0]}")
        LazyConfig.apply_overrides(cfg, smoke_overrides("/tmp/unused", True))
    return f"{', '.join(SMOKE_CONFIGS)}: configs load and take the smoke's overrides (CPU mode: nothing trained)"


def check_train_smoke():
    if importlib.util.find_spec("detectron2") is None:
        raise Skip("detectron2 is not installed")
    if DEV != "cuda":
        return check_train_configs()
    root = Path(tempfile.mkdtemp(prefix="validate_cuda_train_"))
    runs = {}
    for method in SMOKE_CONFIGS:
        for amp in (False, True):
            out = root / f"{method}_{'amp' if amp else 'fp32'}"
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                       SAM_DETR_DATASETS=str(out / "datasets"), OMP_NUM_THREADS="4")
            env.pop(_ext.FALLBACK_ENV, None)
            cmd = [sys.executable, str(REPO / "tools" / "lazyconfig_train_net.py"),
                   "--config-file", str(REPO / "configs" / "quickstart" / f"{method}.py"), *smoke_overrides(out, amp)]
            out.mkdir(parents=True)
            log = open(out / "log.txt", "w")
            runs[(method, amp)] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), out)
    fails, details = [], []
    for (method, amp), (proc, out) in runs.items():
        label = f"{method} {'AMP' if amp else 'fp32'}"
        try:
            code = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        if code != 0:
            fails.append(f"{label}: exit {code}: ..." + (out / "log.txt").read_text()[-1200:])
            continue
        with open(out / "metrics.json") as f:
            losses = [r["total_loss"] for r in map(json.loads, f) if "total_loss" in r]
        if len(losses) != 5 or not all(math.isfinite(x) for x in losses):
            fails.append(f"{label}: total_loss {losses} (5 finite values expected)")
        details.append(f"{label} {losses[0]:.2f}->{losses[-1]:.2f}" if losses else label)
    if fails:
        raise Failed(" | ".join(fails))
    return f"5 iterations each on the GPU, total_loss first->last: {', '.join(details)} ({root})"


# ------------------------------------------------------------------------------------------------


def main():
    global DEV
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: the checks that run on the CPU")
    parser.add_argument("--build", action="store_true", help="first build sam_detr._C with CUDA for this GPU")
    parser.add_argument("--official", help="Deformable-DETR/models/ops: build the official kernel and compare with it")
    parser.add_argument("--quick", action="store_true", help="small shapes only, no large or speed checks")
    parser.add_argument("--no-train", action="store_true", help="skip the training smoke")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per speed measurement")
    parser.add_argument("--build-official-only", metavar="OPS_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--official-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_official_only:
        load_official(args.build_official_only, args.official_dir)
        return
    DEV = args.device
    on_gpu = DEV == "cuda"
    big = on_gpu and not args.quick
    start = time.time()

    official_build = official_dir = None
    if on_gpu and torch.cuda.is_available():
        set_toolchain_env()
    if on_gpu and args.official and torch.cuda.is_available():
        official_dir = Path(tempfile.mkdtemp(prefix="official_msda_"))
        official_build = start_official_build(args.official, official_dir)
    if args.build:
        if not torch.cuda.is_available():
            report("FAIL", "build", "--build compiles for the visible GPU, and none is visible")
        else:
            run_check("build", check_build)
    if not any(status == "FAIL" for status, _, _ in RESULTS):
        run_check("env", check_env)
    if any(status == "FAIL" for status, _, _ in RESULTS):
        print("\nsam_detr._C is not usable on this device: nothing else is meaningful")
        sys.exit(1)

    small = not big
    run_check("fp64 vs PyTorch", check_reference, torch.float64, 1e-10, 1e-10, small)
    run_check("fp32 vs PyTorch", check_reference, torch.float32, 1e-5, 2e-5, small)
    run_check("cpu-vs-cuda fp64", check_cpu_vs_cuda)
    run_check("edges fp64 vs the official formula", check_edges)
    run_check("gradcheck fp64", check_gradcheck)
    run_check("float16 vs fp64 reference", check_half, torch.float16, 2e-3)
    run_check("bfloat16 vs fp64 reference", check_half, torch.bfloat16, 1.6e-2)
    run_check("autocast float16 + GradScaler", check_autocast, torch.float16)
    run_check("autocast bfloat16", check_autocast, torch.bfloat16)
    run_check("level table checked", check_levels)
    run_check("vector vs scalar path", check_paths)
    run_check("empty sizes", check_empty)
    run_check("determinism", check_determinism)
    run_check("side stream", check_stream)
    run_check("multi-GPU device guard", check_multi_gpu)
    stand_in = "" if big else " (small stand-in)"
    run_check(f"big value (> 2^31 elements){stand_in}", check_big_value, big)
    run_check(f"big output, scalar path{stand_in}", check_big_output, 127, big)
    run_check(f"big output, vector path{stand_in}", check_big_output, 128, big)
    official = None
    if official_dir is not None:
        official = finish_official_build(official_build, args.official, official_dir)
    run_check("official vs ours", check_official, official)
    if args.quick:
        report("SKIP", "speed", "--quick")
    else:
        run_check("speed" + ("" if on_gpu else " (CPU, small image, figures only)"), check_speed, official,
                  args.repeat if on_gpu else 1, on_gpu)
    if args.no_train:
        report("SKIP", "train smoke", "--no-train")
    else:
        run_check("train smoke", check_train_smoke)

    counts = {s: sum(r[0] == s for r in RESULTS) for s in ("PASS", "FAIL", "SKIP")}
    summary = f"{counts['FAIL']} FAIL, {counts['PASS']} PASS, {counts['SKIP']} SKIP"
    print(f"\n{summary} on {DEV} in {time.time() - start:.0f} s")
    for status, name, detail in RESULTS:
        if status == "FAIL":
            print(f"  FAIL {name}: {detail[:300]}")
    sys.exit(1 if counts["FAIL"] else 0)


if __name__ == "__main__":
    main()

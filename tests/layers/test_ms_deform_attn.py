"""Multi-scale deformable attention: the compiled kernels against the PyTorch path `ms_deform_attn_pytorch`.

CPU cases run everywhere `sam_detr._C` is built; `cuda` cases run where a GPU is visible, and fail (not skip)
there when `sam_detr._C` lacks the CUDA kernels.
"""
import importlib
import types

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from sam_detr.layers import _ext
from sam_detr.layers.ms_deform_attn import (
    FLOP_HANDLES,
    MSDeformAttn,
    ms_deform_attn,
    ms_deform_attn_pytorch,
)

# the package re-exports the function under the submodule's name
msda_module = importlib.import_module("sam_detr.layers.ms_deform_attn")
_C = _ext.get_extension()
HAS_OP = _C is not None and hasattr(_C, "ms_deform_attn_forward")
needs_op = pytest.mark.skipif(not HAS_OP, reason="sam_detr._C is not built (python setup.py build_ext --inplace)")

# (N, M, D, level shapes (H, W), Lq, P): odd and tiny channel counts, 1 to 4 levels, non-square and
# 1-pixel-wide levels, batch 1 and 3, and D = 256 with N * M < 16, where the CPU backward splits the
# channels of a head into chunks.
CASES = [
    (1, 1, 1, [(5, 7)], 4, 1),
    (3, 2, 30, [(6, 4), (3, 2)], 5, 2),
    (1, 4, 32, [(8, 9), (4, 5), (2, 3), (1, 1)], 6, 4),
    (3, 3, 71, [(1, 6), (7, 1), (3, 3)], 3, 3),
    (2, 1, 256, [(4, 4), (2, 2)], 3, 2),
]
CASE_IDS = ["D1", "D30", "D32-4levels", "D71-thin", "D256-chunked"]


def make_inputs(N, M, D, shapes, Lq, P, dtype=torch.float64, device="cpu", seed=0):
    """Random inputs; about a fifth of the locations fall outside [0, 1] (partly or wholly padded)."""
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S, L = int(areas.sum()), len(shapes)
    value = torch.randn(N, S, M, D, generator=g, dtype=torch.float64)
    locations = torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(N, Lq, M, L, P, generator=g, dtype=torch.float64)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    to = dict(device=device, dtype=dtype)
    return (
        value.to(**to),
        spatial_shapes.to(device),
        level_start_index.to(device),
        locations.to(**to),
        weights.to(**to),
    )


def assert_close_scaled(actual, expected, rel):
    """Elementwise |actual - expected| <= rel * (|expected| + max |expected|): sums of many terms
    (grad_loc is scaled by the level size) carry round-off relative to their largest entries."""
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-30))


def run_compiled(value, spatial_shapes, level_start_index, locations, weights, grad_output=None):
    """Output and gradients (value, locations, weights) of the compiled op through autograd."""
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    out = ms_deform_attn(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
    if grad_output is None:
        return out.detach(), None
    return out.detach(), torch.autograd.grad(out, leaves, grad_output)


def run_reference(value, spatial_shapes, level_start_index, locations, weights, grad_output):
    leaves = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    out = ms_deform_attn_pytorch(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
    return out.detach(), torch.autograd.grad(out, leaves, grad_output)


def check_against_reference(case, dtype, device, fwd_tol, bwd_tol):
    inputs = make_inputs(*case, dtype=dtype, device=device)
    N, M, D, _, Lq, _ = case
    grad_output = torch.randn(N, Lq, M * D, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    out, grads = run_compiled(*inputs, grad_output)
    ref_out, ref_grads = run_reference(*inputs, grad_output)
    assert out.dtype == dtype and out.shape == (N, Lq, M * D)
    assert_close_scaled(out, ref_out, fwd_tol)
    for name, grad, ref_grad in zip(("value", "sampling_locations", "attention_weights"), grads, ref_grads):
        assert grad.dtype == dtype, name
        assert_close_scaled(grad, ref_grad, bwd_tol)


# ----------------------------------------------------------------------------------------------------
# CPU kernels


@needs_op
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype, fwd_tol, bwd_tol", [(torch.float64, 1e-10, 1e-10), (torch.float32, 1e-5, 2e-5)])
def test_cpu_matches_pytorch(case, dtype, fwd_tol, bwd_tol, cpu_isa):
    check_against_reference(case, dtype, "cpu", fwd_tol, bwd_tol)


@needs_op
def test_cpu_zero_queries_and_batch():
    for N, Lq in ((2, 0), (0, 3)):
        value, ss, lsi, loc, attn = make_inputs(N, 2, 8, [(3, 4)], Lq, 2)
        value.requires_grad_()
        out = ms_deform_attn(value, ss, lsi, loc, attn)
        assert out.shape == (N, Lq, 16)
        out.sum().backward()
        assert value.grad.shape == value.shape and not value.grad.any()


@needs_op
def test_cpu_unaligned_value(cpu_isa):
    """A value whose data starts 4 bytes into its storage (still contiguous) gives the same result."""
    value, ss, lsi, loc, attn = make_inputs(2, 2, 32, [(5, 6), (2, 3)], 4, 3, dtype=torch.float32)
    shifted = torch.empty(value.numel() + 1)[1:].view(value.shape).copy_(value)
    torch.testing.assert_close(ms_deform_attn(shifted, ss, lsi, loc, attn), ms_deform_attn(value, ss, lsi, loc, attn))


@needs_op
def test_cpu_gradcheck():
    value, ss, lsi, loc, attn = make_inputs(2, 2, 5, [(4, 3), (2, 5)], 3, 2)
    for t in (value, loc, attn):
        t.requires_grad_()
    assert torch.autograd.gradcheck(lambda v, p, a: ms_deform_attn(v, ss, lsi, p, a), (value, loc, attn))


def _cpu_backward(case, dtype):
    inputs = make_inputs(*case, dtype=dtype)
    N, M, D, _, Lq, _ = case
    grad_output = torch.randn(N, Lq, M * D, generator=torch.Generator().manual_seed(2), dtype=dtype)
    return _C.ms_deform_attn_backward(*inputs, grad_output)


@needs_op
@pytest.mark.parametrize(
    "case", [(3, 8, 32, [(9, 11), (5, 6)], 40, 4), (1, 1, 256, [(9, 11), (5, 6)], 40, 4)], ids=["heads", "chunked"]
)
def test_cpu_backward_deterministic(case, cpu_isa):
    """Bit-identical gradients run to run and for 1 or 2 threads (each task owns its grad_value slice)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first, second = _cpu_backward(case, torch.float32), _cpu_backward(case, torch.float32)
        torch.set_num_threads(1)
        single = _cpu_backward(case, torch.float32)
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, second, single):
        assert torch.equal(a, b) and torch.equal(a, c)


@needs_op
def test_mixed_dtypes_cpu():
    """Half-precision CPU values are computed in float32; locations / weights follow value's op-math
    dtype; every gradient comes back in its input's dtype."""
    value, ss, lsi, loc, attn = make_inputs(2, 2, 16, [(5, 6), (3, 2)], 4, 2, dtype=torch.float32)
    expected = ms_deform_attn(value, ss, lsi, loc, attn)
    for dtype in (torch.bfloat16, torch.float16):
        leaves = [value.to(dtype).requires_grad_(), loc.double().requires_grad_(), attn.double().requires_grad_()]
        out = ms_deform_attn(leaves[0], ss, lsi, leaves[1], leaves[2])
        assert out.dtype == dtype
        reference = ms_deform_attn(leaves[0].detach().float(), ss, lsi, loc, attn)
        torch.testing.assert_close(out, reference.to(dtype))
        out.float().sum().backward()
        assert [t.grad.dtype for t in leaves] == [dtype, torch.float64, torch.float64]
    torch.testing.assert_close(
        ms_deform_attn(value, ss.int(), lsi.int(), loc.double(), attn.double()), expected, rtol=0, atol=0
    )


@needs_op
def test_argument_errors():
    value, ss, lsi, loc, attn = make_inputs(1, 2, 4, [(3, 4)], 2, 2, dtype=torch.float32)
    forward = _C.ms_deform_attn_forward
    with pytest.raises(RuntimeError, match="sampling_loc must have shape"):
        forward(value, ss, lsi, loc[..., :1].contiguous(), attn)
    with pytest.raises(RuntimeError, match="attn_weight must be Float"):
        forward(value, ss, lsi, loc, attn.double())
    with pytest.raises(RuntimeError, match="spatial_shapes must be int64"):
        forward(value, ss.int(), lsi, loc, attn)
    with pytest.raises(RuntimeError, match="value must be contiguous"):
        forward(value.transpose(1, 2), ss, lsi, loc, attn)
    with pytest.raises(RuntimeError, match="does not fit"):
        forward(value, ss * 2, lsi, loc, attn)
    with pytest.raises(RuntimeError, match="CPU kernels take float32 or float64"):
        forward(value.half(), ss, lsi, loc, attn)
    with pytest.raises(RuntimeError, match="grad_output must have shape"):
        _C.ms_deform_attn_backward(value, ss, lsi, loc, attn, torch.zeros(1, 2, 7))


# ----------------------------------------------------------------------------------------------------
# Module, fallback, FLOPs


def _module_inputs(ref_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[6, 8], [3, 4], [2, 2]])
    areas = shapes.prod(1)
    lsi = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    N, Lq, S = 2, 7, int(areas.sum())
    query = torch.randn(N, Lq, 32, generator=g)
    refs = torch.rand(N, Lq, 3, ref_dim, generator=g)
    if ref_dim == 4:
        refs[..., 2:] = refs[..., 2:] * 0.5 + 0.05
    values = torch.randn(N, S, 32, generator=g)
    mask = torch.zeros(N, S, dtype=torch.bool)
    mask[1, 30:48] = True
    return query, refs, values, shapes, lsi, mask


@needs_op
@pytest.mark.parametrize("ref_dim", [2, 4], ids=["points", "boxes"])
def test_module_matches_pytorch_path(ref_dim, monkeypatch):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    # random sampling offsets and weights instead of the initial ones, so the test covers general points
    nn.init.normal_(module.sampling_offsets.weight, std=0.5)
    nn.init.normal_(module.attention_weights.weight, std=0.5)
    query, refs, values, shapes, lsi, mask = _module_inputs(ref_dim)
    out = module(query, refs, values, shapes, lsi, mask)
    out.sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    monkeypatch.setattr(msda_module, "ms_deform_attn", ms_deform_attn_pytorch)
    ref = module(query, refs, values, shapes, lsi, mask)
    ref.sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for name, p in module.named_parameters():
        assert_close_scaled(grads[name], p.grad, 1e-4)


@needs_op
def test_module_padding_mask():
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    query, refs, values, shapes, lsi, mask = _module_inputs(2)
    out = module(query, refs, values, shapes, lsi, mask)
    changed = values.clone()
    changed[mask] = 1e3
    torch.testing.assert_close(module(query, refs, changed, shapes, lsi, mask), out, rtol=0, atol=0)
    assert not torch.allclose(module(query, refs, values, shapes, lsi), out)


def _hide_extension(monkeypatch, ext):
    monkeypatch.setattr(_ext, "_ext", ext)
    monkeypatch.setattr(_ext, "_imported", True)
    monkeypatch.setattr(_ext, "_import_error", ImportError("hidden by the test") if ext is None else None)
    monkeypatch.setattr(_ext, "_warned", set())


@pytest.mark.parametrize("ext", [None, types.SimpleNamespace(with_cuda=lambda: False)], ids=["missing", "stale"])
def test_fallback_warns_once(ext, monkeypatch):
    """Without sam_detr._C (or with one built before this op) the PyTorch path runs, with one warning."""
    _hide_extension(monkeypatch, ext)
    inputs = make_inputs(2, 2, 4, [(3, 4), (2, 2)], 3, 2)
    with pytest.warns(RuntimeWarning, match="ms_deform_attn: .*PyTorch implementation") as record:
        first = ms_deform_attn(*inputs)
        second = ms_deform_attn(*inputs)
    messages = [str(w.message) for w in record if "ms_deform_attn" in str(w.message)]
    assert len(messages) == 1
    assert ("could not be imported" if ext is None else "has no ms_deform_attn kernels") in messages[0]
    expected = ms_deform_attn_pytorch(*inputs)
    assert torch.equal(first, expected) and torch.equal(second, expected)


def _fake_cuda_inputs():
    """make_inputs on a fake CUDA device (no GPU needed), the level table on the CPU."""
    value, ss, lsi, loc, attn = make_inputs(2, 2, 4, [(3, 4), (2, 2)], 3, 2, dtype=torch.float32)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        value, loc, attn = (t.to("cuda") for t in (value, loc, attn))
    return mode, (value, ss, lsi, loc, attn)


@pytest.mark.parametrize("ext", [None, types.SimpleNamespace(ms_deform_attn_forward=None, with_cuda=lambda: False)],
                         ids=["missing", "without-cuda"])
def test_cuda_without_kernels_is_an_error(ext, monkeypatch):
    """A CUDA tensor meeting an extension without CUDA kernels raises, saying how to rebuild, instead of
    silently taking the PyTorch path (far slower, many times the memory)."""
    _hide_extension(monkeypatch, ext)
    monkeypatch.delenv(_ext.FALLBACK_ENV, raising=False)
    mode, inputs = _fake_cuda_inputs()
    reason = "could not be imported" if ext is None else "was built without cuda kernels"
    with mode, pytest.raises(RuntimeError, match=f"ms_deform_attn: sam_detr._C {reason}.*FORCE_CUDA=1 pip install"):
        ms_deform_attn(*inputs)


def test_cuda_fallback_is_opt_in(monkeypatch):
    """SAM_DETR_PYTORCH_FALLBACK=1 takes the PyTorch path for CUDA tensors, with a warning naming the rebuild."""
    _hide_extension(monkeypatch, types.SimpleNamespace(ms_deform_attn_forward=None, with_cuda=lambda: False))
    monkeypatch.setenv(_ext.FALLBACK_ENV, "1")
    mode, inputs = _fake_cuda_inputs()
    with mode, pytest.warns(RuntimeWarning, match="without cuda kernels; using the slower PyTorch .*FORCE_CUDA=1"):
        out = ms_deform_attn(*inputs)
    assert out.device.type == "cuda" and out.shape == (2, 3, 8)


@pytest.mark.cuda
def test_cuda_kernels_are_built():
    """With a GPU visible, sam_detr._C must hold the CUDA kernels: this fails (not skips) otherwise."""
    assert HAS_OP and _C.with_cuda(), _ext.missing_kernel_message("ms_deform_attn", torch.device("cuda"))


class _OpOnly(nn.Module):
    def __init__(self, spatial_shapes, level_start_index):
        super().__init__()
        self.register_buffer("spatial_shapes", spatial_shapes)
        self.register_buffer("level_start_index", level_start_index)

    def forward(self, value, locations, weights):
        return ms_deform_attn(value, self.spatial_shapes, self.level_start_index, locations, weights)


@needs_op
def test_flop_handle():
    from fvcore.nn import FlopCountAnalysis

    N, M, D, shapes, Lq, P = 2, 4, 8, [(6, 5), (3, 3)], 7, 3
    value, ss, lsi, loc, attn = make_inputs(N, M, D, shapes, Lq, P, dtype=torch.float32)
    model = _OpOnly(ss, lsi)
    expected = 5 * len(shapes) * P * N * Lq * M * D

    unhandled = FlopCountAnalysis(model, (value, loc, attn)).unsupported_ops_warnings(False)
    assert unhandled.total() == 0
    assert "prim::PythonOp.MSDeformAttnFunction" in unhandled.unsupported_ops()

    counted = FlopCountAnalysis(model, (value, loc, attn)).set_op_handle(**FLOP_HANDLES)
    assert counted.total() == expected
    assert "prim::PythonOp.MSDeformAttnFunction" not in counted.unsupported_ops()

    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    query, refs, values, shapes, lsi, mask = _module_inputs(2)
    flops = FlopCountAnalysis(module, (query, refs, values, shapes, lsi, mask)).set_op_handle(**FLOP_HANDLES)
    flops.unsupported_ops_warnings(False)
    # the op's share: 5 * L * P * (N * Lq * C), next to the four linears
    assert flops.by_operator()["PythonOp.MSDeformAttnFunction"] == 5 * 3 * 2 * 2 * 7 * 32


# ----------------------------------------------------------------------------------------------------
# CUDA kernels (skipped without a GPU)

CUDA_CASES = CASES + [
    (2, 2, 1025, [(5, 4), (2, 3)], 3, 2),  # D > 32 vectors per lane group, odd
    (1, 1, 2048, [(3, 4)], 2, 2),
    (64, 2, 8, [(4, 5)], 3, 2),  # many groups per block, partial last block
]
CUDA_CASE_IDS = CASE_IDS + ["D1025", "D2048", "N64"]


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_CASES, ids=CUDA_CASE_IDS)
@pytest.mark.parametrize("dtype, fwd_tol, bwd_tol", [(torch.float64, 1e-10, 1e-10), (torch.float32, 1e-5, 2e-5)])
def test_cuda_matches_pytorch(case, dtype, fwd_tol, bwd_tol):
    check_against_reference(case, dtype, "cuda", fwd_tol, bwd_tol)


@pytest.mark.cuda
def test_cuda_level_table_is_checked():
    """Levels that do not fit in value are refused on CUDA as on the CPU (the kernels would read past it)."""
    value, ss, lsi, loc, attn = make_inputs(1, 2, 4, [(3, 4), (1, 2)], 2, 2, dtype=torch.float32, device="cuda")
    with pytest.raises(RuntimeError, match=r"level 0 with spatial shape \(6, 8\) .* does not fit"):
        _C.ms_deform_attn_forward(value, ss * 2, lsi, loc, attn)
    with pytest.raises(RuntimeError, match="level 1 .* and start 13 does not fit in value's S = 14"):
        _C.ms_deform_attn_backward(value, ss, lsi + 1, loc, attn, torch.zeros(1, 2, 8, device="cuda"))


@pytest.mark.cuda
def test_cuda_matches_cpu_kernel():
    inputs = make_inputs(2, 3, 32, [(8, 9), (4, 5)], 10, 4, dtype=torch.float64)
    grad_output = torch.randn(2, 10, 96, dtype=torch.float64)
    out, grads = run_compiled(*inputs, grad_output)
    out_cuda, grads_cuda = run_compiled(*[t.cuda() for t in inputs], grad_output.cuda())
    assert_close_scaled(out_cuda.cpu(), out, 1e-12)
    for grad, grad_cuda in zip(grads, grads_cuda):
        assert_close_scaled(grad_cuda.cpu(), grad, 1e-12)


@pytest.mark.cuda
def test_cuda_gradcheck():
    value, ss, lsi, loc, attn = make_inputs(2, 2, 6, [(4, 3), (2, 5)], 3, 2, device="cuda")
    for t in (value, loc, attn):
        t.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v, p, a: ms_deform_attn(v, ss, lsi, p, a), (value, loc, attn), nondet_tol=1e-12
    )


@pytest.mark.cuda
@pytest.mark.parametrize("D", [32, 30])
def test_cuda_unaligned_and_zero_sizes(D):
    """The scalar path (value not 16-byte aligned, or D not a multiple of the vector) equals the vector
    path; empty batches and query sets give empty outputs and zero grad_value."""
    value, ss, lsi, loc, attn = make_inputs(2, 2, D, [(5, 6), (2, 3)], 4, 3, dtype=torch.float32, device="cuda")
    shifted = torch.empty(value.numel() + 1, device="cuda")[1:].view(value.shape).copy_(value)
    grad_output = torch.randn(2, 4, 2 * D, device="cuda")
    out, grads = run_compiled(value, ss, lsi, loc, attn, grad_output)
    out_shifted, grads_shifted = run_compiled(shifted, ss, lsi, loc, attn, grad_output)
    torch.testing.assert_close(out_shifted, out)
    for grad, grad_shifted in zip(grads, grads_shifted):
        assert_close_scaled(grad_shifted, grad, 1e-5)
    for N, Lq in ((2, 0), (0, 3)):
        value, ss, lsi, loc, attn = make_inputs(N, 2, D, [(3, 4)], Lq, 2, dtype=torch.float32, device="cuda")
        value.requires_grad_()
        out = ms_deform_attn(value, ss, lsi, loc, attn)
        assert out.shape == (N, Lq, 2 * D)
        out.sum().backward()
        assert value.grad.shape == value.shape and not value.grad.any()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype, tol", [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("D", [32, 30])
def test_cuda_half_precision(dtype, tol, D):
    """float16 / bfloat16 values with float32 locations and weights, accumulated in float32: within the
    rounding of the half-precision inputs and outputs of the float32 result."""
    value, ss, lsi, loc, attn = make_inputs(2, 4, D, [(12, 10), (6, 5), (3, 3)], 20, 4, dtype=torch.float32,
                                            device="cuda")
    value = value.to(dtype).float()  # the same value in both runs
    grad_output = torch.randn(2, 20, 4 * D, device="cuda").to(dtype)
    out32, grads32 = run_compiled(value, ss, lsi, loc, attn, grad_output.float())
    leaves = [value.to(dtype).requires_grad_(), loc.clone().requires_grad_(), attn.clone().requires_grad_()]
    out = ms_deform_attn(leaves[0], ss, lsi, leaves[1], leaves[2])
    assert out.dtype == dtype
    grads = torch.autograd.grad(out, leaves, grad_output)
    assert [g.dtype for g in grads] == [dtype, torch.float32, torch.float32]
    assert_close_scaled(out.float(), out32, tol)
    for grad, grad32 in zip(grads, grads32):
        assert_close_scaled(grad.float(), grad32, tol)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_module(dtype):
    """Under autocast the value projection gives half values and the locations / softmax weights stay
    float32; the op takes them as they are and returns value's dtype."""
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2).cuda()
    inputs = [t.cuda() for t in _module_inputs(2)]
    expected = module(*inputs)
    with torch.autocast("cuda", dtype=dtype):
        out = module(*inputs)
    assert out.dtype == dtype
    assert_close_scaled(out.float(), expected, 3e-2)
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


@pytest.mark.cuda
def test_cuda_side_stream_and_determinism_alert():
    inputs = make_inputs(2, 2, 32, [(5, 6)], 4, 2, dtype=torch.float32, device="cuda")
    expected = ms_deform_attn(*inputs)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = ms_deform_attn(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    value = inputs[0].clone().requires_grad_()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="ms_deform_attn_backward_cuda"):
            ms_deform_attn(value, *inputs[1:]).sum().backward()
    finally:
        torch.use_deterministic_algorithms(deterministic)


@pytest.mark.cuda
def test_cuda_second_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("one CUDA device")
    inputs = make_inputs(2, 2, 32, [(5, 6)], 4, 2, dtype=torch.float32, device="cuda:1")
    grad_output = torch.randn(2, 4, 64, device="cuda:1")
    out, grads = run_compiled(*inputs, grad_output)
    ref_out, ref_grads = run_reference(*inputs, grad_output)
    assert out.device == torch.device("cuda:1")
    assert_close_scaled(out, ref_out, 1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close_scaled(grad, ref_grad, 2e-5)

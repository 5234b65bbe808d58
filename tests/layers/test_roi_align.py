"""sam_detr.layers.roi_align against torchvision.ops.roi_align: values, input gradients, layouts,
determinism, argument checks and the fallback path.

On x86-64 the compiled kernel must agree with torchvision bit for bit (neither build uses FMAs);
elsewhere to rounding.
"""

import math
import platform

import pytest
import torch
import torchvision
from torch.autograd import gradcheck

from sam_detr.layers import _ext, roi_align
from sam_detr.layers.roi_align import RoIAlignFunction

EXACT = platform.machine().lower() in ("x86_64", "amd64")

_EXT = _ext.get_extension()
HAS_KERNEL = _EXT is not None and hasattr(_EXT, "roi_align_forward")
needs_kernel = pytest.mark.skipif(not HAS_KERNEL, reason="sam_detr._C is not built with roi_align")


def assert_matches(actual: torch.Tensor, expected: torch.Tensor):
    if EXACT:
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)
    else:
        tol = 1e-5 if actual.dtype == torch.float32 else 1e-12
        torch.testing.assert_close(actual, expected, rtol=tol, atol=tol, equal_nan=True)


def make_boxes(gen: torch.Generator, num: int, height: int, width: int, scale: float, dtype) -> torch.Tensor:
    """(M, 4) boxes x1y1x2y2 in image coordinates (feature map coordinates / scale), `num` of each
    random kind (mostly inside, partly outside) and a few of every special kind: fully outside,
    zero-sized, inverted, tiny, huge, on the map's edges."""

    def u(n):
        return torch.rand(n, generator=gen, dtype=torch.float64)

    h, w = float(height), float(width)
    cx, cy, bw, bh = u(num) * w, u(num) * h, u(num) * w, u(num) * h
    inside = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    cx, cy = (u(num) * 1.6 - 0.3) * w, (u(num) * 1.6 - 0.3) * h
    partly_outside = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    fully_outside = torch.tensor([[w + 1.5, h + 2, w + 9, h + 9], [-9 - w, -9, -w - 3, -3], [-5, 0, -1.5, h]])
    x, y = u(2) * w, u(2) * h
    zero_sized = torch.stack([x, y, x, y], 1)
    inverted = torch.stack([x + 2, y + 1, x, y], 1)
    tiny = torch.stack([x, y, x + 1e-3, y + 2e-3], 1)
    huge = torch.tensor([[-w, -h, 2 * w, 2 * h], [-0.5 * w, 0.0, 1.5 * w, h]])
    edges = torch.tensor([[0.0, 0.0, w, h], [-1.0, -1.0, w + 1, h + 1], [1.0, 2.0, 3.0, 5.0]])
    boxes = torch.cat([inside, partly_outside, fully_outside, zero_sized, inverted, tiny, huge, edges])
    boxes = (boxes / scale).to(dtype)
    return boxes[torch.randperm(len(boxes), generator=gen)]


def run_both(input, boxes, output_size, spatial_scale, sampling_ratio, aligned):
    """Outputs and input gradients of sam_detr's and torchvision's roi_align for one random grad."""
    results = []
    grad = None
    for fn in (roi_align, torchvision.ops.roi_align):
        x = input.detach().clone().requires_grad_(True)
        out = fn(x, boxes, output_size, spatial_scale, sampling_ratio, aligned)
        if grad is None:
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        out.backward(grad)
        results.append((out.detach(), x.grad))
    return results


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 1 / 16])
def test_matches_torchvision(dtype, aligned, sampling_ratio, spatial_scale, cpu_isa):
    gen = torch.Generator().manual_seed(0)
    height, width, channels = 13, 21, 19
    x = torch.randn(3, channels, height, width, generator=gen, dtype=dtype)
    # uneven boxes per image, image 1 has none
    counts = [9, 0, 5]
    per_image = [make_boxes(gen, 3, height, width, spatial_scale, dtype)[:n] for n in counts]
    ids = torch.cat([torch.full((n, 1), float(i), dtype=dtype) for i, n in enumerate(counts)])
    rois = torch.cat([ids, torch.cat(per_image)], 1)
    rois = rois[torch.randperm(len(rois), generator=gen)]  # images interleaved
    for output_size in (7, (3, 5)):
        (out, grad), (out_tv, grad_tv) = run_both(x, rois, output_size, spatial_scale, sampling_ratio, aligned)
        assert_matches(out, out_tv)
        assert_matches(grad, grad_tv)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(1, 9), (9, 1), (1, 1), (30, 40)])
def test_matches_torchvision_map_sizes(dtype, size):
    gen = torch.Generator().manual_seed(1)
    height, width = size
    # 70 channels: a full channel block of the backward (64) and a ragged one
    x = torch.randn(2, 70, height, width, generator=gen, dtype=dtype)
    boxes = [make_boxes(gen, 4, height, width, 1.0, dtype), make_boxes(gen, 2, height, width, 1.0, dtype)]
    for aligned in (True, False):
        (out, grad), (out_tv, grad_tv) = run_both(x, boxes, 7, 1.0, -1, aligned)
        assert_matches(out, out_tv)
        assert_matches(grad, grad_tv)


@needs_kernel
@pytest.mark.parametrize("aligned", [True, False])
def test_border_coordinates(aligned, cpu_isa):
    """Single samples exactly on torchvision's border rules: -1, 0, H - 1, H and just beyond."""
    height, width = 5, 6
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    shift = 0.5 if aligned else 0.0
    eps = 1e-9
    centers = [-1 - eps, -1.0, -0.5, 0.0, 0.25, height - 1.0, height - 0.5, height, height + eps]
    rois = []
    for cy in centers:
        for cx in (-1 - eps, -1.0, 0.0, width - 1.0, width + 0.0, width + eps, 2.5):
            # a 2x2 box, one bin, one sample at its center
            rois.append([0.0, cx + shift - 1, cy + shift - 1, cx + shift + 1, cy + shift + 1])
    rois = torch.tensor(rois, dtype=torch.float64)
    (out, grad), (out_tv, grad_tv) = run_both(x, rois, 1, 1.0, 1, aligned)
    assert_matches(out, out_tv)
    assert_matches(grad, grad_tv)
    assert (out != 0).any() and (out == 0).any()  # both sides of the border rule were hit


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_magnitudes(dtype, cpu_isa):
    """Subnormal to large features and gradients, power-of-two and other sample counts: the kernels'
    reciprocal products (for powers of two) must round exactly like torchvision's quotients."""
    gen = torch.Generator().manual_seed(7)
    info = torch.finfo(dtype)
    low = int(math.log2(info.smallest_normal)) - 20  # 20 binades into the subnormals

    def spread(shape, seed, high):
        g = torch.Generator().manual_seed(seed)
        exponents = torch.randint(low, high, shape, generator=g).to(dtype)
        return torch.randn(shape, generator=g, dtype=dtype) * torch.pow(2.0, exponents)

    x = spread((3, 17, 9, 11), 7, 100)
    boxes = [make_boxes(gen, 3, 9, 11, 1.0, dtype) for _ in range(3)]
    for sampling_ratio in (1, 2, 3, 4, -1):
        results = []
        for fn in (roi_align, torchvision.ops.roi_align):
            xi = x.clone().requires_grad_(True)
            out = fn(xi, boxes, (2, 3), 1.0, sampling_ratio, True)
            # tiny gradients, so that subnormal per-sample contributions decide the sums' last bits
            out.backward(spread(out.shape, 8, low + 40))
            results.append((out.detach(), xi.grad))
        (out, grad), (out_tv, grad_tv) = results
        assert (grad_tv != 0).any() and ((grad_tv != 0) & (grad_tv.abs() < info.smallest_normal)).any()
        assert_matches(out, out_tv)
        assert_matches(grad, grad_tv)


@needs_kernel
def test_sam_detr_shape():
    """The Semantics Aligner's call: 300 sigmoid reference boxes on a 15x20 stride-32 map."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 256, 15, 20, generator=gen)
    cxcywh = torch.randn(2, 300, 4, generator=gen).sigmoid()
    xyxy = torch.cat([cxcywh[..., :2] - cxcywh[..., 2:] / 2, cxcywh[..., :2] + cxcywh[..., 2:] / 2], -1)
    boxes = list(xyxy * torch.tensor([20.0, 15.0, 20.0, 15.0]))
    (out, grad), (out_tv, grad_tv) = run_both(x, boxes, 7, 1.0, -1, True)
    assert_matches(out, out_tv)
    assert_matches(grad, grad_tv)


@needs_kernel
def test_non_finite_pixel_propagates_like_torchvision():
    """torchvision adds 0 * pixel (0, 0) for samples outside the map: an inf there gives NaN."""
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 0, 0] = float("inf")
    rois = torch.tensor([[0.0, 10.0, 10.0, 12.0, 12.0], [0.0, 1.0, 1.0, 3.0, 3.0]])
    out, out_tv = roi_align(x, rois, 2, 1.0, -1, False), torchvision.ops.roi_align(x, rois, 2, 1.0, -1, False)
    assert out[0, 0].isnan().all() and not out[0, 1].isnan().any()
    assert_matches(out, out_tv)


@needs_kernel
def test_nan_box_samples_nothing():
    """torchvision's behaviour is undefined (it crashes) on NaN boxes; here they pool nothing."""
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    rois = torch.tensor([[0.0, float("nan"), 1.0, 4.0, 4.0], [0.0, 1.0, 1.0, 4.0, float("nan")]])
    for sampling_ratio in (-1, 2):
        out = roi_align(x, rois, 3, 1.0, sampling_ratio, True)
        out.sum().backward()
        assert (out == 0).all() and (x.grad == 0).all()


@needs_kernel
def test_box_formats_and_output_size():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 9, 11, generator=gen)
    boxes = [make_boxes(gen, 2, 9, 11, 1.0, torch.float32), make_boxes(gen, 1, 9, 11, 1.0, torch.float32)]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    a = roi_align(x, boxes, 4)
    torch.testing.assert_close(a, roi_align(x, rois, (4, 4)), rtol=0, atol=0)
    torch.testing.assert_close(a, roi_align(x, tuple(boxes), [4, 4]), rtol=0, atol=0)
    assert a.shape == (len(rois), 5, 4, 4) and a.is_contiguous()


@needs_kernel
def test_layouts():
    """Channels-last, non-contiguous inputs and a broadcast grad_output give the same numbers; a
    channels-last input gets a channels-last gradient."""
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(2, 6, 10, 12, generator=gen, dtype=torch.float64)
    rois = torch.cat(
        [torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.float64), make_boxes(gen, 1, 10, 12, 1.0, torch.float64)[:3]],
        1,
    )
    expected = torchvision.ops.roi_align(base, rois, 3, 1.0, -1, True)
    variants = {
        "contiguous": base.clone(),
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "strided": torch.randn(2, 12, 10, 24, dtype=torch.float64)[:, ::2, :, ::2].copy_(base),
        "hwc_view": base.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1),
    }
    grads = {}
    for name, x in variants.items():
        x.requires_grad_(True)
        out = roi_align(x, rois, 3, 1.0, -1, True)
        assert_matches(out, expected)
        out.sum().backward()  # an expanded (stride 0) grad_output
        grads[name] = x.grad
    assert grads["channels_last"].is_contiguous(memory_format=torch.channels_last)
    assert grads["contiguous"].is_contiguous()
    x = base.clone().requires_grad_(True)
    torchvision.ops.roi_align(x, rois, 3, 1.0, -1, True).sum().backward()
    for grad in grads.values():
        assert_matches(grad, x.grad)


@needs_kernel
@pytest.mark.parametrize("box_format", ["tensor", "list"])
def test_no_boxes(box_format):
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    boxes = torch.zeros(0, 5) if box_format == "tensor" else [torch.zeros(0, 4), torch.zeros(0, 4)]
    out = roi_align(x, boxes, (2, 3), 1.0, -1, True)
    assert out.shape == (0, 4, 2, 3)
    out.sum().backward()
    assert x.grad.shape == x.shape and (x.grad == 0).all()


@needs_kernel
def test_boxes_get_no_gradient():
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.5, 5.0, 6.0]], requires_grad=True)
    out = roi_align(x, rois, 2, 1.0, 2, True)
    out.sum().backward()
    assert rois.grad is None and x.grad is not None
    # only the boxes require grad: nothing to compute for the input
    x2 = x.detach()
    roi_align(x2, rois, 2, 1.0, 2, True).sum().backward()
    assert x2.grad is None


@needs_kernel
def test_gradcheck():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 0.7, 4.2, 5.1], [1, -1.3, 2.2, 3.4, 7.9], [1, 2.0, 2.0, 2.0, 2.0], [0, 5.5, -0.4, 9.0, 3.3]],
        dtype=torch.float64,
    )
    for aligned in (True, False):
        assert gradcheck(lambda t: roi_align(t, rois, (2, 3), 1.0, -1, aligned), (x,))
        assert gradcheck(lambda t: roi_align(t, rois, 2, 0.5, 2, aligned), (x,))


@needs_kernel
def test_backward_is_deterministic():
    """Repeat runs, thread counts (which change the channel blocks) and instruction sets: the same bits."""
    ext = _EXT
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 130, 15, 20, generator=gen)
    boxes = [make_boxes(gen, 40, 15, 20, 1.0, torch.float32), make_boxes(gen, 25, 15, 20, 1.0, torch.float32)]
    grad_out = torch.randn(sum(len(b) for b in boxes), 130, 7, 7, generator=gen)
    threads = torch.get_num_threads()
    isa = ext.cpu_isa()
    grads = []
    try:
        for isa_name in ext.cpu_isas():
            ext.set_cpu_isa(isa_name)
            for num_threads in (1, 2, 5, 2):
                torch.set_num_threads(num_threads)
                xi = x.clone().requires_grad_(True)
                roi_align(xi, boxes, 7, 1.0, -1, True).backward(grad_out)
                grads.append(xi.grad)
    finally:
        torch.set_num_threads(threads)
        ext.set_cpu_isa(isa)
    for grad in grads[1:]:
        assert torch.equal(grad, grads[0])


@pytest.mark.parametrize(
    "input, boxes, output_size, match, error",
    [
        (torch.zeros(3, 4, 5), torch.zeros(1, 5), 2, "input must be a tensor of shape", ValueError),
        (torch.zeros(1, 3, 4, 5, dtype=torch.int64), torch.zeros(1, 5), 2, "input must be a floating", TypeError),
        (torch.zeros(1, 3, 4, 5), torch.zeros(1, 4), 2, r"boxes as a tensor must have shape \(K, 5\)", ValueError),
        (torch.zeros(1, 3, 4, 5), [torch.zeros(2, 5)], 2, r"boxes\[0\] must be a tensor of shape \(L, 4\)", ValueError),
        (torch.zeros(1, 3, 4, 5), "boxes", 2, "boxes must be a Tensor", TypeError),
        (torch.zeros(1, 3, 4, 5), torch.zeros(1, 5), (2, 0), "output_size must be a positive", ValueError),
        (torch.zeros(1, 3, 4, 5), torch.zeros(1, 5), (2, 2, 2), "output_size must be a positive", ValueError),
    ],
)
def test_argument_errors(input, boxes, output_size, match, error):
    with pytest.raises(error, match=match):
        roi_align(input, boxes, output_size)


@pytest.mark.parametrize("boxes_dtype", [torch.float64, torch.bfloat16])
def test_boxes_take_the_dtype_of_input(boxes_dtype):
    """Outside autocast the boxes are cast to input's dtype (detectron2's ROIAlign does so), not refused."""
    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0.0, 0.5, 1.0, 6.0, 7.5], [1.0, 2.0, 0.0, 10.0, 4.0]])
    out = roi_align(x, rois.to(boxes_dtype), 3, 1.0, -1, True)
    assert out.dtype == torch.float32
    expected = torchvision.ops.roi_align(x, rois.to(boxes_dtype).float(), 3, 1.0, -1, True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("input_dtype, boxes_dtype", [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16),
                                                      (torch.bfloat16, torch.bfloat16)])
def test_autocast_computes_in_float32(input_dtype, boxes_dtype):
    """Under CPU bfloat16 autocast (features from an autocast conv are bfloat16, boxes often float32) the
    output and input gradient equal torchvision's under the same autocast: both cast to float32, the
    output in input's dtype."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 12, 10, generator=gen).to(input_dtype)
    rois = torch.tensor([[0.0, 0.5, 1.0, 6.0, 7.5], [1.0, 2.0, 0.0, 9.0, 11.0]]).to(boxes_dtype)
    grad = torch.randn(2, 5, 4, 4, generator=gen).to(input_dtype)
    results = []
    for fn in (roi_align, torchvision.ops.roi_align):
        leaf = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(leaf, rois, 4, 1.0, 2, True)
        out.backward(grad)
        results.append((out, leaf.grad))
    (out, grad_x), (expected, expected_grad) = results
    assert out.dtype == input_dtype and grad_x.dtype == input_dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(grad_x, expected_grad, rtol=0, atol=0)


@needs_kernel
@pytest.mark.parametrize("batch_index", [2.0, -1.0, float("nan")])
def test_bad_batch_index(batch_index):
    rois = torch.tensor([[0.0, 1, 1, 3, 3], [batch_index, 1, 1, 3, 3]])
    with pytest.raises(RuntimeError, match=r"rois\[1, 0\] = .* is not a batch index in \[0, 2\)"):
        roi_align(torch.zeros(2, 3, 4, 5), rois, 2)


@needs_kernel
def test_function_is_used_on_cpu():
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    out = roi_align(x, torch.tensor([[0.0, 0, 0, 4, 4]]), 2)
    assert isinstance(out.grad_fn, RoIAlignFunction._backward_cls)


def test_fallback_warns_once_and_matches_torchvision(monkeypatch):
    monkeypatch.setattr(_ext, "kernel_available", lambda op, device: False)
    monkeypatch.setattr(_ext, "_warned", set())
    x = torch.randn(1, 2, 6, 6)
    rois = torch.tensor([[0.0, 0.5, 1.0, 4.0, 5.5]])
    with pytest.warns(RuntimeWarning, match="roi_align"):
        out = roi_align(x, rois, 3, 1.0, -1, True)
    torch.testing.assert_close(out, torchvision.ops.roi_align(x, rois, 3, 1.0, -1, True), rtol=0, atol=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        roi_align(x, rois, 3, 1.0, -1, True)


@pytest.mark.cuda
def test_cuda_uses_torchvision_without_warning():
    import warnings

    x = torch.randn(2, 8, 10, 12, device="cuda", requires_grad=True)
    boxes = [torch.tensor([[0.5, 1.0, 6.0, 7.5]], device="cuda"), torch.zeros(0, 4, device="cuda")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = roi_align(x, boxes, 7, 1.0, -1, True)
    torch.testing.assert_close(out, torchvision.ops.roi_align(x, boxes, 7, 1.0, -1, True), rtol=0, atol=0)
    out.sum().backward()
    assert x.grad.device.type == "cuda"

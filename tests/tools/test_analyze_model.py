"""tools/analyze_model.py, and the FLOP handles of sam_detr.utils.analysis."""
import importlib
import re
from types import SimpleNamespace

import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from torch import nn  # noqa: E402
from tool_helpers import QUICKSTART, TINY_DETR, datasets_root, load_tool  # noqa: E402

from sam_detr.layers import _ext  # noqa: E402
from sam_detr.utils.analysis import ActivationCountAnalysis, FlopCountAnalysis  # noqa: E402

ms_deform_attn = importlib.import_module("sam_detr.layers.ms_deform_attn")


def test_flop_and_parameter_count_of_a_detr(tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    load_tool("analyze_model").main(
        ["--config-file", QUICKSTART, "--tasks", "flop", "parameter", "-n", "2", *TINY_DETR]
    )
    out = capsys.readouterr().out
    total = re.search(r"Total GFLOPs over 2 image\(s\) of mean size \d+x\d+: ([0-9.]+) ± ([0-9.]+)", out)
    assert total, out
    assert float(total.group(1)) > 0
    by_operator = dict(re.findall(r"^  (\w+) +([0-9.]+)$", out, re.MULTILINE))
    # DETR's attention runs fused in inference (nn.MultiheadAttention without weights): counted by our
    # handle, a row of its own (0.0000 GFLOPs at this size; uncounted operators are listed apart)
    assert float(by_operator["conv"]) > 0 and "scaled_dot_product_attention" in by_operator, out
    assert "Uncounted operators" in out
    assert re.search(r"Parameters: [0-9.]+ M, of which trainable: [0-9.]+ M", out)


class _Attention(nn.Module):
    """MSDeformAttn over two levels, with the inputs it needs built from the queries and the values."""

    def __init__(self):
        super().__init__()
        self.attn = ms_deform_attn.MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
        self.register_buffer("shapes", torch.tensor([[6, 5], [3, 3]]), persistent=False)
        self.register_buffer("starts", torch.tensor([0, 30]), persistent=False)

    def forward(self, query, reference_points, values):
        return self.attn(query, reference_points, values, self.shapes, self.starts)


@pytest.fixture
def compiled_op(monkeypatch):
    """The compiled op (its PyTorch reference behind the same autograd Function, where it is not built):
    fvcore sees `prim::PythonOp.MSDeformAttnFunction`, not the grid_sample of the PyTorch path."""
    fake = SimpleNamespace(ms_deform_attn_forward=ms_deform_attn.ms_deform_attn_pytorch, with_cuda=lambda: False)
    monkeypatch.setattr(_ext, "get_extension", lambda: fake)


def test_ms_deform_attn_is_counted_through_its_handle(compiled_op):
    N, Lq, C, L, P = 2, 7, 32, 2, 3
    inputs = (torch.randn(N, Lq, C), torch.rand(N, Lq, L, 2), torch.randn(N, 39, C))
    model = _Attention().eval()

    flops = FlopCountAnalysis(model, inputs)
    by_operator = flops.by_operator()
    assert by_operator["PythonOp.MSDeformAttnFunction"] == 5 * L * P * N * Lq * C
    assert "prim::PythonOp.MSDeformAttnFunction" not in flops.unsupported_ops()
    linear = N * Lq * C * (4 * L * P * 3) + N * 39 * C * C + N * Lq * C * C  # offsets + weights, value, output
    assert by_operator["linear"] == linear
    assert flops.total() == linear + 5 * L * P * N * Lq * C

    activations = ActivationCountAnalysis(model, inputs).by_operator()
    assert activations["PythonOp.MSDeformAttnFunction"] == N * Lq * C


def test_masked_multihead_attention_logits_are_counted():
    B, Lq, S, C, H = 2, 5, 9, 16, 4
    attention = nn.MultiheadAttention(C, H).eval()
    mask = torch.zeros(B, S, dtype=torch.bool)
    mask[1, 6:] = True
    inputs = (torch.randn(Lq, B, C), torch.randn(S, B, C), torch.randn(S, B, C), mask)
    flops = FlopCountAnalysis(attention, inputs).by_operator()
    # q @ k^T (the masked baddbmm) and weights @ v (bmm): B * H * Lq * S * (C / H) each
    assert flops["baddbmm"] == flops["bmm"] == B * Lq * S * C


class _SelfAttentionNoWeights(nn.Module):
    """Self-attention as the deformable decoder layers call it: no weights returned (the fused kernel)."""

    def __init__(self, C, H):
        super().__init__()
        self.attn = nn.MultiheadAttention(C, H, batch_first=True)

    def forward(self, x, pos):
        return self.attn(x + pos, x + pos, x, need_weights=False)[0]


def test_fused_attention_is_counted():
    B, Q, C, H = 2, 5, 16, 4
    inputs = (torch.randn(B, Q, C), torch.randn(B, Q, C))
    flops = FlopCountAnalysis(_SelfAttentionNoWeights(C, H).eval(), inputs)
    # q @ k^T and weights @ v: B * H * Q * Q * (C / H) each
    assert flops.by_operator()["scaled_dot_product_attention"] == 2 * B * Q * Q * C
    assert "aten::scaled_dot_product_attention" not in flops.unsupported_ops()


def test_fast_resnet_convolutions_are_counted():
    from sam_detr.modeling.backbone.resnet import build_resnet_backbone

    image = torch.randn(1, 3, 67, 93)
    counts = {}
    for fast in (True, False):
        backbone = build_resnet_backbone(18, out_features=["res4"], fast=fast).eval()
        flops = FlopCountAnalysis(backbone, (image,))
        counts[fast] = flops.by_operator()["conv"]
        # the fast path calls oneDNN's convolution directly (BN folded in): the same multiply-adds as d2's
        assert not any("convolution" in op for op in flops.unsupported_ops()), flops.unsupported_ops()
    # (the plain path's frozen BN adds its own count, one per element, as fvcore counts batch_norm in eval;
    # the fast path folds it into the convolution)
    assert counts[True] == counts[False] > 0

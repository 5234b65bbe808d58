import math

import pytest
import torch

from conftest import DETECTRON2_MISSING
from swin_v2_tiny import TINY_SWINV2, trained_like

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch.nn.functional as F  # noqa: E402

from sam_detr.modeling import SwinTransformerV2, UpsampleBackbone, build_swinv2_backbone  # noqa: E402
from sam_detr.modeling.backbone import swin_v2  # noqa: E402
from sam_detr.modeling.backbone.swin_v2 import (  # noqa: E402
    CosineAttention, LayerNormFP32, SwinV2Block, log_spaced_relative_coords, relative_position_index,
    shifted_window_mask, window_order,
)

def _stride32_size(n):
    n = math.ceil(n / 4)
    for _ in range(3):
        n = (n + 1) // 2
    return n


@pytest.mark.parametrize("size", [(75, 101), (33, 47), (5, 3), (64, 64)])
def test_trunk_and_upsampled_shapes_on_odd_sizes(size):
    trunk = SwinTransformerV2(**TINY_SWINV2, drop_path_rate=0.0, out_features=("res2", "res3", "res4", "res5")).eval()
    shapes = trunk.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res2": (8, 4), "res3": (16, 8), "res4": (32, 16), "res5": (64, 32)
    }
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = trunk(x)
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    for name in ("res2", "res3", "res4", "res5"):
        assert out[name].shape == (2, shapes[name].channels, h, w)
        h, w = (h + 1) // 2, (w + 1) // 2

    model = build_swinv2_backbone(**TINY_SWINV2, drop_path_rate=0.0).eval()
    assert {k: (s.channels, s.stride) for k, s in model.output_shape().items()} == {"p4": (32, 16)}
    with torch.no_grad():
        p4 = model(x)["p4"]
    assert p4.shape == (2, 32, 2 * _stride32_size(size[0]), 2 * _stride32_size(size[1]))
    assert torch.isfinite(p4).all()


def test_swinv2_small_parameters_equal_the_official_listing():
    """The official Plain-DETR boxrpe state dict (tests/checkpoint/listings/sd_plain_boxrpe.txt) holds 425
    backbone tensors of 50,139,450 numbers, besides the 44 coordinate buffers of the 22 window blocks."""
    with torch.device("meta"):
        model = build_swinv2_backbone()
    assert sum(p.numel() for p in model.parameters()) == 50_139_450
    state = model.state_dict()
    assert len(state) == 425
    assert not any("relative_" in k for k in state)
    assert state["upsample.0.weight"].shape == (768, 384, 2, 2)
    assert state["net.layers.3.blocks.1.attn.cpb_mlp.2.weight"].shape == (24, 512)
    assert state["net.norm3.weight"].shape == (768,)
    assert model.output_shape()["p4"].channels == 384 and model.output_shape()["p4"].stride == 16


@pytest.mark.parametrize("size", [(3, 5), (4, 4), (7, 2), (1, 1)])
def test_global_block_is_window_attention_over_the_whole_map(size):
    """A global block on an h x w map (its table built for that size) is the window attention whose one
    window is the map; on a square map, exactly the windowed module with window = side."""
    h, w = size
    torch.manual_seed(0)
    glob = trained_like(CosineAttention(8, 2, None, pretrained_window_size=4)).eval()
    x = torch.randn(3, h * w, 8)
    bias = glob.position_bias(h, w)
    assert bias.shape == (2, h * w, h * w)
    # brute force: the CPB of each pair's log-spaced offset, normalised by the pretrained window (4 - 1)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d = torch.stack([ys.flatten()[:, None] - ys.flatten()[None], xs.flatten()[:, None] - xs.flatten()[None]], -1)
    d = d.float() / 3 * 8
    d = torch.sign(d) * torch.log2(d.abs() + 1) / 3
    expected = 16 * torch.sigmoid(glob.cpb_mlp(d)).permute(2, 0, 1)
    torch.testing.assert_close(bias, expected, rtol=1e-5, atol=1e-5)
    if h == w and h > 1:
        win = CosineAttention(8, 2, h, pretrained_window_size=4).eval()
        win.load_state_dict(glob.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(glob(x, size), win(x, size), rtol=0, atol=0)


def test_global_blocks_run_on_any_size_and_backpropagate():
    model = trained_like(build_swinv2_backbone(**TINY_SWINV2, drop_path_rate=0.0))
    for size in ((75, 101), (40, 9)):
        model.zero_grad()
        model(torch.randn(1, 3, *size))["p4"].square().mean().backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not unused


def test_coordinate_tables():
    table = log_spaced_relative_coords(3, 2, 3, 2)
    assert table.shape == (5, 3, 2) and table.dtype == torch.float32
    # offset dy = 2 on a pretrained window of 3: 2 / 2 * 8 = 8 -> log2(9) / 3
    assert table[4, 1, 0].item() == pytest.approx(math.log2(9) / 3)
    assert table[2, 1].tolist() == [0.0, 0.0]
    assert (table[:, :, 0] == -table.flip(0)[:, :, 0]).all()
    index = relative_position_index(2, 3)
    assert index.shape == (6, 6)
    # token 5 = (1, 2), token 0 = (0, 0): offset (1, 2) -> row (1 + 1) * 5 + (2 + 2)
    assert index[5, 0].item() == 14 and index[0, 5].item() == 0 and (index.diagonal() == 7).all()


def test_shift_mask_separates_the_regions_brought_together_by_the_roll():
    hp, wp, ws, s = 8, 12, 4, 2
    mask = shifted_window_mask(hp, wp, ws, s)
    assert mask.shape == (6, 16, 16)
    # brute force: after the roll by -s, the last s rows (columns) hold the first rows (columns) of the map,
    # wrapped around; two tokens of a window may attend to each other only if both or neither wrapped, per axis
    wrapped = (torch.arange(hp) >= hp - s).long()[:, None] * 2 + (torch.arange(wp) >= wp - s).long()[None, :]
    windows = wrapped.view(hp // ws, ws, wp // ws, ws).transpose(1, 2).reshape(-1, ws * ws)
    expected = torch.where(windows[:, :, None] == windows[:, None, :], 0.0, -100.0)
    assert torch.equal(mask, expected)
    # the last window row/column mixes wrapped and unwrapped tokens, the first does not
    assert (mask[0] == 0).all() and (mask[-1] == -100).any()


def test_shifted_block_pads_then_shifts():
    """An odd map is padded to whole windows before the cyclic shift: the block equals running it on the
    zero-padded map with the full-size mask, then cropping."""
    torch.manual_seed(0)
    blk = trained_like(SwinV2Block(8, 2, 4, 2, 4, 4.0, 0.0)).eval()
    h, w = 6, 7
    x = torch.randn(2, h * w, 8)
    with torch.no_grad():
        got = blk.attn(x, (4, 4), shifted_window_mask(8, 8, 4, 2), windows=window_order(h, w, 4, 2))
        padded = F.pad(x.view(2, h, w, 8), (0, 0, 0, 1, 0, 2)).reshape(2, 64, 8)
        full = blk.attn(padded, (4, 4), shifted_window_mask(8, 8, 4, 2), windows=window_order(8, 8, 4, 2))
        full = full.view(2, 8, 8, 8)
    torch.testing.assert_close(got.view(2, h, w, 8), full[:, :h, :w], rtol=0, atol=0)


@pytest.mark.parametrize("size,shift", [((6, 7), 2), ((8, 8), 0), ((5, 9), 2), ((3, 3), 2)])
def test_window_order_is_pad_roll_partition(size, shift):
    h, w = size
    ws = 4
    x = torch.arange(1.0, h * w + 1).view(1, h, w, 1)  # token i holds i + 1, padding 0
    padded = F.pad(x, (0, 0, 0, (-w) % ws, 0, (-h) % ws))
    hp, wp = padded.shape[1:3]
    rolled = torch.roll(padded, shifts=(-shift, -shift), dims=(1, 2))
    windows = rolled.view(hp // ws, ws, wp // ws, ws).transpose(1, 2).reshape(-1)
    gather, scatter = window_order(h, w, ws, shift)
    tokens = torch.cat([x.flatten(), torch.zeros(1)])
    assert torch.equal(tokens[gather], windows)
    assert torch.equal(windows[scatter], x.flatten())


def test_cosine_attention_is_the_official_formula():
    """Through scaled_dot_product_attention (the logit scale folded into q, bias and shift mask as its mask):
    the official softmax((q / (|q| + 5e-5)) . (k / (|k| + 5e-5)) * clamp(scale) + 16 sigmoid(cpb) + mask) v."""
    torch.manual_seed(0)
    attn = trained_like(CosineAttention(8, 2, 4, 4)).eval()
    x = torch.randn(2 * 6, 16, 8)  # 2 images of 6 windows
    mask = shifted_window_mask(8, 12, 4, 2)
    with torch.no_grad():
        attn.logit_scale.copy_(torch.tensor([1.0, 5.0]).view(2, 1, 1))  # the second head is clamped
        bias = torch.cat([attn.q_bias, torch.zeros(8), attn.v_bias])
        q, k, v = F.linear(x, attn.qkv.weight, bias).view(12, 16, 3, 2, 4).permute(2, 0, 3, 1, 4)
        q, k = q / (q.norm(dim=-1, keepdim=True) + 5e-5), k / (k.norm(dim=-1, keepdim=True) + 5e-5)
        logits = q @ k.transpose(-2, -1) * torch.tensor([math.e, 100.0]).view(2, 1, 1)
        logits = logits + attn.position_bias(4, 4) + mask.repeat(2, 1, 1)[:, None]
        expected = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(12, 16, 8))
        torch.testing.assert_close(attn(x, (4, 4), mask), expected, rtol=1e-5, atol=1e-5)


def test_layer_norm_fp32_and_qkv_island_under_autocast(monkeypatch):
    norm = LayerNormFP32(8, eps=1e-6)
    x = torch.randn(3, 8).bfloat16()
    y = norm(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, F.layer_norm(x.float(), (8,), eps=1e-6).bfloat16())

    attn = trained_like(CosineAttention(8, 2, 4, 4)).eval()
    seen = []
    real_linear = F.linear

    def recording_linear(inp, weight, bias=None):
        if weight is attn.qkv.weight:
            seen.append((inp.dtype, torch.is_autocast_enabled("cpu")))
        return real_linear(inp, weight, bias)

    monkeypatch.setattr(swin_v2.F, "linear", recording_linear)
    x = torch.randn(2, 16, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x.bfloat16(), (4, 4))
    assert seen == [(torch.float32, False)]
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        torch.testing.assert_close(out.float(), attn(x, (4, 4)), rtol=0.05, atol=0.05)


def test_logit_scale_is_clamped_at_log_100():
    attn = CosineAttention(8, 2, 4, 4).eval()
    x = torch.randn(2, 16, 8)
    with torch.no_grad():
        attn.logit_scale.fill_(math.log(100.0))
        at_bound = attn(x, (4, 4))
        attn.logit_scale.fill_(7.0)
        assert torch.equal(attn(x, (4, 4)), at_bound)
        attn.logit_scale.fill_(4.0)
        assert not torch.equal(attn(x, (4, 4)), at_bound)


def test_checkpointing_and_drop_path():
    torch.manual_seed(0)
    plain = trained_like(build_swinv2_backbone(**TINY_SWINV2, drop_path_rate=0.0)).train()
    ckpt = build_swinv2_backbone(**TINY_SWINV2, drop_path_rate=0.0, use_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 45, 37)
    plain(x)["p4"].sum().backward()
    ckpt(x)["p4"].sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)

    dropping = trained_like(build_swinv2_backbone(**TINY_SWINV2, drop_path_rate=0.5))
    rates = [blk.drop_path for stage in dropping.net.layers for blk in stage.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    dropping.eval()
    with torch.no_grad():
        assert torch.equal(dropping(x)["p4"], dropping(x)["p4"])
        dropping.train()
        torch.manual_seed(1)
        a = dropping(x)["p4"]
        torch.manual_seed(2)
        assert not torch.equal(a, dropping(x)["p4"])


def test_initialisation_is_the_official_one():
    trunk = SwinTransformerV2(**TINY_SWINV2, drop_path_rate=0.0)
    blk = trunk.layers[3].blocks[0]
    assert blk.attn.window_size is None and trunk.layers[2].blocks[1].attn.window_size == 4
    assert trunk.layers[2].blocks[1].shift_size == 2 and trunk.layers[2].blocks[0].shift_size == 0
    for norm in (blk.norm1, blk.norm2):  # res-post-norm: blocks start as the identity
        assert not norm.weight.any() and not norm.bias.any()
    assert (trunk.norm3.weight == 1).all() and (trunk.layers[0].downsample.norm.weight == 1).all()
    assert torch.allclose(blk.attn.logit_scale, torch.tensor(math.log(10.0)))
    assert not blk.attn.q_bias.any() and not blk.attn.proj.bias.any()
    assert blk.mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)  # trunc_normal_(std=0.02)
    assert blk.norm1.eps == 1e-6 and isinstance(trunk.layers[0].downsample.norm, LayerNormFP32)


def test_upsample_wrapper():
    trunk = SwinTransformerV2(**TINY_SWINV2, drop_path_rate=0.0)
    up = UpsampleBackbone(trunk, out_stride=8)
    names = [n for n, _ in up.upsample.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.ln.weight", "1.ln.bias", "3.weight", "3.bias"]
    assert {k: (s.channels, s.stride) for k, s in up.output_shape().items()} == {"p3": (16, 8)}
    with torch.no_grad():
        assert up(torch.randn(1, 3, 40, 50))["p3"].shape == (1, 16, 8, 8)
    same = UpsampleBackbone(SwinTransformerV2(**TINY_SWINV2, drop_path_rate=0.0), out_stride=32)
    assert isinstance(same.upsample, torch.nn.Identity) and "p5" in same.output_shape()
    with pytest.raises(ValueError, match="out_stride 12"):
        UpsampleBackbone(SwinTransformerV2(**TINY_SWINV2, drop_path_rate=0.0), out_stride=12)
    with pytest.raises(ValueError, match="out_stride 64"):
        UpsampleBackbone(SwinTransformerV2(**TINY_SWINV2, drop_path_rate=0.0), out_stride=64)
    multi = SwinTransformerV2(**TINY_SWINV2, drop_path_rate=0.0, out_features=("res4", "res5"))
    with pytest.raises(ValueError, match="in_feature"):
        UpsampleBackbone(multi, out_stride=16)
    assert UpsampleBackbone(multi, out_stride=8, in_feature="res4").output_shape()["p3"].channels == 16


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"global_blocks\[3\]"):
        SwinTransformerV2(**{**TINY_SWINV2, "global_blocks": ((), (), (), (2,))}, drop_path_rate=0.0)
    with pytest.raises(ValueError, match="num_heads"):
        SwinTransformerV2(**{**TINY_SWINV2, "num_heads": (1, 2)}, drop_path_rate=0.0)
    with pytest.raises(ValueError, match="res6"):
        SwinTransformerV2(**TINY_SWINV2, drop_path_rate=0.0, out_features=("res6",))

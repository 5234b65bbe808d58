"""Swin (v1), DINO's Swin-L backbone: shapes, the window attention against its direct formula, the Swin-L size."""
import math

import pytest
import torch

from conftest import DETECTRON2_MISSING
from swin_v2_tiny import trained_like

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch.nn.functional as F  # noqa: E402

from sam_detr.modeling.backbone.swin import SwinTransformer, WindowAttention  # noqa: E402
from sam_detr.modeling.backbone.swin_v2 import stage_windows  # noqa: E402

TINY_SWIN = dict(embed_dim=8, depths=(1, 2, 1, 2), num_heads=(1, 2, 2, 4), window_size=3)


@pytest.mark.parametrize("size", [(75, 101), (33, 47), (5, 3)])
def test_shapes_on_odd_sizes(size):
    trunk = SwinTransformer(**TINY_SWIN, out_features=("res2", "res3", "res4", "res5")).eval()
    shapes = trunk.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res2": (8, 4), "res3": (16, 8), "res4": (32, 16), "res5": (64, 32)
    }
    with torch.no_grad():
        out = trunk(torch.randn(2, 3, *size))
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    for name in ("res2", "res3", "res4", "res5"):
        assert out[name].shape == (2, shapes[name].channels, h, w) and torch.isfinite(out[name]).all()
        h, w = (h + 1) // 2, (w + 1) // 2


def direct_window_attention(attn: WindowAttention, x: torch.Tensor, h: int, w: int, shift: int) -> torch.Tensor:
    """The official computation written out: pad the map to whole windows, roll by -shift, partition, attend
    with (q * scale) k^T + bias table[index] (+ -100 across the rolled regions), reverse, roll back, crop."""
    ws, b, c = attn.window_size, x.shape[0], x.shape[-1]
    heads = attn.num_heads
    m = F.pad(x.view(b, h, w, c), (0, 0, 0, (-w) % ws, 0, (-h) % ws))
    hp, wp = m.shape[1:3]
    m = torch.roll(m, (-shift, -shift), (1, 2))
    win = m.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
    qkv = attn.qkv(win).view(win.shape[0], ws * ws, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    logits = (qkv[0] * attn.scale) @ qkv[1].transpose(-1, -2)
    n = ws * ws
    rel = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = rel[:, :, None] - rel[:, None, :] + ws - 1
    logits = logits + attn.relative_position_bias_table[rel[0] * (2 * ws - 1) + rel[1]].permute(2, 0, 1)
    if shift:
        def region(size):  # rows [0, size - ws) -> 0, [size - ws, size - shift) -> 1, the rest 2
            return (torch.arange(size) >= size - ws).long() + (torch.arange(size) >= size - shift).long()

        label = (region(hp)[:, None] * 3 + region(wp)[None, :]).view(hp // ws, ws, wp // ws, ws)
        label = label.transpose(1, 2).reshape(-1, n)
        mask = torch.where(label[:, :, None] == label[:, None, :], 0.0, -100.0)
        logits = logits + mask.repeat(b, 1, 1)[:, None]
    out = (logits.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(-1, n, c)
    out = out.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    out = torch.roll(out, (shift, shift), (1, 2))[:, :h, :w]
    return attn.proj(out.reshape(b, h * w, c))


@pytest.mark.parametrize("size,shift", [((6, 7), 1), ((6, 6), 0), ((4, 8), 1), ((2, 2), 1)])
def test_window_attention_is_the_official_formula(size, shift):
    torch.manual_seed(0)
    attn = trained_like(WindowAttention(8, 2, 3)).double().eval()
    h, w = size
    x = torch.randn(2, h * w, 8, dtype=torch.float64)
    gather, scatter, mask = stage_windows(h, w, 3, [shift])[shift]
    with torch.no_grad():
        got = attn(x, (gather, scatter, None if mask is None else mask.double()))
        expected = direct_window_attention(attn, x, h, w, shift)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_swin_large_has_the_official_size():
    """DINO's Swin-L 384 (IDEA-Research/DINO, `swin_L_384_22k`): its state dict holds 331 backbone tensors of
    195,200,820 numbers with the three output norms of the 4-scale model, besides 24 `relative_position_index`
    buffers (geometry, rebuilt here)."""
    with torch.device("meta"):
        trunk = SwinTransformer(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12)
    assert sum(p.numel() for p in trunk.parameters()) == 195_200_820
    state = trunk.state_dict()
    assert len(state) == 331 and not any("relative_position_index" in k for k in state)
    assert state["layers.2.blocks.17.attn.relative_position_bias_table"].shape == (529, 24)
    assert state["layers.0.downsample.norm.weight"].shape == (768,)  # pre-norm merging: over 4C


def test_checkpointing_and_drop_path_train():
    torch.manual_seed(0)
    trunk = SwinTransformer(**TINY_SWIN, drop_path_rate=0.5, use_checkpoint=True).train()
    out = trunk(torch.randn(2, 3, 37, 29))
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in trunk.parameters())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_heads has 3 entries, depths 4"):
        SwinTransformer(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 2, 2), window_size=3)
    with pytest.raises(ValueError, match="out_features \\['res6'\\]"):
        SwinTransformer(**TINY_SWIN, out_features=("res6",))

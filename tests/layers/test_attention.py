import pytest
import torch

from sam_detr.layers import MultiheadAttentionNoProj


def _reference(attn, q, k, v, key_padding_mask=None, attn_bias=None):
    """Head by head, image by image; batch-first (N, L, ...) in and out."""
    q, k, v = (x.transpose(0, 1) for x in (q, k, v))
    Lq, N, E = q.shape
    H = attn.num_heads
    hd, vd = E // H, attn.vdim // H
    out = torch.zeros(Lq, N, attn.vdim, dtype=q.dtype)
    for n in range(N):
        for h in range(H):
            qh = q[:, n, h * hd : (h + 1) * hd] * hd**-0.5
            kh = k[:, n, h * hd : (h + 1) * hd] if k.shape[-1] == E else k[:, n]
            logits = qh @ kh.T
            if key_padding_mask is not None:
                logits = logits.masked_fill(key_padding_mask[n][None], float("-inf"))
            if attn_bias is not None:
                logits = logits + attn_bias[n * H + h]
            out[:, n, h * vd : (h + 1) * vd] = logits.softmax(-1) @ v[:, n, h * vd : (h + 1) * vd]
    return attn.out_proj(out).transpose(0, 1)


@pytest.mark.parametrize("shared_key", [False, True])
def test_matches_per_head_reference(shared_key):
    torch.manual_seed(0)
    attn = MultiheadAttentionNoProj(embed_dim=24, num_heads=3, vdim=9).double().eval()
    Lq, S, N = 5, 7, 2
    q = torch.randn(N, Lq, 24, dtype=torch.float64)
    k = torch.randn(N, S, 8 if shared_key else 24, dtype=torch.float64)
    v = torch.randn(N, S, 9, dtype=torch.float64)
    mask = torch.zeros(N, S, dtype=torch.bool)
    mask[1, 4:] = True
    bias = torch.randn(N * 3, Lq, S, dtype=torch.float64)
    out = attn(q, k, v, key_padding_mask=mask, attn_bias=bias)
    torch.testing.assert_close(out, _reference(attn, q, k, v, mask, bias), rtol=1e-12, atol=1e-12)


def test_shared_key_equals_replicated_key():
    torch.manual_seed(1)
    attn = MultiheadAttentionNoProj(embed_dim=32, num_heads=4, vdim=8).eval()
    q = torch.randn(2, 3, 32)
    k = torch.randn(2, 6, 8)
    v = torch.randn(2, 6, 8)
    torch.testing.assert_close(attn(q, k, v), attn(q, k.repeat(1, 1, 4), v), rtol=1e-5, atol=1e-6)


def test_rejects_indivisible_widths():
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttentionNoProj(embed_dim=10, num_heads=3)

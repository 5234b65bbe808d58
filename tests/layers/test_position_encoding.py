import math

import torch

from sam_detr.layers import PositionEmbeddingSine, anchor_sine_embed, boxes_sine_embed, points_sine_embed, sine_embed


def _reference_map(mask, num_feats, offset):
    """The official formula, written out per pixel."""
    B, H, W = mask.shape
    out = torch.zeros(B, 2 * num_feats, H, W, dtype=torch.float64)
    for b in range(B):
        valid_h = int((~mask[b, :, 0]).sum())
        valid_w = int((~mask[b, 0, :]).sum())
        for i in range(H):
            for j in range(W):
                y = min(i + 1, valid_h) if not mask[b, i, 0] else valid_h
                x = min(j + 1, valid_w) if not mask[b, 0, j] else valid_w
                y = (y + offset) / (valid_h + 1e-6) * 2 * math.pi
                x = (x + offset) / (valid_w + 1e-6) * 2 * math.pi
                for f in range(num_feats):
                    t = 10000 ** (2 * (f // 2) / num_feats)
                    fn = math.sin if f % 2 == 0 else math.cos
                    out[b, f, i, j] = fn(y / t)
                    out[b, num_feats + f, i, j] = fn(x / t)
    return out


def test_map_encoding_matches_formula_with_padding():
    mask = torch.ones(2, 5, 7, dtype=torch.bool)
    mask[0, :5, :7] = False
    mask[1, :3, :4] = False
    for offset in (0.0, -0.5):
        pos = PositionEmbeddingSine(8, offset=offset)(mask)
        assert pos.shape == (2, 16, 5, 7)
        ref = _reference_map(mask, 8, offset)
        valid = ~mask[:, None].expand_as(pos)
        torch.testing.assert_close(pos.double()[valid], ref[valid], atol=1e-5, rtol=0)


def test_offset_is_deformable_rule():
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    detr = PositionEmbeddingSine(4, offset=0.0)(mask)
    deform = PositionEmbeddingSine(4, offset=-0.5)(mask)
    assert not torch.allclose(detr, deform)
    # the first feature of Y is sin(y); for DETR y = 2*pi at the last row
    torch.testing.assert_close(detr[0, 0, -1, 0], torch.tensor(math.sin(4 / (4 + 1e-6) * 2 * math.pi)))


def test_points_and_anchors_put_y_first_and_boxes_keep_order():
    p = torch.tensor([[0.25, 0.75]])
    e = points_sine_embed(p, num_feats=4)
    torch.testing.assert_close(e[:, :4], sine_embed(p[:, 1:], 4))
    torch.testing.assert_close(e[:, 4:], sine_embed(p[:, :1], 4))
    b = torch.rand(3, 2, 4)
    eb = boxes_sine_embed(b, num_feats=6)
    assert eb.shape == (3, 2, 24)
    for k in range(4):
        torch.testing.assert_close(eb[..., 6 * k : 6 * (k + 1)], sine_embed(b[..., k : k + 1], 6))
    # anchor boxes (DAB-DETR, DINO): Y before X, then w and h
    ea = anchor_sine_embed(b, num_feats=6)
    for k, coord in enumerate((1, 0, 2, 3)):
        torch.testing.assert_close(ea[..., 6 * k : 6 * (k + 1)], sine_embed(b[..., coord : coord + 1], 6))
    # interleaved sin/cos of x * 2pi / 10000^(2*(i//2)/F)
    x = 0.3
    expected = [math.sin(x * 2 * math.pi), math.cos(x * 2 * math.pi)]
    t = 10000 ** (2 / 4)
    expected += [math.sin(x * 2 * math.pi / t), math.cos(x * 2 * math.pi / t)]
    torch.testing.assert_close(sine_embed(torch.tensor([x]), 4), torch.tensor(expected))

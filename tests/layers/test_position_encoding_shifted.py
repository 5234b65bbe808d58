import math

import torch

from sam_detr.layers import PositionEmbeddingSine


def _sam_detr_official(mask, num_feats):
    """ZhangGongjie/SAM-DETR models/position_encoding.py, PositionEmbeddingSine.forward."""
    not_mask = ~mask
    y_embed = not_mask.cumsum(1, dtype=torch.float32) - 0.5
    x_embed = not_mask.cumsum(2, dtype=torch.float32) - 0.5
    y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6 + 0.5) * 2 * math.pi
    x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6 + 0.5) * 2 * math.pi
    dim_t = torch.arange(num_feats, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def test_shifted_denominator_is_sam_detr_rule_also_on_all_padding_rows_and_columns():
    mask = torch.ones(2, 6, 9, dtype=torch.bool)
    mask[0] = False
    mask[1, :4, :5] = False  # rows 4-5 and columns 5-8 are all padding
    shifted = PositionEmbeddingSine(16, offset=-0.5, shifted_denominator=True)(mask)
    torch.testing.assert_close(shifted, _sam_detr_official(mask, 16), rtol=0, atol=0)
    # the same rule as Deformable DETR's up to rounding, except where a whole row or column is padding
    deformable = PositionEmbeddingSine(16, offset=-0.5)(mask)
    torch.testing.assert_close(shifted[:, :, :4, :5], deformable[:, :, :4, :5], rtol=0, atol=1e-5)
    assert not torch.allclose(shifted[1, :, :, 5:], deformable[1, :, :, 5:], atol=1e-2)

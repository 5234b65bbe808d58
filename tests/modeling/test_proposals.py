"""Two-stage query selection: the fixed anchors of the encoder tokens and the top-k selection."""
import math

import pytest
import torch

from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from torch import nn  # noqa: E402

from sam_detr.layers import MLP  # noqa: E402
from sam_detr.modeling.box_coder import SigmoidBoxCoder, encoder_anchors  # noqa: E402
from sam_detr.modeling.transformer import TwoStageProposals, flatten_levels  # noqa: E402

CODER = SigmoidBoxCoder()


def two_levels():
    """Image 0 fills a 5x7 map; image 1 its top-left 3x4 (and 2x2 of the 3x4 coarse level)."""
    masks = [torch.ones(2, 5, 7, dtype=torch.bool), torch.ones(2, 3, 4, dtype=torch.bool)]
    masks[0][0] = False
    masks[0][1, :3, :4] = False
    masks[1][0] = False
    masks[1][1, :2, :2] = False
    srcs = [torch.randn(2, 16, *m.shape[1:]) for m in masks]
    return flatten_levels(srcs, masks, [torch.zeros_like(s) for s in srcs])


def test_anchors_are_token_centres_of_growing_size_in_unpadded_units():
    levels = two_levels()
    anchors, keep = encoder_anchors(levels.mask, levels.spatial_shapes)
    assert anchors.dtype == torch.float32 and anchors.shape == (2, 35 + 12, 4)
    boxes = anchors.sigmoid()
    fine, coarse = levels.split(boxes)
    # image 1, fine level: token (row 2, col 3) is the last valid one of its 3x4 region
    assert torch.allclose(fine[1].view(5, 7, 4)[2, 3], torch.tensor([3.5 / 4, 2.5 / 3, 0.05, 0.05]))
    assert torch.allclose(coarse[0].view(3, 4, 4)[0, 1], torch.tensor([1.5 / 4, 0.5 / 3, 0.1, 0.1]))
    # padding and boxes leaving (0.01, 0.99) are +inf logits, i.e. boxes of 1, and not kept
    assert torch.equal(keep[..., 0], ~levels.mask & ((boxes > 0.01) & (boxes < 0.99)).all(-1))
    assert torch.isinf(anchors[~keep[..., 0]]).all() and torch.isfinite(anchors[keep[..., 0]]).all()
    assert not keep[1].view(-1)[levels.mask[1]].any()


def make_proposals(d=16, k=5):
    torch.manual_seed(0)
    return TwoStageProposals(d), nn.Linear(d, k), MLP(d, d, 4, 3)


def test_selects_the_best_class_0_tokens_with_detached_boxes():
    levels = two_levels()
    proposals, class_head, box_head = make_proposals()
    memory = levels.src.clone().requires_grad_()
    out = proposals(levels._replace(src=memory), class_head, box_head, 6, CODER)
    assert out.logits.shape == (2, 47, 5) and out.boxes.shape == (2, 47, 4) and out.reference.shape == (2, 6, 4)
    assert out.query_pos.shape == out.tgt.shape == (2, 6, 16)
    best = out.logits[..., 0].topk(6, dim=1).indices
    # the sigmoid of the gathered boxes, not the gathered sigmoids: the vectorised sigmoid may round the last bit
    # differently at another position in memory
    torch.testing.assert_close(out.reference, torch.gather(out.boxes, 1, best[..., None].expand(-1, -1, 4)).detach())
    assert not out.reference.requires_grad and out.boxes.requires_grad
    # the memory of a token that is not kept does not reach the proposals: it was zeroed
    anchors, keep = encoder_anchors(levels.mask, levels.spatial_shapes)
    assert torch.equal(out.anchors, anchors.sigmoid())
    grad = torch.autograd.grad(out.logits.sum(), memory)[0]
    assert (grad[~keep[..., 0]] == 0).all() and grad[keep[..., 0]].abs().sum() > 0
    assert (out.boxes[levels.mask] == 1).all()


def test_batch_invariant_never_selects_a_padded_token():
    levels = two_levels()
    proposals, class_head, box_head = make_proposals()
    with torch.no_grad():  # a padded token's (zeroed) memory gives the best class-0 score there is
        class_head.weight[0] = proposals.enc_output_norm(proposals.enc_output.bias)
    args = (levels, class_head, box_head, 12, CODER)
    official = proposals(*args)
    assert (official.reference[1] == 1).all()  # image 1's 31 padded tokens (boxes of 1) won
    ours = proposals(*args, batch_invariant=True)
    assert (ours.reference[1] < 1).all()


def test_mixed_selection_takes_the_content_from_the_learned_queries():
    levels = two_levels()
    proposals, class_head, box_head = make_proposals()
    content = torch.randn(6, 16)
    args = (levels, class_head, box_head, 6, CODER)
    plain, mixed = proposals(*args), proposals(*args, content=content)
    assert torch.equal(mixed.tgt, content[None].expand(2, -1, -1)) and torch.equal(mixed.query_pos, plain.query_pos)
    with pytest.raises(ValueError, match=r"content queries must be \(6, 16\), got \(5, 16\)"):
        proposals(*args, content=content[:5])
    with pytest.raises(ValueError, match="cannot select 48 queries from 47 encoder tokens"):
        proposals(levels, class_head, box_head, 48, CODER)


def test_position_queries_embed_the_selected_boxes():
    levels = two_levels()
    proposals, class_head, box_head = make_proposals()
    out = proposals(levels, class_head, box_head, 6, CODER)
    # the first of the 4 x 8 features of x: sin(2 pi x)
    dim_t = 10000 ** (2 * (torch.arange(8) // 2) / 8)
    x = out.reference[..., 0:1] * 2 * math.pi / dim_t
    embed = torch.stack([x[..., 0::2].sin(), x[..., 1::2].cos()], -1).flatten(-2)
    pos = proposals.pos_trans_norm(proposals.pos_trans(torch.cat([embed, torch.zeros(2, 6, 24)], -1)))
    with torch.no_grad():
        proposals.pos_trans.weight[:, 8:] = 0
    zeroed = proposals(levels, class_head, box_head, 6, CODER)
    assert torch.allclose(torch.cat([zeroed.query_pos, zeroed.tgt], -1), pos.detach(), atol=1e-6)


def test_dino_selects_by_the_best_class_without_position_queries():
    """DINO's selection: the tokens of highest logit over all classes, best first; no pos_trans, so the content
    queries must be given; the selected tokens' predictions are kept for their loss, not detached."""
    levels = two_levels()
    torch.manual_seed(0)
    proposals = TwoStageProposals(16, position_queries=False, select_by="best_class")
    assert proposals.pos_trans is None and not any("pos_trans" in n for n, _ in proposals.named_parameters())
    class_head, box_head = nn.Linear(16, 5), MLP(16, 16, 4, 3)
    content = torch.randn(6, 16)
    out = proposals(levels, class_head, box_head, 6, CODER, content=content)
    assert out.query_pos is None and torch.equal(out.tgt, content[None].expand(2, -1, -1))
    best = out.logits.max(-1).values
    # image 1's padded tokens tie (zeroed memory): in token order
    assert torch.equal(out.index, best.sort(dim=1, descending=True, stable=True).indices[:, :6])
    assert not torch.equal(out.index, out.logits[..., 0].topk(6, dim=1).indices)  # not by objectness
    selected = out.selected()
    assert torch.equal(selected["pred_logits"].max(-1).values, best.topk(6, dim=1).values)
    torch.testing.assert_close(selected["pred_boxes"], out.reference)
    assert selected["pred_boxes"].requires_grad and not out.reference.requires_grad
    with pytest.raises(ValueError, match="give `content`"):
        proposals(levels, class_head, box_head, 6, CODER)
    with pytest.raises(ValueError, match="select_by must be 'objectness' or 'best_class'"):
        TwoStageProposals(16, select_by="max")


def test_selection_orders_exact_ties_by_position():
    """Tokens of one memory but different anchors (Plain-DETR's padding that its masks call valid) tie exactly:
    they are selected in token order, as ONNX TopK orders them, so that an exported graph pairs the same
    boxes with the same query slots."""
    levels = two_levels()
    levels = levels._replace(src=levels.src.clone())
    levels.src[:, :30] = levels.src[0, 0]  # the first 30 tokens of both images: one memory
    proposals, class_head, box_head = make_proposals()
    with torch.no_grad():  # that memory scores best
        class_head.weight[0] = proposals.enc_output_norm(proposals.enc_output(levels.src[0, 0]))
        out = proposals(levels, class_head, box_head, 10, CODER)
    scores = out.logits[..., 0]
    for b in range(2):  # image 1's tied tokens: the 12 of its 3x4 window (the memory is zeroed outside it)
        tied = (scores[b] == scores[b, 0]).nonzero().flatten()
        assert len(tied) >= 10 and torch.equal(out.index[b], tied[:10])
        assert len(torch.unique(out.reference[b], dim=0)) == 10  # ten different boxes


def test_batch_invariant_selection_orders_exact_ties_by_position():
    """Tokens outside the window share one memory (zeroed), hence one score: batch-invariant selection takes
    them in token order, whatever else the batch holds."""
    levels = two_levels()
    proposals, class_head, box_head = make_proposals()
    with torch.no_grad():
        class_head.weight.zero_()  # every token the same score
        out = proposals(levels, class_head, box_head, 6, CODER, batch_invariant=True)
    valid = [torch.nonzero(~levels.mask[b]).flatten()[:6] for b in range(2)]
    assert torch.equal(out.index, torch.stack(valid))

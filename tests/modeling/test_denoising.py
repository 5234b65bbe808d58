"""Contrastive denoising queries: the group rule, the noise, the layout, the attention mask, the matching."""
import pytest
import torch

from sam_detr.layers import box_cxcywh_to_xyxy
from sam_detr.modeling import HungarianMatcher, LossGroup, SetCriterion
from sam_detr.modeling.box_coder import SigmoidBoxCoder
from sam_detr.modeling.pixel_box_coder import PixelDeltaBoxCoder
from sam_detr.modeling.query_groups import QueryGroup, QueryGroups
from sam_detr.modeling.transformer.box_refinement import BoxRefinement
from sam_detr.modeling.denoising import (
    ContrastiveDenoising, DenoisingMatcher, DenoisingQueries, check_denoising, noise_boxes, noise_labels,
    num_denoising_groups,
)


def make_targets(counts, seed=0, num_classes=7):
    g = torch.Generator().manual_seed(seed)
    return [
        {"labels": torch.randint(0, num_classes, (n,), generator=g), "boxes": torch.rand(n, 4, generator=g) * 0.2 + 0.3}
        for n in counts
    ]


@pytest.mark.parametrize(
    "dn_number, max_targets, groups",
    [(100, 3, 33), (100, 1, 100), (100, 7, 14), (100, 150, 1), (100, 0, 1), (50, 4, 12), (10, 3, 20), (3, 9, 6)],
)
def test_groups_follow_the_official_rule(dn_number, max_targets, groups):
    # 100 positives split into groups of the most targets; below 50 the official code reads 2 * dn_number groups
    assert num_denoising_groups(dn_number, max_targets) == groups


def test_layout_of_an_uneven_batch():
    dn = ContrastiveDenoising(num_classes=7, d_model=5, dn_number=60, label_noise_ratio=0.0, box_noise_scale=0.0)
    targets = make_targets([3, 1, 0])
    q = dn(targets, torch.Generator().manual_seed(1))
    G, m = 20, 3  # 60 // 3 groups of 3 positive and 3 negative slots
    assert (q.num_groups, q.group_size, q.num_queries) == (G, 2 * m, 2 * G * m)
    assert q.content.shape == (3, 2 * G * m, 5) and q.boxes.shape == (3, 2 * G * m, 4)
    filled = q.content.abs().sum(-1) > 0
    slots = torch.arange(2 * G * m) % m  # the slot of a query within its block of m
    for b, n in enumerate([3, 1, 0]):
        assert torch.equal(filled[b], slots < n)  # padding slots: zero content ...
        assert torch.equal(q.boxes[b][~filled[b]], torch.zeros((~filled[b]).sum(), 4))  # ... and box logit 0
    # without noise every copy (positive and negative) is its target
    for t, content, boxes in zip(targets, q.content, q.boxes):
        for block in range(2 * G):
            rows = slice(block * m, block * m + len(t["labels"]))
            assert torch.equal(content[rows], dn.label_enc(t["labels"]))
            assert torch.allclose(boxes[rows].sigmoid(), t["boxes"], atol=1e-6)


def test_positives_stay_within_half_a_side_negatives_move_one_to_two():
    g = torch.Generator().manual_seed(3)
    boxes = torch.rand(500, 4, generator=g) * 0.1 + torch.tensor([0.45, 0.45, 0.1, 0.1])  # far from the borders
    negative = torch.arange(500) % 2 == 1
    noised = noise_boxes(boxes, negative, scale=1.0, generator=g)
    half = torch.cat([boxes[:, 2:], boxes[:, 2:]], 1) / 2
    shift = (box_cxcywh_to_xyxy(noised) - box_cxcywh_to_xyxy(boxes)).abs() / half
    assert (shift[~negative] < 1 + 1e-5).all() and (shift[negative] > 1 - 1e-5).all()
    assert (shift[negative] < 2 + 1e-5).all()
    assert shift[~negative].mean() == pytest.approx(0.5, abs=0.05) and shift[negative].mean() == pytest.approx(1.5, abs=0.05)
    # no noise at scale 0
    assert torch.equal(noise_boxes(boxes, negative, scale=0.0, generator=g), boxes)


def test_noised_boxes_stay_in_the_image():
    g = torch.Generator().manual_seed(4)
    boxes = torch.tensor([[0.05, 0.95, 0.1, 0.1], [0.5, 0.5, 1.0, 1.0]]).repeat(50, 1)
    corners = box_cxcywh_to_xyxy(noise_boxes(boxes, torch.ones(100, dtype=torch.bool), 1.0, g))
    assert corners.min() >= 0 and corners.max() <= 1


def test_labels_flip_at_half_the_ratio():
    g = torch.Generator().manual_seed(5)
    labels = torch.zeros(20000, dtype=torch.int64)
    flipped = noise_labels(labels, ratio=0.5, num_classes=4, generator=g)
    # a quarter are redrawn, uniformly over 4 classes: 3/16 change
    assert (flipped != 0).float().mean().item() == pytest.approx(3 / 16, abs=0.01)
    assert flipped.max() == 3 and torch.equal(labels, torch.zeros_like(labels))
    assert torch.equal(noise_labels(labels, 0.0, 4, g), labels)


def test_same_generator_same_queries():
    dn = ContrastiveDenoising(num_classes=7, d_model=4, dn_number=10)
    targets = make_targets([2, 4])
    first = dn(targets, torch.Generator().manual_seed(9))
    again = dn(targets, torch.Generator().manual_seed(9))
    other = dn(targets, torch.Generator().manual_seed(10))
    assert torch.equal(first.boxes, again.boxes) and torch.equal(first.content, again.content)
    assert not torch.equal(first.boxes, other.boxes)


def test_attention_mask_hides_the_answers_from_the_matching_queries():
    q = DenoisingQueries(torch.zeros(2, 6, 4), torch.zeros(2, 6, 4), num_groups=3, group_size=2)
    groups = q.query_groups(QueryGroups.single(4))
    mask = groups.attention_mask()
    assert mask.shape == (10, 10)
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    dn_dn = mask[:6, :6]
    assert torch.equal(dn_dn, group[:, None] != group[None, :])  # each group sees itself only
    assert not mask[:6, 6:].any()  # denoising queries see the matching ones
    assert mask[6:, :6].all() and not mask[6:, 6:].any()  # matching queries see each other only
    # the matching queries' predictions are the top-level outputs, the denoising ones under their key
    predictions = {"pred_logits": torch.arange(2 * 10.0).view(2, 1, 10, 1).expand(2, 3, 10, 1)}
    outputs = groups.outputs(predictions)
    assert outputs["pred_logits"].shape == (3, 4, 1) and outputs["dn_outputs"]["pred_logits"].shape == (3, 6, 1)
    assert torch.equal(outputs["pred_logits"][0, :, 0], torch.arange(16.0, 20.0))


def test_indices_reach_the_copies_of_their_targets():
    dn = ContrastiveDenoising(num_classes=7, d_model=6, dn_number=9, label_noise_ratio=0.0, box_noise_scale=0.5)
    targets = make_targets([2, 3, 0], seed=2)
    q = dn(targets, torch.Generator().manual_seed(0))
    matcher = DenoisingMatcher()
    outputs = {"pred_logits": torch.zeros(3, q.num_queries, 7)}
    indices = matcher(outputs, targets)
    assert matcher.matches_per_target(outputs, targets) == q.num_groups
    for t, content, (src, tgt) in zip(targets, q.content, indices):
        assert len(src) == q.num_groups * len(t["labels"])
        assert torch.equal(content[src], dn.label_enc(t["labels"][tgt]))
        assert ((src % q.group_size) < q.group_size // 2).all()  # positives only
    # the positives' boxes are within half a side of their targets, the negatives beyond
    for t, boxes, (src, tgt) in zip(targets, q.boxes, indices):
        moved = (box_cxcywh_to_xyxy(boxes[src].sigmoid()) - box_cxcywh_to_xyxy(t["boxes"][tgt])).abs()
        assert (moved <= t["boxes"][tgt, 2:].repeat(1, 2) / 2 * 0.5 + 1e-5).all()


def test_a_batch_without_targets_has_no_queries():
    dn = ContrastiveDenoising(num_classes=7, d_model=4)
    q = dn(make_targets([0, 0]))
    assert q.num_queries == 0 and q.content.shape == (2, 0, 4)
    groups = q.query_groups(QueryGroups.single(3))
    assert groups.attention_mask() is None and groups.num_queries == 3
    with pytest.raises(ValueError, match="0 denoising queries per image are not groups of 2 x 0"):
        DenoisingMatcher()({"pred_logits": q.content}, make_targets([0, 0]))


def test_label_embedding_stays_in_the_graph():
    dn = ContrastiveDenoising(num_classes=3, d_model=4)
    x = torch.randn(2, 4, requires_grad=True)
    y = dn.keep_in_graph(x)
    assert torch.equal(y, x)
    y.sum().backward()
    assert dn.label_enc.weight.grad is not None and not dn.label_enc.weight.grad.any()
    assert dn.label_enc.weight.shape == (4, 4)  # num_classes + 1 rows, as the official label_enc


def test_prepended_queries_see_the_matching_queries_and_no_other_group():
    """Before a method's own groups (here matching queries and hybrid ones that see nothing else): the denoising
    groups see the matching queries only; neither the matching nor the hybrid queries see them."""
    dn = ContrastiveDenoising(num_classes=7, d_model=4, dn_number=4)
    q = dn(make_targets([1, 2], seed=3))  # m = 2: groups of 4
    groups = QueryGroups([QueryGroup(3), QueryGroup(5, "hybrid_outputs")])
    tgt, pos, ref = torch.randn(2, 8, 4), torch.randn(2, 8, 4), torch.rand(2, 8, 4)
    tgt2, pos2, ref2, groups2 = q.prepend(tgt, pos, ref, groups, BoxRefinement(), SigmoidBoxCoder())
    P = q.num_queries
    assert P == q.num_groups * 4 and groups2.num_queries == P + 8
    assert torch.equal(tgt2[:, P:], tgt) and torch.equal(pos2[:, P:], pos) and torch.equal(ref2[:, P:], ref)
    assert torch.equal(tgt2[:, :P], q.content) and not pos2[:, :P].any()
    torch.testing.assert_close(ref2[:, :P], q.boxes.sigmoid())
    mask = groups2.attention_mask()
    assert not mask[:P, P : P + 3].any() and mask[:P, P + 3 :].all()  # sees the matching queries only
    assert mask[P:, :P].all()  # seen by no other group
    outputs = groups2.outputs({"pred_logits": torch.randn(1, 2, P + 8, 7)})
    assert outputs["dn_outputs"]["pred_logits"].shape == (2, P, 7)
    assert outputs["hybrid_outputs"]["pred_logits"].shape == (2, 5, 7) and outputs["pred_logits"].shape == (2, 3, 7)


def test_prepended_references_take_the_methods_form():
    """Point references get the noised boxes' centres; the running-logit form gets the logits themselves;
    a batch without targets leaves the inputs as they are."""
    dn = ContrastiveDenoising(num_classes=7, d_model=4, dn_number=3)
    q = dn(make_targets([2, 1], seed=4))
    tgt = torch.zeros(1, 3, 4).expand(2, -1, -1)  # learned queries broadcast over the batch
    one, coder = QueryGroups.single(3), SigmoidBoxCoder()
    _, pos, points, _ = q.prepend(tgt, None, torch.rand(2, 3, 2), one, BoxRefinement(), coder)
    assert pos is None and points.shape == (2, q.num_queries + 3, 2)
    torch.testing.assert_close(points[:, : q.num_queries], q.boxes[..., :2].sigmoid())
    _, _, logits, _ = q.prepend(tgt, None, torch.randn(2, 3, 4), one, BoxRefinement("logit"), coder)
    assert torch.equal(logits[:, : q.num_queries], q.boxes)
    empty = dn(make_targets([0, 0]))
    ref = torch.rand(2, 3, 4)
    out = empty.prepend(tgt, None, ref, QueryGroups.single(3), BoxRefinement(), SigmoidBoxCoder())
    assert out[0] is tgt and out[2] is ref and out[3].num_queries == 3


def test_a_model_refuses_denoising_it_cannot_supervise():
    """Denoising needs normalised boxes, the criterion's classes and a loss group matched by construction."""
    dn = ContrastiveDenoising(num_classes=7, d_model=4)
    matcher = HungarianMatcher(class_cost_type="focal")
    weights = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    dn_group = LossGroup(key="dn_outputs", suffix="_dn", matcher=DenoisingMatcher())
    with_dn = SetCriterion(7, matcher, weights, groups=[LossGroup(), dn_group])
    check_denoising(dn, with_dn, SigmoidBoxCoder())
    with pytest.raises(ValueError, match="no loss group for 'dn_outputs'"):
        check_denoising(dn, SetCriterion(7, matcher, weights), SigmoidBoxCoder())
    with pytest.raises(ValueError, match="denoising has 7 classes, the criterion 5"):
        check_denoising(dn, SetCriterion(5, matcher, weights, groups=[LossGroup(), dn_group]), SigmoidBoxCoder())
    with pytest.raises(ValueError, match="codes boxes in pixels"):
        check_denoising(dn, with_dn, PixelDeltaBoxCoder())

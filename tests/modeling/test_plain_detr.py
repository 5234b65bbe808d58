"""Plain-DETR's novelty: BoxRPB against a per-pixel computation, the padding masks, the one-to-one /
hybrid attention mask, the reparameterised boxes and their L1 on deltas, the proposal maps; and the
published rows train a step and infer (the quickstart: tests/modeling/test_contract.py)."""
import math

import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from model_inputs import model_and_optimizer  # noqa: E402

from sam_detr.layers import box_to_delta, delta_to_box  # noqa: E402
from sam_detr.modeling import (  # noqa: E402
    HungarianMatcher, LossGroup, PixelDeltaBoxCoder, SetCriterion, SigmoidBoxCoder,
)
from sam_detr.modeling.transformer import (  # noqa: E402
    BoxRefinement, GlobalCrossAttention, GlobalDecoder, GlobalDecoderLayer, flatten_levels,
)
from sam_detr.modeling.transformer import box_rpb  # noqa: E402
from sam_detr.modeling.transformer.box_rpb import box_rpb_deltas  # noqa: E402
from sam_detr.modeling.query_groups import QueryGroup, QueryGroups  # noqa: E402
from sam_detr.modeling.transformer.plain_detr_proposals import (  # noqa: E402
    image_extent, pixel_anchors, proposal_projections,
)

CONFIGS = REPO_ROOT / "configs"
ROWS = sorted(p.name for p in CONFIGS.glob("plain_detr_*.py"))


def direct_box_rpb(attn: GlobalCrossAttention, boxes, H, W):
    """(B, heads, Q, H * W): the bias of every (query, pixel) pair, pixel by pixel."""
    B, Q, _ = boxes.shape
    s = attn.feature_stride
    out = torch.zeros(B, attn.num_heads, Q, H * W)

    def encode(d):
        if attn.rpe_type == "abs_log8":
            return torch.sign(d) * torch.log2(d.abs() + 1) / 3
        return d

    for b in range(B):
        for q in range(Q):
            x1, y1, x2, y2 = boxes[b, q]
            for i in range(H):
                for j in range(W):
                    px, py = (j + 0.5) * s, (i + 0.5) * s
                    bx = attn.cpb_mlp1(encode(torch.stack([x1 - px, x2 - px])))
                    by = attn.cpb_mlp2(encode(torch.stack([y1 - py, y2 - py])))
                    out[b, :, q, i * W + j] = bx + by
    return out


@pytest.mark.parametrize("rpe_type", ["linear", "abs_log8"])
def test_box_rpb_is_the_per_pixel_bias(rpe_type):
    torch.manual_seed(0)
    attn = GlobalCrossAttention(16, 2, rpe_type, rpe_hidden_dim=8, feature_stride=4)
    H, W = 3, 5
    xy = torch.rand(2, 4, 2) * torch.tensor([W * 4.0, H * 4.0])
    boxes = torch.cat([xy, xy + torch.rand(2, 4, 2) * 10], -1)
    with torch.no_grad():
        assert torch.allclose(attn.box_rpb(boxes, H, W), direct_box_rpb(attn, boxes, H, W), atol=1e-5)
        # and it is what the attention adds to the logits
        query, memory = torch.randn(2, 4, 16), torch.randn(2, H * W, 16)
        q = attn.q(query).view(2, 4, 2, 8).transpose(1, 2) * attn.scale
        k = attn.k(memory).view(2, H * W, 2, 8).transpose(1, 2)
        weights = (q @ k.transpose(-2, -1) + direct_box_rpb(attn, boxes, H, W)).softmax(-1)
        v = attn.v(memory).view(2, H * W, 2, 8).transpose(1, 2)
        expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 4, 16))
        assert torch.allclose(attn(query, boxes, memory, memory, (H, W)), expected, atol=1e-5)


@pytest.mark.parametrize("rpe_type", ["linear", "abs_log8"])
def test_box_rpb_chunks_give_the_whole_mlp_and_its_gradients(rpe_type, monkeypatch):
    """`AxisBias` (a few queries at a time, recomputed in the backward) against the MLP run on the whole
    (B, Q, n, 2) offset tensor, in float64: the values and the gradients of the sides and of every weight."""
    monkeypatch.setattr(box_rpb, "AXIS_BIAS_CHUNK_ELEMENTS", 3 * 7 * 8)  # chunks of 3 queries, one of 1
    torch.manual_seed(0)
    attn = GlobalCrossAttention(16, 2, rpe_type, rpe_hidden_dim=8, feature_stride=4).double()
    sides = (torch.rand(2, 5, 2, dtype=torch.float64) * 40 - 5).requires_grad_()
    whole = attn.cpb_mlp1(box_rpb_deltas(sides, 7, 4, rpe_type)).permute(0, 3, 1, 2)
    chunked = attn.axis_bias(attn.cpb_mlp1, sides, 7)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)
    weights = torch.randn_like(whole)
    inputs = [sides, *attn.cpb_mlp1.parameters()]
    for a, b in zip(torch.autograd.grad((whole * weights).sum(), inputs),
                    torch.autograd.grad((chunked * weights).sum(), inputs)):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_padding_is_masked_additively_as_officially_or_exactly():
    torch.manual_seed(0)
    attn = GlobalCrossAttention(16, 2, None)
    query, memory = torch.randn(1, 3, 16), torch.randn(1, 6, 16)
    mask = torch.tensor([[False, False, False, False, True, True]])
    changed = memory.clone()
    changed[:, 4:] = 1000 * torch.randn(1, 2, 16)
    with torch.no_grad():
        exact = [attn(query, None, m, m, (2, 3), mask, batch_invariant=True) for m in (memory, changed)]
        official = [attn(query, None, m, m, (2, 3), mask) for m in (memory, changed)]
        alone = attn(query, None, memory[:, :4], memory[:, :4], (1, 4))
    assert torch.allclose(exact[0], exact[1], atol=1e-6) and torch.allclose(exact[0], alone, atol=1e-6)
    # -100 leaves padded keys a relative weight of e^(logit - 100): padded values with logits near 100 take over
    assert not torch.allclose(official[0], official[1], atol=1e-6)


def test_one_to_one_queries_do_not_see_the_hybrid_ones():
    mask = QueryGroups([QueryGroup(2), QueryGroup(3, "hybrid_outputs")]).attention_mask()
    torch.manual_seed(0)
    decoder = GlobalDecoder(GlobalDecoderLayer(16, 2, 32, 0.0, rpe_hidden_dim=8, feature_stride=4), 2)
    heads = [torch.nn.Linear(16, 4) for _ in range(2)]
    tgt, pos = torch.randn(1, 5, 16), torch.randn(1, 5, 16)
    ref = torch.rand(1, 5, 4) * 0.5 + 0.25
    memory = flatten_levels([torch.randn(1, 16, 3, 4)], [torch.zeros(1, 3, 4, dtype=torch.bool)],
                            [torch.randn(1, 16, 3, 4)])
    refinement, coder = BoxRefinement(), SigmoidBoxCoder()

    def run(tgt, pos, ref, mask=None):
        return decoder(tgt, pos, refinement.start(ref, coder), memory, heads, refinement, mask)

    with torch.no_grad():
        out = run(tgt, pos, ref, mask)
        other = tgt.clone()
        other[:, 2:] = torch.randn(1, 3, 16)
        out_other = run(other, pos, ref, mask)
        alone = run(tgt[:, :2], pos[:, :2], ref[:, :2])
    assert torch.allclose(out.boxes[:, :, :2], out_other.boxes[:, :, :2], atol=1e-6)
    assert torch.allclose(out.boxes[:, :, :2], alone.boxes, atol=1e-6)
    assert not torch.allclose(out.boxes[:, :, 2:], out_other.boxes[:, :, 2:], atol=1e-6)


def test_reparameterised_deltas():
    ref = torch.tensor([[40.0, 30.0, 20.0, 10.0]])
    gt = torch.tensor([[45.0, 28.0, 30.0, 12.0]])
    delta = box_to_delta(ref, gt)
    assert torch.allclose(delta, torch.tensor([[5 / 20.1, -2 / 10.1, math.log(30 / 20.1), math.log(12 / 10.1)]]))
    # the decoding has no + 0.1: it inverts the encoding from the reference widened by 0.1
    assert torch.allclose(delta_to_box(ref + torch.tensor([0, 0, 0.1, 0.1]), delta), gt, atol=1e-5)
    # scale changes clamped to 1000 / 16, corners clipped to the image (W, H)
    big = delta_to_box(ref, torch.tensor([[0.0, 0.0, 10.0, -10.0]]), torch.tensor([[60.0, 100.0]]))
    assert torch.allclose(big, torch.tensor([[30.0, 30.0, 60.0, 10 * 16 / 1000]]), atol=1e-5)


def test_l1_loss_and_cost_on_deltas():
    torch.manual_seed(0)
    coder = PixelDeltaBoxCoder()
    matcher = HungarianMatcher(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0, box_coder=coder)
    criterion = SetCriterion(
        1, matcher, {"loss_ce": 0.0, "loss_bbox": 1.0, "loss_giou": 0.0}, groups=[LossGroup()], box_coder=coder
    )
    old = torch.tensor([[[40.0, 30.0, 20.0, 10.0], [10.0, 10.0, 4.0, 4.0]]])
    gt = torch.tensor([[12.0, 11.0, 5.0, 4.0]])
    target_delta = box_to_delta(old[0, 1], gt[0])
    deltas = torch.stack([torch.zeros(4), target_delta + 0.25])[None]
    # query 0's box equals the target, but the cost is on the deltas: query 1 is the match
    outputs = {"pred_logits": torch.zeros(1, 2, 1), "pred_boxes": torch.cat([gt, old[0, 1:]])[None],
               "pred_deltas": deltas, "pred_boxes_old": old}
    targets = [{"labels": torch.tensor([0]), "boxes": gt}]
    assert [i.tolist() for i in matcher(outputs, targets)[0]] == [[1], [0]]
    assert torch.allclose(criterion(outputs, targets)["loss_bbox"], torch.tensor(1.0))
    with pytest.raises(ValueError, match="the criterion codes boxes with PixelDeltaBoxCoder.*its matcher has Sigmoid"):
        SetCriterion(1, HungarianMatcher(), {"loss_ce": 0.0, "loss_bbox": 1.0, "loss_giou": 0.0}, box_coder=coder)


def test_look_forward_twice_refines_reparameterised_boxes_in_pixels():
    """With the pixel coder (reparameterised boxes), the next layer's head reference is decoded from the
    detached reference as the layer's boxes are: in pixels, not through the sigmoid of the normalised form."""
    refinement = BoxRefinement(look_forward_twice=True)
    reference = torch.tensor([[[40.0, 30.0, 20.0, 10.0]]], requires_grad=True)
    delta = torch.tensor([[[0.5, -0.5, 0.2, 0.1]]], requires_grad=True)
    boxes, nxt = refinement.step(refinement.start(reference, PixelDeltaBoxCoder()), delta)
    assert torch.allclose(boxes, delta_to_box(reference, delta))
    assert torch.allclose(nxt.head, boxes) and nxt.head.requires_grad and not nxt.boxes.requires_grad
    assert nxt.head.grad_fn is not None and torch.equal(nxt.boxes, boxes.detach())


def test_proposal_maps_and_pixel_anchors():
    proj = proposal_projections(8, 16, (8, 16, 32, 64))
    sizes = [tuple(p(torch.zeros(1, 8, 7, 9)).shape[-2:]) for p in proj]
    assert sizes == [(14, 18), (7, 9), (3, 4), (1, 2)]  # no padding: coarser sizes are floored
    shapes = torch.tensor([[8, 10], [4, 5]])
    mask = torch.zeros(1, 8 * 10 + 4 * 5, dtype=torch.bool)
    mask[0, :80].view(8, 10)[:, 8:] = True  # the finest map's last two columns are padding: 64 x 64 px valid
    mask[0, 80:].view(4, 5)[:, 4:] = True
    anchors, keep = pixel_anchors(mask, shapes, (8, 16))
    assert image_extent(mask, shapes, (8, 16)).tolist() == [[[64.0, 64.0]]]
    assert anchors[0, 3 * 10 + 3].tolist() == [28.0, 28.0, 50.0, 50.0] and keep[0, 3 * 10 + 3]
    # padding, and a 100-pixel box in a 64-pixel image: filled with max(8, 10) * 8
    assert anchors[0, 9].tolist() == [80.0] * 4 and not keep[0, 9]
    assert anchors[0, 80].tolist() == [80.0] * 4 and not keep[0, 80]



def larger_images():
    """Two odd-sized images large enough for a stride-64 proposal map, the second without objects."""
    a = {"image": torch.randint(0, 256, (3, 161, 229), dtype=torch.uint8)}
    boxes = torch.tensor([[3.0, 4.0, 40.0, 50.0], [50.0, 10.0, 190.0, 130.0]])
    a["instances"] = Instances((161, 229), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([1, 4]))
    b = {"image": torch.randint(0, 256, (3, 131, 197), dtype=torch.uint8)}
    b["instances"] = Instances(
        (131, 197), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)
    )
    return [a, b]


@pytest.mark.slow
@pytest.mark.parametrize("config", ROWS)
def test_every_row_trains_a_step_and_infers(config):
    cfg = LazyConfig.load(str(CONFIGS / config))
    assert cfg.dataloader.train.total_batch_size == 16 and cfg.train.epochs == 12
    assert cfg.optimizer.lr == 2e-4 and cfg.optimizer.weight_decay == 0.05
    # smaller for speed: fewer queries and decoder layers (the backbone is the published one)
    cfg.model.num_queries, cfg.model.num_hybrid_queries = 20, 40
    cfg.model.decoder.num_layers = 2
    model, optimizer = model_and_optimizer(cfg)
    model.train()
    with EventStorage():
        losses = model(larger_images())
    assert {"loss_bbox_hybrid", "loss_giou_enc", "loss_ce_0_hybrid"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(larger_images())
    for o, (h, w) in zip(out, [(161, 229), (131, 197)]):
        # d2's detector_postprocess drops empty boxes (reparameterised boxes clipped to the border can be)
        boxes = o["instances"].pred_boxes.tensor
        assert 0 < len(boxes) <= 100 and (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()

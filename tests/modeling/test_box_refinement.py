"""The one box-refinement routine of every method: its two forms, detaching and look-forward-twice."""
import pytest
import torch

from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from sam_detr.layers import inverse_sigmoid  # noqa: E402
from sam_detr.modeling.box_coder import SigmoidBoxCoder  # noqa: E402
from sam_detr.modeling.transformer import BoxRefinement  # noqa: E402

CODER = SigmoidBoxCoder()


def deltas(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 5, 4, generator=g, requires_grad=True) for _ in range(n)]


def test_inverse_sigmoid_form_predicts_and_detaches():
    refinement = BoxRefinement()
    reference = torch.rand(2, 5, 4, requires_grad=True)
    ref = refinement.start(reference, CODER)
    boxes = []
    for delta in deltas():
        layer_boxes, nxt = refinement.step(ref, delta)
        assert torch.allclose(layer_boxes, (delta + inverse_sigmoid(ref.boxes)).sigmoid())
        assert torch.equal(nxt.boxes, layer_boxes) and not nxt.boxes.requires_grad and nxt.head is nxt.boxes
        boxes.append(layer_boxes)
        ref = nxt
    d = deltas()
    # layer 2's boxes depend on its own delta only (the references are detached), layer 0's on the reference
    grads = torch.autograd.grad(boxes[2].sum(), [reference] + d, allow_unused=True)
    assert grads[0] is None and grads[1] is None and grads[3] is None
    assert torch.autograd.grad(boxes[0].sum(), reference)[0].abs().sum() > 0


def test_points_move_the_centre_and_become_boxes():
    refinement = BoxRefinement()
    points = torch.rand(2, 5, 2)
    delta = torch.randn(2, 5, 4)
    boxes, nxt = refinement.step(refinement.start(points, CODER), delta)
    assert torch.allclose(boxes[..., :2], (delta[..., :2] + inverse_sigmoid(points)).sigmoid())
    assert torch.allclose(boxes[..., 2:], delta[..., 2:].sigmoid())
    assert nxt.boxes.shape == (2, 5, 4)


def test_without_iteration_every_layer_refines_the_first_reference_with_its_gradient():
    refinement = BoxRefinement(iterative=False)
    reference = torch.rand(2, 5, 2, requires_grad=True)
    ref = refinement.start(reference, CODER)
    for delta in deltas():
        boxes, ref = refinement.step(ref, delta)
        assert ref.boxes is reference
    assert torch.autograd.grad(boxes.sum(), reference)[0].abs().sum() > 0


def test_look_forward_twice_trains_the_previous_layer_through_the_next_head():
    d = deltas(3)
    for lft in (False, True):
        refinement = BoxRefinement(look_forward_twice=lft)
        ref = refinement.start(torch.rand(2, 5, 4), CODER)
        _, ref = refinement.step(ref, d[0])
        _, ref = refinement.step(ref, d[1])
        boxes2, _ = refinement.step(ref, d[2])
        assert not ref.boxes.requires_grad  # the layer attends with the detached reference either way
        grad = torch.autograd.grad(boxes2.sum(), [d[1], d[0]], allow_unused=True)
        assert (grad[0] is not None and grad[0].abs().sum() > 0) == lft
        assert grad[1] is None  # one layer back only, as the official code (DINO, MS-DETR)


def test_logit_form_carries_the_running_logit_without_the_clamp():
    logits = torch.tensor([[[0.0, 0.0, 14.0, -1.0]]], dtype=torch.float64, requires_grad=True)
    delta = torch.tensor([[[0.5, -0.5, 1.0, 0.0]]], dtype=torch.float64)
    logit_form, sigmoid_form = BoxRefinement("logit"), BoxRefinement()
    boxes, ref = logit_form.step(logit_form.start(logits, CODER), delta)
    assert torch.allclose(boxes, (inverse_sigmoid(logits.sigmoid()) + delta).sigmoid())
    assert torch.equal(ref.logits, (logits + delta).detach()) and not ref.boxes.requires_grad
    # the next reference: the logit 15 survives in the logit form; inverse_sigmoid clamps 14 at ~11.5 first
    assert torch.equal(ref.boxes, ref.logits.sigmoid()) and ref.boxes[..., 2] == torch.tensor(15.0).double().sigmoid()
    _, sig_ref = sigmoid_form.step(sigmoid_form.start(logits.sigmoid(), CODER), delta)
    assert torch.allclose(sig_ref.boxes[..., [0, 1, 3]], ref.boxes[..., [0, 1, 3]])
    assert inverse_sigmoid(sig_ref.boxes[..., 2], eps=1e-12) < 12.6


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="form must be one of"):
        BoxRefinement("sigmoid")
    with pytest.raises(ValueError, match="look_forward_twice needs iterative"):
        BoxRefinement(iterative=False, look_forward_twice=True)
    with pytest.raises(ValueError, match="logit form refines"):
        BoxRefinement("logit").start(torch.zeros(1, 2, 2), CODER)
    with pytest.raises(ValueError, match="must end in 2"):
        BoxRefinement().start(torch.zeros(1, 2, 3), CODER)


def test_a_separate_delta_refines_the_next_reference():
    """DINO: the layer's boxes from the head on the normed output, the next reference from the head on the
    un-normed one."""
    refinement = BoxRefinement(look_forward_twice=True)
    ref = refinement.start(torch.rand(2, 5, 4), CODER)
    delta, next_delta = deltas(2)
    boxes, nxt = refinement.step(ref, delta, next_delta)
    assert torch.equal(boxes, CODER.decode(ref.head, delta))
    assert torch.equal(nxt.head, CODER.decode(ref.boxes, next_delta)) and torch.equal(nxt.boxes, nxt.head.detach())

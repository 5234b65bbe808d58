"""Box coding as one object: the sigmoid coder's decoding (points and boxes, its clamp), the pixel coder's
clipping per batch, its targets in pixels and the outputs its L1 reads, and the model refusing a criterion
that codes boxes otherwise."""
import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402

from sam_detr.layers import inverse_sigmoid  # noqa: E402
from sam_detr.modeling import PixelDeltaBoxCoder, SigmoidBoxCoder  # noqa: E402


def test_sigmoid_coder_refines_points_and_boxes_with_its_clamp():
    coder = SigmoidBoxCoder()
    delta = torch.tensor([[[0.5, -0.5, 1.0, -1.0]]])
    points, boxes = torch.tensor([[[0.2, 0.7]]]), torch.tensor([[[0.2, 0.7, 0.1, 1.0]]])
    assert torch.allclose(coder.decode(points, delta)[..., :2], (delta[..., :2] + inverse_sigmoid(points)).sigmoid())
    assert torch.allclose(coder.decode(points, delta)[..., 2:], delta[..., 2:].sigmoid())  # absolute sizes
    # a side of 1 is clamped to the logit of 1 - eps: DINO's 1e-3 keeps it lower than the default 1e-5
    assert coder.decode(boxes, delta)[..., 3] > SigmoidBoxCoder(eps=1e-3).decode(boxes, delta)[..., 3]
    assert SigmoidBoxCoder() == SigmoidBoxCoder() != SigmoidBoxCoder(eps=1e-3)
    gt = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert torch.allclose(coder.target_boxes(gt, (80, 40)), torch.tensor([[0.5, 0.5, 0.5, 0.5]]))


def test_pixel_coder_clips_to_each_batchs_images_and_keeps_pixel_targets():
    coder = PixelDeltaBoxCoder()
    assert coder.for_batch(torch.ones(1, 1, 2)) == coder  # equal as coders, whatever their batch
    reference = torch.tensor([[[40.0, 30.0, 20.0, 10.0]]])
    grow = torch.tensor([[[0.0, 0.0, 2.0, 2.0]]])
    clipped = coder.for_batch(torch.tensor([[[50.0, 35.0]]])).decode(reference, grow)
    corners = torch.cat([clipped[..., :2] - clipped[..., 2:] / 2, clipped[..., :2] + clipped[..., 2:] / 2], -1)
    assert corners.min() >= 0 and corners[..., 2] <= 50 and corners[..., 3] <= 35
    gt = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert torch.equal(coder.target_boxes(gt, (80, 40)), torch.tensor([[20.0, 40.0, 20.0, 40.0]]))
    extra = coder.regression_outputs(reference, grow)
    assert set(extra) == {"pred_deltas", "pred_boxes_old"} and SigmoidBoxCoder().regression_outputs(reference, grow) == {}
    with pytest.raises(ValueError, match="refine \\(..., 4\\) boxes"):
        coder.decode(reference[..., :2], grow)


def test_the_model_refuses_a_criterion_that_codes_boxes_otherwise():
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / "plain_detr.py"))
    cfg.model.box_coder = PixelDeltaBoxCoder()
    with pytest.raises(ValueError, match="the model codes boxes with PixelDeltaBoxCoder.*its criterion has Sigmoid"):
        instantiate(cfg.model)


@pytest.mark.parametrize("name", ["detr.py", "conditional_detr.py", "sam_detr.py"])
def test_sigmoid_heads_refuse_pixel_boxes(name):
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / name))
    coder = PixelDeltaBoxCoder()
    cfg.model.box_coder = cfg.model.criterion.box_coder = cfg.model.criterion.matcher.box_coder = coder
    with pytest.raises(ValueError, match="predicts normalised boxes, not pixels"):
        instantiate(cfg.model)

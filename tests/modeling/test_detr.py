import pytest
import torch

pytest.importorskip("detectron2", reason="sam_detr.modeling needs detectron2")

from model_inputs import two_images  # noqa: E402

from sam_detr.modeling import DETR, HungarianMatcher, SetCriterion, build_resnet_backbone  # noqa: E402
from sam_detr.modeling.transformer import DetrTransformer  # noqa: E402


def tiny_detr(num_classes=5, freeze_at=0):
    return DETR(
        backbone=build_resnet_backbone(18, out_features=["res5"], norm="BN", freeze_at=freeze_at),
        in_features=["res5"],
        transformer=DetrTransformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                                    dim_feedforward=64, dropout=0.0),
        num_queries=7,
        criterion=SetCriterion(
            num_classes,
            HungarianMatcher(1, 5, 2, class_cost_type="softmax"),
            {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
            class_loss_type="softmax",
        ),
    )



def test_padding_does_not_leak_into_the_head():
    """An image's predictions do not depend on how much padding its batch adds (masks at every level)."""
    torch.manual_seed(1)
    model = tiny_detr().eval()
    feat = torch.randn(2, 32, 5, 7)  # projected features (d_model 32)
    mask = torch.ones(2, 5, 7, dtype=torch.bool)
    mask[0, :3, :4] = False
    mask[1] = False
    feat[0, :, 3:, :] = 100.0  # garbage where image 0 is padding
    feat[0, :, :, 4:] = -100.0
    with torch.no_grad():
        batched = model.forward_head([feat], [mask])
        alone = model.forward_head([feat[:1, :, :3, :4]], [mask[:1, :3, :4]])
    torch.testing.assert_close(batched["pred_logits"][:1], alone["pred_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched["pred_boxes"][:1], alone["pred_boxes"], rtol=1e-5, atol=1e-5)


def test_masks_follow_each_image():
    model = tiny_detr()
    images, mask = model.preprocess_image(two_images())
    assert images.tensor.shape[-2:] == (67, 101)
    assert not mask[0, :67, :93].any() and mask[0, :, 93:].all()
    assert not mask[1, :45, :101].any() and mask[1, 45:, :].all()
    torch.testing.assert_close(images.tensor[1, :, 45:], torch.zeros(3, 22, 101))


def test_bad_inputs_name_the_image():
    model = tiny_detr().train()
    inputs = two_images()
    del inputs[1]["instances"]
    inputs[1]["image_id"] = 42
    with pytest.raises(KeyError, match="image_id 42"):
        model(inputs)
    with pytest.raises(ValueError, match="softmax"):
        DETR(backbone=build_resnet_backbone(18), in_features=["res5"], transformer=DetrTransformer(d_model=32),
             criterion=SetCriterion(3, HungarianMatcher(), {"loss_ce": 1, "loss_bbox": 1, "loss_giou": 1}))


def test_batch_invariant_detections_do_not_depend_on_the_batch():
    """With batch_invariant, an image's detections are those it gets alone, whatever joins its batch; in
    the official mode, padding reaches its backbone features (BatchNorm in eval, convolutions at the
    border) and they change."""
    torch.manual_seed(2)
    small = {"image": torch.randint(0, 256, (3, 45, 61), dtype=torch.uint8)}
    large = {"image": torch.randint(0, 256, (3, 97, 131), dtype=torch.uint8)}
    for invariant in (True, False):
        model = tiny_detr().eval()
        model.batch_invariant = invariant
        with torch.no_grad():
            alone = model([small])[0]["instances"]
            batched = model([small, large])[0]["instances"]
        close = torch.allclose(alone.scores, batched.scores, atol=1e-4) and torch.allclose(
            alone.pred_boxes.tensor, batched.pred_boxes.tensor, atol=1e-4
        )
        assert close == invariant

"""Model inputs in Detectron2's format shared by the model tests."""
import torch
from detectron2.structures import Boxes, Instances


def two_images(second_size=(45, 101)):
    """Two odd-sized uint8 images (67x93 returned at 134x186, and `second_size`, 45x101), the second without
    objects."""
    a = {"image": torch.randint(0, 256, (3, 67, 93), dtype=torch.uint8), "height": 134, "width": 186}
    a["instances"] = Instances(
        (67, 93),
        gt_boxes=Boxes(torch.tensor([[3.0, 4.0, 40.0, 50.0], [50.0, 10.0, 90.0, 30.0]])),
        gt_classes=torch.tensor([1, 4]),
    )
    b = {"image": torch.randint(0, 256, (3, *second_size), dtype=torch.uint8)}
    b["instances"] = Instances(
        second_size, gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)
    )
    return [a, b]


def model_and_optimizer(cfg):
    """`cfg.model` instantiated after seeding 0, and `cfg.optimizer` built over its parameter groups."""
    from detectron2.config import instantiate

    torch.manual_seed(0)
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    return model, instantiate(cfg.optimizer)


def train_step_and_inference(model, optimizer=None):
    """A training step of `model` on `two_images()` (and of `optimizer`, if given), then an inference on them
    in eval mode; returns the loss dict (the total checked finite) and the inference outputs."""
    from detectron2.utils.events import EventStorage

    model.train()
    with EventStorage():
        losses = model(two_images())
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    if optimizer is not None:
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return losses, model(two_images())

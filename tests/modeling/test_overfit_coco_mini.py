"""A tiny model's loss falls on a handful of real COCO images."""
import pytest
import torch

pytest.importorskip("detectron2", reason="sam_detr.modeling needs detectron2")

from detectron2.data import DatasetMapper  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.data.datasets import load_coco_json  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from test_detr import tiny_detr  # noqa: E402


@pytest.mark.slow
@pytest.mark.coco_mini
def test_loss_falls_on_real_images(coco_mini_dir):
    annotations = coco_mini_dir / "annotations" / "instances_val2017.json"
    dicts = load_coco_json(str(annotations), str(coco_mini_dir / "val2017"), "coco_mini_overfit")
    mapper = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(64, 96)], image_format="RGB")
    batch = [mapper(d) for d in sorted(dicts, key=lambda d: d["image_id"])[:4]]
    assert all(len(x["instances"]) > 0 for x in batch)
    torch.manual_seed(0)
    # a frozen random backbone keeps this fast; the transformer and heads still have to fit
    model = tiny_detr(num_classes=80, freeze_at=5).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    with EventStorage():
        for _ in range(30):
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            history.append(loss.item())
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.75 * first, f"loss did not fall: {history}"

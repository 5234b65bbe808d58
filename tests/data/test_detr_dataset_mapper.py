"""DetrDatasetMapper: targets like the official code's, empty and crowd annotations, clear errors."""
import numpy as np
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from fvcore.transforms.transform import CropTransform, HFlipTransform  # noqa: E402
from PIL import Image  # noqa: E402

from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402

from sam_detr.data import (  # noqa: E402
    BadImageError,
    DetrDatasetMapper,
    DetrResize,
    RandomSelect,
    RandomSizeCrop,
    detr_train_augmentation,
)

H, W = 300, 400
RECT = (300, 20, 360, 70)  # XYXY of the white rectangle drawn on the test image, near a corner so crops cut it


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    image = np.zeros((H, W, 3), dtype=np.uint8)
    x1, y1, x2, y2 = RECT
    image[y1:y2, x1:x2] = 255
    image[:10, :10] = (255, 0, 0)  # a red corner, to check the channel order
    path = tmp_path_factory.mktemp("mapper") / "rect.png"
    Image.fromarray(image).save(path)
    return str(path)


def make_dict(file_name, annotations, image_id=7):
    return {"file_name": file_name, "image_id": image_id, "height": H, "width": W, "annotations": annotations}


def anno(bbox, category_id=3, mode=BoxMode.XYWH_ABS, **extra):
    return {"bbox": list(bbox), "bbox_mode": mode, "category_id": category_id, **extra}


def test_boxes_follow_the_image_through_the_official_augmentation(image_file):
    x1, y1, x2, y2 = RECT
    dataset_dict = make_dict(image_file, [anno((x1, y1, x2 - x1, y2 - y1))])
    mapper = DetrDatasetMapper(is_train=True, augmentations=detr_train_augmentation())
    np.random.seed(0)
    kept = dropped = 0
    for _ in range(40):
        out = mapper(dataset_dict)
        image = out["image"]
        instances = out["instances"]
        assert image.dtype == torch.uint8 and tuple(image.shape[1:]) == instances.image_size
        bright = (image[1] > 127).numpy()  # the green channel: the white rectangle, not the red corner
        if len(instances):
            kept += 1
            box = instances.gt_boxes.tensor[0].numpy()
            if (box[2] - box[0]) * (box[3] - box[1]) < 9:
                continue
            ys, xs = np.nonzero(bright)
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=1.5)
        else:
            dropped += 1
            # the crop left out the rectangle, but for a blurred edge
            assert bright.any(axis=0).sum() <= 1 or bright.any(axis=1).sum() <= 1
    assert kept > 20 and dropped > 0


def official_targets(boxes_xywh, labels, image_wh, ops):
    """The official target pipeline (ConvertCocoPolysToMask, hflip, resize, crop), restated in torch."""
    w, h = image_wh
    boxes = torch.as_tensor(boxes_xywh, dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(labels)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2].clamp_(min=0, max=w)
    boxes[:, 1::2].clamp_(min=0, max=h)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    boxes, labels = boxes[keep], labels[keep]
    for op, *args in ops:
        if op == "flip":
            boxes = boxes[:, [2, 1, 0, 3]] * torch.as_tensor([-1, 1, -1, 1]) + torch.as_tensor([w, 0, w, 0])
        elif op == "resize":
            new_h, new_w = args
            rw, rh = float(new_w) / float(w), float(new_h) / float(h)
            boxes = boxes * torch.as_tensor([rw, rh, rw, rh])
            h, w = new_h, new_w
        elif op == "crop":
            i, j, h, w = args
            boxes = torch.min((boxes - torch.as_tensor([j, i, j, i])).reshape(-1, 2, 2), torch.as_tensor([w, h]))
            boxes = boxes.clamp(min=0)
            keep = torch.all(boxes[:, 1, :] > boxes[:, 0, :], dim=1)
            boxes, labels = boxes.reshape(-1, 4)[keep], labels[keep]
    return boxes, labels


def test_targets_bit_identical_to_the_official_pipeline(image_file):
    annotations = [
        anno((100.3, 60.7, 160.1, 140.9), 1),
        anno((0.5, 0.25, 33.3, 20.2), 2),  # left out by the crop
        anno((350.2, 250.1, 80.0, 70.0), 3),  # beyond the image: clamped
        anno((120.0, 80.0, 0.0, 30.0), 4),  # no width: dropped
        anno((12.25, 150.5, 250.75, 149.5), 5),  # cut by the crop
        anno((10, 10, 50, 50), 6, iscrowd=1),  # crowd: removed
        anno((30.0, 40.0, 330.0, 260.0), 7, mode=BoxMode.XYXY_ABS),
    ]
    transforms = [
        HFlipTransform(W),
        T.ResizeTransform(H, W, 450, 601),
        CropTransform(57, 41, 401, 389),
        T.ResizeTransform(389, 401, 555, 572),
    ]
    out = DetrDatasetMapper(is_train=True, augmentations=transforms)(make_dict(image_file, annotations))
    xywh = [a["bbox"] if a["bbox_mode"] == BoxMode.XYWH_ABS else
            [a["bbox"][0], a["bbox"][1], a["bbox"][2] - a["bbox"][0], a["bbox"][3] - a["bbox"][1]]
            for a in annotations if not a.get("iscrowd")]
    labels = [a["category_id"] for a in annotations if not a.get("iscrowd")]
    ops = [("flip",), ("resize", 450, 601), ("crop", 41, 57, 389, 401), ("resize", 555, 572)]
    boxes, labels = official_targets(xywh, labels, (W, H), ops)
    assert out["instances"].gt_boxes.tensor.dtype == torch.float32
    assert torch.equal(out["instances"].gt_boxes.tensor, boxes)
    assert out["instances"].gt_classes.tolist() == labels.tolist() == [1, 3, 5, 7]
    assert out["instances"].image_size == (555, 572) == tuple(out["image"].shape[1:])


def test_crowd_removed_and_degenerate_dropped(image_file):
    annotations = [
        anno((10, 10, 50, 50), 1, iscrowd=1),
        anno((20, 30, 40, 50), 2),
        anno((20, 30, 0, 50), 3),
        anno((420, 30, 10, 10), 4),  # wholly outside the image
        anno((390, 290, 20, 20), 5, iscrowd=0),
    ]
    out = DetrDatasetMapper(is_train=True, augmentations=[])(make_dict(image_file, annotations))
    assert out["instances"].gt_classes.tolist() == [2, 5]
    assert out["instances"].gt_boxes.tensor.tolist() == [[20, 30, 60, 80], [390, 290, 400, 300]]
    assert "annotations" not in out


def test_box_modes_read_exactly(image_file):
    annotations = [anno((0.1, 0.7, 100.3, 50.9), 1, mode=BoxMode.XYXY_ABS), anno((0.1, 0.7, 100.3, 50.9), 2)]
    out = DetrDatasetMapper(is_train=True, augmentations=[])(make_dict(image_file, annotations))
    xyxy = torch.tensor([0.1, 0.7, 100.3, 50.9])
    xywh = torch.tensor([0.1, 0.7, 100.3, 50.9])
    xywh[2:] += xywh[:2]  # in float32, like the official code
    assert torch.equal(out["instances"].gt_boxes.tensor, torch.stack([xyxy, xywh]))


@pytest.mark.parametrize("augment", [False, True])
def test_empty_annotations_give_empty_instances(image_file, augment):
    augmentations = detr_train_augmentation() if augment else []
    only_crowd = [anno((10, 10, 50, 50), 1, iscrowd=1)]
    for annotations in ([], only_crowd):
        out = DetrDatasetMapper(is_train=True, augmentations=augmentations)(make_dict(image_file, annotations))
        instances = out["instances"]
        assert len(instances) == 0
        assert instances.gt_boxes.tensor.shape == (0, 4) and instances.gt_boxes.tensor.dtype == torch.float32
        assert instances.gt_classes.shape == (0,) and instances.gt_classes.dtype == torch.int64
        assert instances.image_size == tuple(out["image"].shape[1:])


def test_inference_output(image_file):
    mapper = DetrDatasetMapper(is_train=False, augmentations=[DetrResize(800, 1333)])
    out = mapper(make_dict(image_file, [anno((1, 2, 3, 4))]))
    assert set(out) == {"file_name", "image_id", "height", "width", "image"}
    assert (out["height"], out["width"], out["image_id"]) == (H, W, 7)
    assert tuple(out["image"].shape) == (3, 800, 1066)
    assert out["image"][:, :5, :5].float().mean(dim=(1, 2)).tolist() == [255.0, 0.0, 0.0]  # RGB


@pytest.mark.parametrize(
    "annotation, field",
    [
        (anno((1, 2, float("nan"), 4)), "bbox"),
        (anno((1, 2, float("inf"), 4)), "bbox"),
        (anno((1, 2, -3, 4)), "bbox"),
        (anno((5, 2, 3, 4), mode=BoxMode.XYXY_ABS), "bbox"),
        (anno((1, 2, 3)), "bbox"),
        (anno(("a", 2, 3, 4)), "bbox"),
        (anno((1, 2, 3, 4), mode=BoxMode.XYWHA_ABS), "bbox_mode"),
        (anno((1, 2, 3, 4), mode=BoxMode.XYWH_REL), "bbox_mode"),
        (anno((1, 2, 3, 4), mode=9), "bbox_mode"),
        (anno((1, 2, 3, 4), category_id=-1), "category_id"),
        (anno((1, 2, 3, 4), category_id=2.0), "category_id"),
        ({"bbox": [1, 2, 3, 4], "bbox_mode": BoxMode.XYWH_ABS}, "category_id"),
        ({"bbox": [1, 2, 3, 4], "category_id": 1}, "bbox_mode"),
    ],
)
def test_bad_annotation_errors_name_image_and_field(image_file, annotation, field):
    mapper = DetrDatasetMapper(is_train=True, augmentations=[])
    dataset_dict = make_dict(image_file, [anno((1, 1, 5, 5)), annotation], image_id=4242)
    with pytest.raises(ValueError, match=rf"image_id=4242 \(.*rect\.png\), annotation 1: .*{field}"):
        mapper(dataset_dict)


def test_missing_annotations_field_is_an_error_in_training(image_file):
    dataset_dict = make_dict(image_file, [])
    del dataset_dict["annotations"]
    with pytest.raises(ValueError, match=r"image_id=7 .*'annotations'"):
        DetrDatasetMapper(is_train=True, augmentations=[])(dataset_dict)
    out = DetrDatasetMapper(is_train=False, augmentations=[])(dataset_dict)
    assert "instances" not in out


def test_missing_image_file_names_the_image(tmp_path):
    missing = str(tmp_path / "nowhere.jpg")
    with pytest.raises(BadImageError, match=r"image_id=7 \(.*nowhere\.jpg\): cannot read the image"):
        DetrDatasetMapper(is_train=False, augmentations=[])(make_dict(missing, []))


def test_from_yacs_config():
    cfg = get_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (480, 512)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.CROP.SIZE = [300, 500]
    mapper = DetrDatasetMapper(cfg, is_train=True)
    flip, select = mapper.augmentations.augs
    assert isinstance(flip, T.RandomFlip) and isinstance(select, RandomSelect)
    crop = select.augs_b.augs[1]
    assert isinstance(crop, RandomSizeCrop) and (crop.min_size, crop.max_size) == (300, 500)
    assert select.augs_a.augs[0].short_edge_length == (480, 512) and select.augs_a.augs[0].max_size == 1000
    assert mapper.image_format == "RGB"

    cfg.INPUT.CROP.ENABLED = False
    assert [type(a) for a in DetrDatasetMapper(cfg, is_train=True).augmentations.augs] == [T.RandomFlip, DetrResize]
    (resize,) = DetrDatasetMapper(cfg, is_train=False).augmentations.augs
    assert resize.short_edge_length == (800,) and resize.max_size == 1333

    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "relative_range"
    with pytest.raises(ValueError, match="absolute_range"):
        DetrDatasetMapper(cfg, is_train=True)
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "range"
    with pytest.raises(ValueError, match="MIN_SIZE_TRAIN_SAMPLING"):
        DetrDatasetMapper(cfg, is_train=True)

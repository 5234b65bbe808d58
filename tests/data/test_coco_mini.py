"""Real COCO val2017 images and annotations (../shared/data/coco_val2017_mini): the loader, the category
mapping, crowd boxes, the DETR mapper and the evaluator."""
import collections

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from coco_eval_utils import evaluate_ground_truth_as_predictions  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import register_coco_instances  # noqa: E402

from sam_detr.data import DetrDatasetMapper, DetrResize, detr_train_augmentation  # noqa: E402

pytestmark = pytest.mark.coco_mini
NAME = "coco_val2017_mini_test"


@pytest.fixture(scope="module")
def coco_mini(coco_mini_dir):
    register_coco_instances(
        NAME, {}, str(coco_mini_dir / "annotations" / "instances_val2017.json"), str(coco_mini_dir / "val2017")
    )
    yield DatasetCatalog.get(NAME)
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def test_loader_and_category_mapping(coco_mini):
    assert len(coco_mini) == 158
    annotations = [a for d in coco_mini for a in d["annotations"]]
    assert len(annotations) == 1424
    assert sum(a.get("iscrowd", 0) for a in annotations) == 16
    meta = MetadataCatalog.get(NAME)
    id_map = meta.thing_dataset_id_to_contiguous_id
    assert len(meta.thing_classes) == 80 and sorted(id_map.values()) == list(range(80))
    # the official ids run 1..90 with 10 unused; the mapping is order-preserving both ways
    assert min(id_map) == 1 and max(id_map) == 90
    assert sorted(id_map) == [k for k, _ in sorted(id_map.items(), key=lambda kv: kv[1])]
    assert meta.thing_classes[id_map[1]] == "person" and meta.thing_classes[id_map[90]] == "toothbrush"
    assert {a["category_id"] for a in annotations} <= set(range(80))


def test_mapper_removes_crowd_and_keeps_the_rest(coco_mini):
    mapper = DetrDatasetMapper(is_train=True, augmentations=[DetrResize(800, 1333)])
    with_crowd = [d for d in coco_mini if any(a.get("iscrowd", 0) for a in d["annotations"])]
    assert with_crowd
    for d in with_crowd:
        out = mapper(d)
        non_crowd = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        assert out["instances"].gt_classes.tolist() == [a["category_id"] for a in non_crowd]
        h, w = out["image"].shape[1:]
        assert (h, w) == DetrResize.get_output_shape(d["height"], d["width"], 800, 1333)
        boxes = out["instances"].gt_boxes.tensor
        expected = np.array([a["bbox"] for a in non_crowd], dtype=np.float64)
        expected[:, 2:] += expected[:, :2]
        expected *= [w / d["width"], h / d["height"]] * 2
        np.testing.assert_allclose(boxes.numpy(), np.minimum(expected, [w, h, w, h]), rtol=1e-5, atol=1e-3)


def test_detr_train_mapper_on_real_images(coco_mini):
    mapper = DetrDatasetMapper(is_train=True, augmentations=detr_train_augmentation())
    np.random.seed(0)
    sizes = collections.Counter()
    for d in coco_mini[:12]:
        out = mapper(d)
        image, instances = out["image"], out["instances"]
        assert image.shape[0] == 3 and tuple(image.shape[1:]) == instances.image_size
        assert min(image.shape[1:]) in range(480, 801, 32) and max(image.shape[1:]) <= 1333
        boxes = instances.gt_boxes.tensor
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert (boxes >= 0).all() and (boxes[:, 2] <= image.shape[2]).all() and (boxes[:, 3] <= image.shape[1]).all()
        sizes[tuple(image.shape[1:])] += 1
    assert len(sizes) > 1


def test_evaluator_scores_ground_truth_at_100(coco_mini):
    results = evaluate_ground_truth_as_predictions(NAME, coco_mini)
    assert results["AP"] == pytest.approx(100.0)
    # with the contiguous ids mapped back wrongly, the same boxes would score about nothing
    assert evaluate_ground_truth_as_predictions(NAME, coco_mini, class_offset=1)["AP"] < 5

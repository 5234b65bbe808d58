"""Every LazyConfig data file loads, saves to yaml, and builds loaders that yield batches on CPU."""
import numpy as np
import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import DatasetMapper  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402

from sam_detr.data import DetrDatasetMapper, DetrResize, RandomSelect  # noqa: E402

CONFIGS = REPO_ROOT / "configs" / "common" / "data"
SHAPES_CONFIGS = {"shapes.py": DetrDatasetMapper, "shapes_simple.py": DatasetMapper}


@pytest.fixture(scope="module", autouse=True)
def fresh_root(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAM_DETR_DATASETS", str(tmp_path_factory.mktemp("datasets")))
        yield


def test_every_data_config_is_tested():
    assert {p.name for p in CONFIGS.glob("*.py")} == set(SHAPES_CONFIGS) | {"coco_detr.py"}


@pytest.mark.parametrize("name", sorted(SHAPES_CONFIGS) + ["coco_detr.py"])
def test_config_saves_to_yaml(name, tmp_path):
    cfg = LazyConfig.load(str(CONFIGS / name))
    assert set(cfg) == {"dataloader"}
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    assert not (tmp_path / "config.yaml.pkl").exists()  # the fallback where yaml fails (a lambda, ...)
    reloaded = LazyConfig.load(str(tmp_path / "config.yaml"))
    for mapper in (reloaded.dataloader.train.mapper, reloaded.dataloader.test.mapper):
        assert type(instantiate(mapper)) is type(instantiate(cfg.dataloader.train.mapper))


@pytest.mark.parametrize("name", sorted(SHAPES_CONFIGS))
def test_shapes_config_loaders_yield_batches(name):
    cfg = LazyConfig.load(str(CONFIGS / name))
    assert cfg.dataloader.train.dataset.names == "shapes_train" and cfg.dataloader.test.dataset.names == "shapes_val"
    assert LazyConfig.load(str(CONFIGS / name), "NUM_TRAIN_IMAGES") == 1500
    # shapes_train takes seconds to generate; shapes_val exercises the same code
    cfg.dataloader.train.dataset.names = "shapes_val"
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.train.total_batch_size = 3
    cfg.dataloader.test.num_workers = 0

    assert isinstance(instantiate(cfg.dataloader.train.mapper), SHAPES_CONFIGS[name])
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert len(batch) == 3
    for d in batch:
        image, instances = d["image"], d["instances"]
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert tuple(image.shape[1:]) == instances.image_size and len(instances) > 0
        assert instances.gt_classes.max() < 5 and (instances.gt_boxes.area() > 0).all()

    test_batch = next(iter(instantiate(cfg.dataloader.test)))
    assert len(test_batch) == 1 and min(test_batch[0]["image"].shape[1:]) == 160
    assert "instances" not in test_batch[0] and {"height", "width", "image_id"} <= set(test_batch[0])

    evaluator = instantiate(cfg.dataloader.evaluator)
    assert isinstance(evaluator, COCOEvaluator)


def test_coco_detr_config(tmp_path):
    cfg = LazyConfig.load(str(CONFIGS / "coco_detr.py"))
    assert LazyConfig.load(str(CONFIGS / "coco_detr.py"), "NUM_TRAIN_IMAGES") == 118287
    train, test = cfg.dataloader.train, cfg.dataloader.test
    assert train.dataset.names == "coco_2017_train" and train.dataset.filter_empty is False
    assert test.dataset.names == "coco_2017_val" == cfg.dataloader.evaluator.dataset_name
    assert train.total_batch_size == 16

    train_mapper = instantiate(train.mapper)
    test_mapper = instantiate(test.mapper)
    assert isinstance(train_mapper, DetrDatasetMapper) and train_mapper.image_format == "RGB"
    assert test_mapper.image_format == "RGB" and not test_mapper.is_train
    flip, select = train_mapper.augmentations.augs
    assert isinstance(select, RandomSelect)
    assert select.augs_a.augs[0].short_edge_length == tuple(range(480, 801, 32))
    (resize,) = test_mapper.augmentations.augs
    assert isinstance(resize, DetrResize) and (resize.short_edge_length, resize.max_size) == ((800,), 1333)

    path = tmp_path / "image.jpg"
    Image.fromarray(np.full((427, 640, 3), 128, dtype=np.uint8)).save(path)
    dataset_dict = {
        "file_name": str(path), "image_id": 1, "height": 427, "width": 640,
        "annotations": [{"bbox": [10, 20, 300, 200], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}],
    }
    np.random.seed(0)
    assert len(train_mapper(dataset_dict)["instances"]) == 1
    assert tuple(test_mapper(dataset_dict)["image"].shape) == (3, 800, 1199)

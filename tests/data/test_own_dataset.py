"""Your own COCO-format dataset from config fields: registered when the config is instantiated, the model's class
count taken from it, and the errors a user meets: an unregistered name, a class count the model does not have, no
usable image, category ids that are not contiguous (mapped, and said)."""
import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from coco_builder import CocoBuilder, flat_png  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from sam_detr.data import checked_dataset_dicts  # noqa: E402
from sam_detr.data.datasets import DatasetNotRegisteredError  # noqa: E402
from sam_detr.engine.train_net import train_dataset_classes  # noqa: E402

# COCO's ids for these: not 1..3
CATEGORIES = [{"id": 62, "name": "chair"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


@pytest.fixture
def own_dataset(tmp_path):
    """A 3-class COCO-format json (ids 1, 3, 62) with two images; the names registered are removed after."""
    builder = CocoBuilder(tmp_path)
    builder.image(flat_png(40, 30), 40, 30, boxes=[(2, 2, 10, 10)], category_id=62)
    builder.image(flat_png(40, 30), 40, 30, boxes=[(5, 5, 8, 8)], category_id=3)
    builder.categories = CATEGORIES
    json_file, image_root = builder.write()
    names = []
    yield json_file, image_root, names
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def detr_config(name, json_file, image_root):
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / "detr.py"))
    return LazyConfig.apply_overrides(cfg, [
        f"dataloader.train.dataset.names={name}",
        f"dataloader.train.dataset.json_file={json_file}",
        f"dataloader.train.dataset.image_root={image_root}",
    ])


def test_the_model_takes_its_classes_from_the_registered_json(own_dataset, package_log):
    json_file, image_root, names = own_dataset
    names.append("own_three")
    cfg = detr_config("own_three", json_file, image_root)
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert model.num_classes == 3
    assert MetadataCatalog.get("own_three").thing_classes == ["person", "car", "chair"]  # in id order
    assert train_dataset_classes(cfg, model) == ["person", "car", "chair"]
    # the ids are mapped to 0..2, and the log says how
    assert any("not 1..3: mapped to the contiguous classes 0..2 in id order, 1 -> 0 (person), 3 -> 1 (car), "
               "62 -> 2 (chair)" in r.getMessage() for r in package_log.records)
    dicts = instantiate(cfg.dataloader.train.dataset)
    assert [a["category_id"] for d in dicts for a in d["annotations"]] == [2, 1]


def test_a_class_count_the_json_does_not_have_is_refused(own_dataset):
    json_file, image_root, names = own_dataset
    names.append("own_override")
    cfg = detr_config("own_override", json_file, image_root)
    cfg.model.criterion.num_classes = 80  # typed by hand
    with torch.device("meta"):
        model = instantiate(cfg.model)
    with pytest.raises(ValueError, match=r"the model predicts 80 classes, but the train dataset 'own_override' has 3 "
                                         r"categories \(person, car, chair\).*remove the override"):
        train_dataset_classes(cfg, model)


def test_an_unregistered_name_lists_the_registered_ones():
    for build in (lambda: checked_dataset_dicts("my_trian"),
                  lambda: instantiate(LazyConfig.apply_overrides(
                      LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / "detr.py")),
                      ["dataloader.train.dataset.names=my_trian"]).model)):
        with pytest.raises(DatasetNotRegisteredError) as error:
            build()
        message = str(error.value)
        assert message.startswith("dataset 'my_trian' is not registered. Registered: ")
        assert "shapes_train, shapes_val" in message and "coco_2017_train" in message
        assert "dataloader.train.dataset.json_file" in message


def test_a_dataset_without_usable_images_is_refused(own_dataset, tmp_path):
    _, image_root, names = own_dataset
    empty = CocoBuilder(tmp_path)
    empty.categories = CATEGORIES
    json_file, _ = empty.write()
    names.append("own_empty")
    with pytest.raises(ValueError, match=rf"dataset 'own_empty' \(json {json_file}\): {json_file}: 'images' is empty"):
        checked_dataset_dicts("own_empty", json_file=str(json_file), image_root=str(image_root))
    missing = CocoBuilder(tmp_path)
    missing.image(None, 40, 30, boxes=[(2, 2, 10, 10)], category_id=1)
    missing.image(None, 40, 30, boxes=[(2, 2, 10, 10)], category_id=1)
    missing.categories = CATEGORIES
    json_file, image_root = missing.write()
    names.append("own_missing")
    with pytest.raises(ValueError, match=r"dataset 'own_missing' \(json .*\): own_missing: all 2 image\(s\) were "
                                         r"skipped; 2 missing image file\(s\) skipped \(missing_images='skip'\)"):
        checked_dataset_dicts("own_missing", json_file=str(json_file), image_root=str(image_root),
                              missing_images="skip")


def test_registration_fields_are_checked(own_dataset, tmp_path):
    json_file, image_root, names = own_dataset
    with pytest.raises(ValueError, match=r"json_file is set but not image_root"):
        checked_dataset_dicts("own_half", json_file=str(json_file))
    names.append("own_twice")
    checked_dataset_dicts("own_twice", json_file=str(json_file), image_root=str(image_root))
    other = CocoBuilder(tmp_path)
    other.image(flat_png(20, 20), 20, 20)
    other.categories = CATEGORIES
    other_json, other_root = other.write()
    with pytest.raises(ValueError, match=r"dataset 'own_twice' is already registered with json_file="):
        checked_dataset_dicts("own_twice", json_file=str(other_json), image_root=str(other_root))
    no_categories_builder = CocoBuilder(tmp_path)
    no_categories_builder.categories = []
    no_categories, root = no_categories_builder.write()
    names.append("own_nocat")
    with pytest.raises(ValueError, match=rf"{no_categories} has no 'categories'"):
        checked_dataset_dicts("own_nocat", json_file=str(no_categories), image_root=str(root))

"""Bad data in COCO-format datasets registered the Detectron2 way, in training and in evaluation: each case gets
an error naming the dataset, the image id, the file and the field, or its policy with a count in the log
(sam_detr/data/dataset_checks.py, DetrDatasetMapper), never a crash in the model or a silent drop."""
import re

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from coco_builder import CocoBuilder, flat_png, not_an_image, png, truncated_png  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import build_detection_test_loader  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.evaluation import COCOEvaluator, inference_on_dataset  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from sam_detr.data import (  # noqa: E402
    BadImageError,
    DatasetError,
    DetrDatasetMapper,
    DetrResize,
    TrainLoader,
    checked_dataset_dicts,
)

W, H = 64, 48
GOOD_BOX = (8, 6, 20, 16)


@pytest.fixture
def coco(tmp_path):
    builder = CocoBuilder(tmp_path)
    yield builder
    builder.unregister()


def mapper(is_train=True, **kwargs):
    augmentations = [T.RandomFlip(), DetrResize([40, 48], max_size=80)] if is_train else [DetrResize(48, 80)]
    return DetrDatasetMapper(is_train=is_train, augmentations=augmentations, **kwargs)


def dataset_with(coco, writer, width=W, height=H, boxes=(GOOD_BOX,), **json_size):
    """A good image, then the case; returns the dataset's name and the case's image id."""
    coco.image(png(W, H), W, H, [GOOD_BOX])
    image_id = coco.image(writer, width, height, boxes, **json_size)
    return coco.register(), image_id


def where(image_id):
    return rf"image_id={image_id} \(.*{image_id:03d}\.png\)"


def refused(name):
    """The start of the error that refuses dataset `name`: it names the dataset and its json."""
    return rf"dataset '{name}' \(json .*annotations\.json\): "


# ---- the dataset checks: problems seen in the json and the file system

def test_missing_image_file(coco, package_log):
    name, image_id = dataset_with(coco, None)
    with pytest.raises(DatasetError, match=rf"{refused(name)}{where(image_id)}: the image file does not exist"):
        checked_dataset_dicts(name)
    dicts = checked_dataset_dicts(name, missing_images="skip")
    assert [d["image_id"] for d in dicts] == [1]
    assert re.search(rf"skipped 1 missing image file\(s\) in {where(image_id)}", package_log.text)
    with pytest.raises(ValueError, match="missing_images='skip' is for training"):
        checked_dataset_dicts(name, missing_images="skip", evaluation=True)
    with pytest.raises(DatasetError, match=where(image_id)):
        checked_dataset_dicts(name, evaluation=True)


@pytest.mark.parametrize(
    "box, message",
    [
        ((10, 10, -4, 5), "has a negative width or height"),
        ((10, float("nan"), 4, 5), "bbox must be 4 finite numbers"),
        ((10, 10, float("inf"), 5), "bbox must be 4 finite numbers"),
        ((10, "abc", 4, 5), "bbox must be 4 finite numbers"),
        ((10, 10, 4), "bbox must be 4 finite numbers"),
    ],
)
def test_annotation_that_cannot_be_right(coco, package_log, box, message):
    name, image_id = dataset_with(coco, png(W, H, seed=2), boxes=[GOOD_BOX, box])
    with pytest.raises(DatasetError, match=rf"{refused(name)}{where(image_id)}: annotation 1: .*{re.escape(message)}"):
        checked_dataset_dicts(name)
    dicts = checked_dataset_dicts(name, bad_annotations="skip")
    assert [len(d["annotations"]) for d in dicts] == [1, 1]
    assert re.search(rf"skipped 1 invalid annotation\(s\) in {where(image_id)}: annotation 1: .*{re.escape(message)}",
                     package_log.text)
    with pytest.raises(ValueError, match="bad_annotations='skip' is for training"):
        checked_dataset_dicts(name, bad_annotations="skip", evaluation=True)
    with pytest.raises(ValueError, match=where(image_id)):
        checked_dataset_dicts(name, evaluation=True)


def test_category_not_among_the_categories(coco):
    """d2's load_coco_json raises a KeyError without the image; the error names it and the annotation."""
    name, image_id = dataset_with(coco, png(W, H, seed=2), boxes=[GOOD_BOX])
    coco.annotations[-1]["category_id"] = 7
    name = coco.register()
    with pytest.raises(DatasetError, match=rf"{refused(name)}annotation id=2 \(image_id={image_id}, 002\.png\): "
                                           r"category_id 7 is not among the categories \[1, 2\]"):
        checked_dataset_dicts(name)


@pytest.mark.parametrize(
    "box, kind",
    [((10, 10, 0, 5), "with zero area"), ((10, 10, 5, 0), "with zero area"),
     ((70, 10, 5, 5), "wholly outside the image"), ((-9, -9, 5, 5), "wholly outside the image")],
)
def test_box_without_area(coco, package_log, box, kind):
    name, image_id = dataset_with(coco, png(W, H, seed=2), boxes=[box, GOOD_BOX, box])
    dicts = checked_dataset_dicts(name)
    assert [len(d["annotations"]) for d in dicts] == [1, 1]
    assert re.search(rf"skipped 2 annotation\(s\) {kind} in {where(image_id)}", package_log.text)
    with pytest.raises(DatasetError, match=rf"{where(image_id)}: annotation 0: bbox .* has (zero area|no area inside)"):
        checked_dataset_dicts(name, empty_boxes="error")
    # evaluation: COCOEvaluator reads them from the json, so they are counted there and reported here
    package_log.clear()
    assert [len(d["annotations"]) for d in checked_dataset_dicts(name, evaluation=True)] == [1, 3]
    assert re.search(rf"kept 2 annotation\(s\) {kind} in {where(image_id)}, as COCOEvaluator reads them",
                     package_log.text)


def test_box_partly_outside_is_clipped(coco, package_log):
    name, image_id = dataset_with(coco, png(W, H, seed=2), boxes=[(50, 40, 30, 20)])
    (_, record) = checked_dataset_dicts(name)
    assert re.search(rf"clipped 1 annotation\(s\) partly outside the image in {where(image_id)}", package_log.text)
    out = DetrDatasetMapper(is_train=True, augmentations=[])(record)
    assert out["instances"].gt_boxes.tensor.tolist() == [[50, 40, W, H]]


def test_image_without_annotations_is_trained_on_as_background(coco, package_log):
    name, image_id = dataset_with(coco, png(W, H, seed=2), boxes=[])
    dicts = checked_dataset_dicts(name)
    assert len(dicts) == 2 and "1 image(s) without annotations: trained on as background" in package_log.text
    assert len(mapper()(dicts[1])["instances"]) == 0
    assert [d["image_id"] for d in checked_dataset_dicts(name, filter_empty=True)] == [1]


# ---- the mapper: problems seen when the image is read

@pytest.mark.parametrize(
    "writer, message",
    [(not_an_image, "cannot read the image: UnidentifiedImageError"),
     (truncated_png(W, H), "cannot read the image: OSError: .*truncated"),
     (png(W + 16, H), r"the file is 80x48 \(width x height\), its dataset's width/height say 64x48")],
    ids=["corrupt", "truncated", "size_mismatch"],
)
def test_bad_image(coco, package_log, writer, message):
    name, image_id = dataset_with(coco, writer)
    dicts = checked_dataset_dicts(name)
    for is_train in (True, False):
        with pytest.raises(BadImageError, match=rf"{where(image_id)}: {message}"):
            mapper(is_train)(dicts[1])
    skipping = mapper(bad_images="skip")
    assert skipping(dicts[1]) is None
    assert re.search(rf"skipped {where(image_id)}: {message}.* \(bad_images='skip'; 1 skipped by this process\)",
                     package_log.text)
    with pytest.raises(ValueError, match="bad_images='skip' is for training"):
        mapper(False, bad_images="skip")


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_four_channel_images_are_converted(coco, package_log, mode):
    name, image_id = dataset_with(coco, png(W, H, mode=mode))
    record = checked_dataset_dicts(name)[1]
    m = mapper()
    for _ in range(2):
        out = m(record)
        assert out["image"].shape[0] == 3 and len(out["instances"]) == 1
    lines = [r.getMessage() for r in package_log.records if "converted" in r.getMessage()]
    assert len(lines) == 1 and re.search(rf"{where(image_id)}: converted from PIL mode '{mode}' to RGB", lines[0])


@pytest.mark.parametrize("width, height", [(6000, 4000), (8, 8)])
def test_huge_and_tiny_images(coco, width, height):
    name, image_id = dataset_with(coco, flat_png(width, height), width, height, boxes=[(1, 2, 4, 3)])
    record = checked_dataset_dicts(name)[1]
    out = mapper()(record)
    assert min(out["image"].shape[1:]) in (40, 48) and len(out["instances"]) == 1
    assert tuple(mapper(False)(record)["image"].shape[1:]) in ((48, 72), (48, 48))


# ---- training and evaluation through everything that is not an error

def tiny_model():
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / "detr.py"))
    cfg.model.transformer.update(d_model=32, dim_feedforward=64, num_encoder_layers=1, num_decoder_layers=1)
    cfg.model.num_queries = 5
    cfg.model.criterion.num_classes = 2
    torch.manual_seed(0)
    return instantiate(cfg.model)


def tolerated_cases(coco, training: bool):
    coco.image(png(W, H), W, H, [GOOD_BOX])
    coco.image(png(W, H, mode="L"), W, H, [GOOD_BOX])
    coco.image(png(W, H, mode="RGBA"), W, H, [GOOD_BOX, (60, 40, 10, 10)])  # partly outside
    coco.image(flat_png(6000, 4000), 6000, 4000, [(100, 200, 3000, 1000)])
    coco.image(flat_png(8, 8), 8, 8, [(1, 1, 5, 5), (3, 3, 0, 2)])  # zero area
    coco.image(png(W, H, seed=3), W, H, [])
    coco.image(png(W, H, seed=4), W, H, [(70, 50, 4, 4)], category_id=2)  # wholly outside
    if training:
        coco.image(None, W, H, [GOOD_BOX])
        coco.image(not_an_image, W, H, [GOOD_BOX])
        coco.image(truncated_png(W, H), W, H, [GOOD_BOX])
        coco.image(png(W, H, seed=5), W, H, [GOOD_BOX, (1, float("nan"), 2, 2)])
    return coco.register()


@pytest.mark.slow
def test_training_runs_through_the_tolerated_cases(coco, package_log):
    name = tolerated_cases(coco, training=True)
    dataset = checked_dataset_dicts(name, missing_images="skip", bad_annotations="skip")
    assert len(dataset) == 10
    loader = TrainLoader(dataset, mapper=mapper(bad_images="skip"), total_batch_size=2, seed=0)
    model = tiny_model().train()
    seen = set()
    with EventStorage():
        for _, batch in zip(range(12), loader):
            seen.update(d["image_id"] for d in batch)
            losses = model(batch)
            assert all(torch.isfinite(v) for v in losses.values()), losses
            sum(losses.values()).backward()
    # every readable image was trained on; the two unreadable ones were skipped, each named with a count
    assert seen == {1, 2, 3, 4, 5, 6, 7, 11}
    assert len(re.findall(r"skipped image_id=(9|10) .*cannot read the image", package_log.text)) >= 2


def test_evaluation_runs_through_the_tolerated_cases(coco, tmp_path):
    name = tolerated_cases(coco, training=False)
    loader = build_detection_test_loader(
        dataset=checked_dataset_dicts(name, evaluation=True), mapper=mapper(is_train=False), num_workers=0
    )
    model = tiny_model().eval()
    results = inference_on_dataset(model, loader, COCOEvaluator(name, output_dir=str(tmp_path)))
    assert np.isfinite(results["bbox"]["AP"]) and np.isfinite(results["bbox"]["AP50"])

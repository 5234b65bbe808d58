"""Malformed COCO-format jsons, each built in a temporary folder and registered with Detectron2's
register_coco_instances, loaded through `checked_dataset_dicts` as the data configs load them: each is refused
with an error naming the dataset, its json, the entry and the field, or follows its policy with a count in the
log; the legitimate variants of a labelling tool's export (1-based or sparse category ids, absolute or
non-ASCII file names) load right. None trains silently on wrong data."""
import json
import os
import re

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from coco_builder import CocoBuilder, png  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.data import detection_utils  # noqa: E402
from PIL import Image  # noqa: E402

from sam_detr.data import DatasetError, DetrDatasetMapper, checked_dataset_dicts  # noqa: E402
from sam_detr.data.image_checks import image_header  # noqa: E402

W, H = 64, 48
GOOD_BOX = (8, 6, 20, 16)


@pytest.fixture
def coco(tmp_path):
    builder = CocoBuilder(tmp_path)
    for seed in range(3):  # three good images, ids 1..3, files 001.png..003.png, annotations 1..3
        builder.image(png(W, H, seed=seed), W, H, [GOOD_BOX], category_id=1 + seed % 2)
    yield builder
    builder.unregister()


def json_file(name):
    return MetadataCatalog.get(name).json_file


def refused(name):
    """The start of the error that refuses dataset `name`: it names the dataset and its json."""
    return rf"dataset '{name}' \(json .*annotations\.json\): "


def annotation_without_bbox(c):
    del c.annotations[1]["bbox"]
    c.annotations[1]["segmentation"] = [[8, 6, 28, 6, 28, 22]]


def same_file_other_size(c):
    c.images.append({"id": 4, "file_name": "002.png", "width": H, "height": W})


# (what a labelling tool's export got wrong, how it is named in the error)
MALFORMED = {
    "duplicate_image_id": (lambda c: c.images[1].update(id=1), r"image id=1: 001\.png and 002\.png share it"),
    "empty_categories": (lambda c: c.categories.clear(), r"'categories' is empty"),
    "category_id_not_an_int": (lambda c: c.categories[1].update(id="2"),
                               r"category id='2' \('disk'\): 'id' must be an integer"),
    "category_without_name": (lambda c: c.categories[1].pop("name"), r"category id=2 \(None\): 'name' must be"),
    "duplicate_category_id": (lambda c: c.categories[1].update(id=1),
                              r"category id=1: categories 'square' and 'disk' share it"),
    "duplicate_category_name": (lambda c: c.categories[1].update(name="square"),
                                r"category name 'square': categories id=1 and id=2 share it"),
    "no_images": (lambda c: (c.images.clear(), c.annotations.clear()), r"annotations\.json: 'images' is empty"),
    "image_without_width": (lambda c: c.images[1].pop("width"),
                            r"image id=2 \(002\.png\): 'width' must be a positive integer, got None"),
    "image_id_a_string": (lambda c: c.images[1].update(id="2"), r"image id='2' \(002\.png\): 'id' must be an integer"),
    "image_without_file_name": (lambda c: c.images[1].pop("file_name"), r"image id=2 \(None\): 'file_name' must be"),
    "same_file_other_size": (same_file_other_size,
                             r"file_name '002\.png': listed as image id=2 \(64x48\) and id=4 \(48x64\)"),
    "annotation_without_category_id": (lambda c: c.annotations[1].pop("category_id"),
                                       r"annotation id=2 \(image_id=2, 002\.png\): no 'category_id' field"),
    "annotation_without_image_id": (lambda c: c.annotations[1].pop("image_id"),
                                    r"annotation id=2 \(image_id=None\): no 'image_id' field"),
    "annotation_id_a_string": (lambda c: c.annotations[1].update(id="a2"),
                               r"annotation id='a2' \(image_id=2, 002\.png\): 'id' must be an integer"),
    "duplicate_annotation_id": (lambda c: c.annotations[1].update(id=1),
                                r"annotation id=1: annotations of image_id=1 and image_id=2 share it"),
    "annotation_of_missing_image": (lambda c: c.annotations[1].update(image_id=99),
                                    r"annotation id=2 \(image_id=99\): image_id 99 is not an image of the json"),
    "zero_based_category_in_one_based_json": (
        lambda c: c.annotations[1].update(category_id=0),
        r"annotation id=2 .*: category_id 0 is not among the categories \[1, 2\]"),
    "bbox_a_number": (lambda c: c.annotations[1].update(bbox=5),
                      r"'bbox' must be 4 numbers \[x, y, width, height\], got 5"),
    "bbox_empty": (lambda c: c.annotations[1].update(bbox=[]), r"'bbox' must be 4 numbers .*got \[\]"),
    "bbox_a_string": (lambda c: c.annotations[1].update(bbox="8,6,20,16"),
                      r"image_id=2 \(.*002\.png\): annotation 0: bbox must be 4 finite numbers, got '8,6,20,16'"),
    "bbox_of_5_numbers": (lambda c: c.annotations[1].update(bbox=[8, 6, 20, 16, 1]), r"bbox must be 4 finite numbers"),
    "bbox_with_nan": (lambda c: c.annotations[1].update(bbox=[8, float("nan"), 20, 16]),
                      r"bbox must be 4 finite numbers, got \[8, nan, 20, 16\]"),
    "iscrowd_2": (lambda c: c.annotations[1].update(iscrowd=2), r"annotation 0: iscrowd must be 0 or 1, got 2"),
    "iscrowd_a_string": (lambda c: c.annotations[1].update(iscrowd="0"), r"iscrowd must be 0 or 1, got '0'"),
    "polygons_only": (annotation_without_bbox, r"no 'bbox' field \(it has a 'segmentation' only"),
    "image_not_an_object": (lambda c: c.images.append(5), r"images\[3\]: not an object: 5"),
    "annotation_not_an_object": (lambda c: c.annotations.insert(0, [1, 2]), r"annotations\[0\]: not an object"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_json_is_refused_naming_the_entry_and_field(coco, case):
    mutate, message = MALFORMED[case]
    mutate(coco)
    name = coco.register()
    for evaluation in (False, True):
        with pytest.raises(DatasetError, match=refused(name)) as error:
            checked_dataset_dicts(name, evaluation=evaluation)
        assert re.search(message, str(error.value)), str(error.value)


def test_duplicate_image_id_is_not_merged(coco):
    """pycocotools indexes images by id: the second image would take the first one's annotations."""
    coco.images[1]["id"] = 1
    name = coco.register()
    with pytest.raises(DatasetError, match=rf"{refused(name)}image id=1: 001\.png and 002\.png share it"):
        checked_dataset_dicts(name, bad_annotations="skip", missing_images="skip")


def test_every_problem_in_one_error(coco):
    """The error lists every problem the policies refuse, not only the first, and how many of each."""
    for i in range(3):
        coco.image(png(W, H), W, H, [(1, 2, 3, float("nan"))])
    coco.image(None, W, H, [GOOD_BOX])
    name = coco.register()
    with pytest.raises(DatasetError) as error:
        checked_dataset_dicts(name)
    message = str(error.value)
    assert re.search(r"\[and 3 more problem\(s\), listed below\]", message)
    assert re.search(r"1 missing image file\(s\); missing_images='error':\n  image_id=7 ", message)
    assert re.search(r"3 invalid annotation\(s\); bad_annotations='error':\n  image_id=4 .*\n  image_id=5 .*\n  "
                     r"image_id=6", message)


def test_json_that_is_not_json(coco):
    name = coco.register()
    with open(json_file(name), "w") as f:
        f.write('{"images": [')
    with pytest.raises(DatasetError, match=rf"{refused(name)}.*annotations\.json: not valid JSON: JSONDecodeError"):
        checked_dataset_dicts(name)


def test_json_that_does_not_exist(coco):
    """A path to fix, not bad data: FileNotFoundError, as a missing checkpoint or config is."""
    name = coco.register()
    os.remove(json_file(name))
    with pytest.raises(FileNotFoundError, match=rf"dataset '{name}': its json .*annotations\.json does not exist"):
        checked_dataset_dicts(name)


def test_json_without_annotations_is_not_background(coco):
    """A json without 'annotations' would train every image as background."""
    name = coco.register()
    with open(json_file(name)) as f:
        content = json.load(f)
    del content["annotations"]
    with open(json_file(name), "w") as f:
        json.dump(content, f)
    with pytest.raises(DatasetError, match=r"annotations\.json: no list 'annotations' \(absent\)"):
        checked_dataset_dicts(name)


def test_empty_dataset_names_it_and_why(coco):
    coco.images.clear()
    coco.annotations.clear()
    name = coco.register()
    with pytest.raises(DatasetError, match=rf"{refused(name)}.*annotations\.json: 'images' is empty"):
        checked_dataset_dicts(name)


def test_no_image_left_after_the_policies(tmp_path):
    coco = CocoBuilder(tmp_path)
    coco.image(None, W, H, [GOOD_BOX])
    coco.image(None, W, H, [GOOD_BOX])
    name = coco.register()
    try:
        with pytest.raises(DatasetError, match=rf"{refused(name)}{name}: all 2 image\(s\) were skipped; 2 missing "
                                               r"image file\(s\) skipped \(missing_images='skip'\)"):
            checked_dataset_dicts(name, missing_images="skip")
    finally:
        coco.unregister()


def test_annotations_of_missing_images_skipped_by_policy(coco, package_log):
    coco.annotations[1]["image_id"] = 99
    coco.annotations[2]["image_id"] = 98
    name = coco.register()
    dicts = checked_dataset_dicts(name, bad_annotations="skip")
    assert [len(d["annotations"]) for d in dicts] == [1, 0, 0]
    assert re.search(r"skipped 1 annotation\(s\) whose image_id is not an image of the json: annotation id=2 "
                     r"\(image_id=99\): image_id 99 is not an image of the json", package_log.text)
    assert "skipped 2 annotation(s) whose image_id is not an image of the json in 2 annotation(s) in all" in (
        package_log.text)


def test_iscrowd_2_is_skipped_by_policy_not_taken_for_a_crowd(coco, package_log):
    coco.annotations[1]["iscrowd"] = 2
    name = coco.register()
    dicts = checked_dataset_dicts(name, bad_annotations="skip")
    assert [len(d["annotations"]) for d in dicts] == [1, 0, 1]
    assert re.search(r"skipped 1 invalid annotation\(s\) in image_id=2 .*iscrowd must be 0 or 1, got 2",
                     package_log.text)
    # the mapper, given such an annotation by another path, refuses it too
    record = dict(dicts[1], annotations=[dict(dicts[0]["annotations"][0], iscrowd=2)])
    with pytest.raises(ValueError, match="iscrowd must be 0 or 1, got 2"):
        DetrDatasetMapper(is_train=True, augmentations=[])(record)


def test_missing_area_is_refused_in_evaluation_only(coco):
    """COCOEvaluator reads each annotation's area; training does not."""
    del coco.annotations[1]["area"]
    name = coco.register()
    assert len(checked_dataset_dicts(name)) == 3
    with pytest.raises(DatasetError, match=r"annotation id=2 \(image_id=2, 002\.png\): 'area' must be a finite number"):
        checked_dataset_dicts(name, evaluation=True)


@pytest.mark.parametrize("ids", [(1, 2), (0, 1), (3, 7)], ids=["one_based", "zero_based", "sparse"])
def test_category_ids_are_mapped_to_classes_in_id_order(coco, package_log, ids):
    """Any integer ids are legitimate: the classes are the categories in id order (what COCOEvaluator maps back)."""
    coco.categories[:] = [{"id": ids[1], "name": "disk"}, {"id": ids[0], "name": "square"}]  # listed out of order
    for anno in coco.annotations:
        anno["category_id"] = ids[anno["category_id"] - 1]
    name = coco.register()
    dicts = checked_dataset_dicts(name)
    assert MetadataCatalog.get(name).thing_classes == ["square", "disk"]
    assert [d["annotations"][0]["category_id"] for d in dicts] == [0, 1, 0]
    note = re.search(r"category ids other than 0\.\.K-1: mapped to classes 0\.\.K-1 in id order.*", package_log.text)
    if ids == (0, 1):
        assert note is None
    else:
        assert note and f"ids [{ids[0]}, {ids[1]}] are classes 0..1" in note.group()


def test_xyxy_boxes_are_a_warning_with_a_count(coco, package_log):
    """Corners (x0, y0, x1, y1) written as COCO's (x, y, w, h) still look valid one by one; the pattern gives them
    away (see dataset_checks.py): a warning with a count, the data is not refused."""
    corners = [(8, 6, 28, 22), (30, 20, 60, 44), (40, 2, 63, 30), (2, 10, 50, 47), (36, 30, 62, 46)]
    coco.annotations.clear()
    for i, (x0, y0, x1, y1) in enumerate(corners):
        coco.annotation(1 + i % 3, (x0, y0, x1, y1))
    name = coco.register()
    dicts = checked_dataset_dicts(name)
    assert sum(len(d["annotations"]) for d in dicts) == 5
    assert re.search(r"found 4 box\(es\) that look like \(x0, y0, x1, y1\), not COCO's \(x, y, width, height\) in 3 "
                     r"image\(s\) in all", package_log.text)
    assert re.search(r"image_id=2 \(.*\): annotation 0: bbox \[30, 20, 60, 44\] reaches \(90, 64\) past the 64x48 "
                     r"image; as \(x0, y0, x1, y1\) it lies inside", package_log.text)
    # the same boxes as (x, y, w, h) of their corners: no warning
    package_log.clear()
    coco.annotations.clear()
    for i, (x0, y0, x1, y1) in enumerate(corners):
        coco.annotation(1 + i % 3, (x0, y0, x1 - x0, y1 - y0))
    checked_dataset_dicts(coco.register())
    assert "look like (x0, y0, x1, y1)" not in package_log.text


def test_absolute_file_name(coco, tmp_path):
    """An absolute file_name is used as it is (image_root does not apply): it works where the file exists, and
    the error names the path where it does not."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    png(W, H, seed=9)(elsewhere / "abs.png")
    coco.images[1]["file_name"] = str(elsewhere / "abs.png")
    coco.images[2]["file_name"] = str(elsewhere / "gone.png")
    name = coco.register()
    with pytest.raises(DatasetError, match=rf"image_id=3 \({re.escape(str(elsewhere / 'gone.png'))}\): the image file "
                                           "does not exist"):
        checked_dataset_dicts(name)
    dicts = checked_dataset_dicts(name, missing_images="skip")
    assert [d["file_name"] for d in dicts][1] == str(elsewhere / "abs.png")
    assert len(DetrDatasetMapper(is_train=True, augmentations=[])(dicts[1])["instances"]) == 1


def test_non_ascii_file_names(coco):
    coco.writers = {"Bild_Straße_東京_é.png" if f == "002.png" else f: w for f, w in coco.writers.items()}
    coco.images[1]["file_name"] = "Bild_Straße_東京_é.png"
    name = coco.register()
    dicts = checked_dataset_dicts(name)
    assert dicts[1]["file_name"].endswith("Bild_Straße_東京_é.png")
    assert len(DetrDatasetMapper(is_train=True, augmentations=[])(dicts[1])["instances"]) == 1


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_header_size_follows_exif_orientation_as_detectron2(tmp_path, orientation):
    """The tool reads the size from the header; Detectron2's read_image transposes by the EXIF orientation."""
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(path, exif=exif.tobytes())
    height, width = detection_utils.read_image(str(path), format="RGB").shape[:2]
    assert image_header(str(path)) == (width, height, "RGB")
    assert (width, height) == ((30, 40) if orientation in (6, 8) else (40, 30))

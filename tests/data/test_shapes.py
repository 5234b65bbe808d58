"""The embedded synthetic dataset: determinism, content, registration, atomic generation, evaluation."""
import collections
import hashlib
import json
import multiprocessing
import os

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from PIL import Image  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from coco_eval_utils import evaluate_ground_truth_as_predictions  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.utils.file_io import PathManager  # noqa: E402

from sam_detr.data.datasets import (  # noqa: E402
    SHAPES_CLASSES,
    SHAPES_SPLITS,
    ShapesSpec,
    datasets_root,
    ensure_shapes,
    render_shapes_image,
    write_shapes,
)

# sha256 of the first 8 images (pixels and shape) and of their objects: the same on every machine
PINNED = {
    "shapes_train": (
        "5d4c74fa898a854cbfb07f09a9c3cc0fbe5c1f977a69635a0d8ec5e38cbc188f",
        "c39a00a8072be8fd03cdf42fd39ef908ead5917272470fba8125c3f59b850983",
    ),
    "shapes_val": (
        "73fbeac469e21e294421af0fae925a7bf191d453d8bc29c64e19583d5e027239",
        "389279e4eb83f38e817b76b4c718648ab7ac687b17e464db41f4beb605ca9e16",
    ),
}


@pytest.fixture(scope="module")
def fresh_root(tmp_path_factory):
    """A new, empty dataset cache for this module, so that generation is tested and $HOME untouched."""
    root = tmp_path_factory.mktemp("datasets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAM_DETR_DATASETS", str(root))
        yield root


@pytest.fixture(scope="module")
def val_dicts(fresh_root):
    return DatasetCatalog.get("shapes_val")


def test_registration_is_lazy(fresh_root):
    assert {"shapes_train", "shapes_val"} <= set(DatasetCatalog.list())
    assert datasets_root() == str(fresh_root)
    for name in ("shapes_train", "shapes_val"):
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(SHAPES_CLASSES) and meta.evaluator_type == "coco"
        assert meta.json_file == f"sam_detr-shapes://{name}"
        assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(len(SHAPES_CLASSES))}
    assert not os.listdir(fresh_root)  # registering generated nothing


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pixels_pinned(name):
    pixels, objects = hashlib.sha256(), []
    for index in range(8):
        image, objs = render_shapes_image(SHAPES_SPLITS[name], index)
        pixels.update(np.ascontiguousarray(image).tobytes())
        pixels.update(str(image.shape).encode())
        objects.append(objs)
    assert (pixels.hexdigest(), hashlib.sha256(json.dumps(objects).encode()).hexdigest()) == PINNED[name]


def test_generation_is_deterministic(tmp_path):
    spec = ShapesSpec(num_images=12, seed=0)
    write_shapes(spec, tmp_path / "a")
    write_shapes(spec, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 13
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    # an image depends on its index and the seed only, not on the size of the dataset
    for index in range(12):
        image, _ = render_shapes_image(SHAPES_SPLITS["shapes_train"], index)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "images" / f"{index + 1:06d}.png")), image)
    assert not np.array_equal(render_shapes_image(spec, 0)[0][:128, :128], render_shapes_image(spec, 1)[0][:128, :128])


def test_val_content(val_dicts):
    spec = SHAPES_SPLITS["shapes_val"]
    assert len(val_dicts) == spec.num_images == 200
    classes, counts, widths = collections.Counter(), collections.Counter(), set()
    occluded = 0
    for d in val_dicts[:50]:
        # the json's sizes are the files' sizes
        assert Image.open(d["file_name"]).size == (d["width"], d["height"])
    for d in val_dicts:
        h, w = d["height"], d["width"]
        assert 128 <= h <= 192 and 128 <= w <= 192
        widths.add(w % 2)
        counts[len(d["annotations"])] += 1
        short = min(h, w)
        for a in d["annotations"]:
            x, y, bw, bh = a["bbox"]
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
            lo, hi = (round(f * short) for f in spec.object_size)
            assert lo - 2 <= bw <= hi  # a diamond may lose its tips
            assert a["iscrowd"] == 0
            classes[a["category_id"]] += 1
        boxes = [a["bbox"] for a in d["annotations"]]
        occluded += any(
            _intersection(a, b) > 0.2 * min(a[2] * a[3], b[2] * b[3]) for i, a in enumerate(boxes) for b in boxes[:i]
        )
    assert widths == {0, 1}  # odd and even sizes
    assert set(classes) == set(range(len(SHAPES_CLASSES)))
    assert min(classes.values()) > 100
    assert set(counts) <= set(range(1, 7)) and counts[1] > 0 and counts[5] + counts[6] > 20
    # overlapping objects in many images
    assert occluded > 0.25 * len(val_dicts), occluded
    # objects of several sizes, small ones included: COCO's sizes (COCOEvaluator's APs, APm) by the json's area
    with open(PathManager.get_local_path(MetadataCatalog.get("shapes_val").json_file)) as f:
        sizes = collections.Counter(
            "small" if a["area"] < 32**2 else "medium" if a["area"] < 96**2 else "large"
            for a in json.load(f)["annotations"]
        )
    total = sum(sizes.values())
    assert sizes["small"] > 0.25 * total and sizes["medium"] > 0.25 * total, sizes


def _intersection(a, b) -> int:
    """The area of the intersection of two XYWH boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(iw, 0) * max(ih, 0)


def test_json_valid_for_pycocotools(val_dicts):
    coco = COCO(PathManager.get_local_path(MetadataCatalog.get("shapes_val").json_file))
    assert coco.getCatIds() == [1, 2, 3, 4, 5]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES_CLASSES)
    assert len(coco.getImgIds()) == 200
    assert len(coco.getAnnIds()) == sum(len(d["annotations"]) for d in val_dicts)
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[val_dicts[0]["image_id"]]))[0]
    assert 0 < ann["area"] <= ann["bbox"][2] * ann["bbox"][3]


def _ensure(args):
    spec, root = args
    return ensure_shapes(spec, root)


def test_concurrent_generation_is_atomic(tmp_path):
    spec = ShapesSpec(num_images=30, seed=5)
    with multiprocessing.get_context("fork").Pool(3) as pool:
        directories = pool.map(_ensure, [(spec, str(tmp_path))] * 3)
    assert len(set(directories)) == 1
    assert os.listdir(tmp_path) == [spec.dirname]  # no temporary directory left behind
    annotations = os.path.join(directories[0], "annotations.json")
    assert len(json.load(open(annotations))["images"]) == 30
    assert len(os.listdir(os.path.join(directories[0], "images"))) == 30
    mtime = os.stat(annotations).st_mtime_ns
    assert ensure_shapes(spec, str(tmp_path)) == directories[0]
    assert os.stat(annotations).st_mtime_ns == mtime  # found, not generated again


def test_spec_changes_change_the_directory():
    base = ShapesSpec(num_images=10, seed=0)
    assert ShapesSpec(num_images=10, seed=0).dirname == base.dirname
    others = [ShapesSpec(num_images=10, seed=1), ShapesSpec(num_images=10, seed=0, num_objects=(1, 3))]
    assert len({base.dirname} | {s.dirname for s in others}) == 3
    with pytest.raises(ValueError, match="object_size"):
        ShapesSpec(num_images=10, seed=0, object_size=(0.5, 1.5))


def test_coco_evaluator_generates_json_in_a_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM_DETR_DATASETS", str(tmp_path))
    # built before anything loaded the dataset: the evaluator reads json_file at construction
    COCOEvaluator("shapes_val", tasks=("bbox",), distributed=False)
    (directory,) = os.listdir(tmp_path)
    assert os.path.isfile(tmp_path / directory / "annotations.json")

    dicts = DatasetCatalog.get("shapes_val")
    assert all(d["file_name"].startswith(str(tmp_path)) for d in dicts)
    assert evaluate_ground_truth_as_predictions("shapes_val", dicts)["AP"] == pytest.approx(100.0)
    # and it is not trivially 100: with every class wrong, nothing is detected
    assert evaluate_ground_truth_as_predictions("shapes_val", dicts, class_offset=1)["AP"] == pytest.approx(0.0)

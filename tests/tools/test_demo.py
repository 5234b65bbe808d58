"""tools/demo.py on images of the shapes dataset, with a tiny randomly initialised DETR."""
import json

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from PIL import Image  # noqa: E402
from tool_helpers import (  # noqa: E402
    QUICKSTART, TINY_DETR, TINY_NUM_QUERIES, datasets_root, load_tool, save_tiny_detr,
)

from sam_detr.data.datasets import SHAPES_SPLITS, ensure_shapes  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The folder of shapes_val's images."""
    return ensure_shapes(SHAPES_SPLITS["shapes_val"], str(datasets_root(tmp_path_factory))) + "/images"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_detr(tmp_path_factory.mktemp("checkpoint"))


def test_demo_draws_and_writes_detections(demo, images, checkpoint, tmp_path):
    inputs = [f"{images}/000001.png", f"{images}/000002.png"]
    demo([
        "--config-file", QUICKSTART, "--checkpoint", checkpoint, "--input", f"{images}/00000[12].png",
        "--output", str(tmp_path / "vis"), "--json", str(tmp_path / "detections.json"), "--score-threshold", "0",
        *TINY_DETR,
    ])
    for path in inputs:
        original = np.asarray(Image.open(path).convert("RGB"))
        drawing = np.asarray(Image.open(tmp_path / "vis" / path.rsplit("/", 1)[1]))
        assert drawing.shape == original.shape and (drawing != original).any()

    detections = json.loads((tmp_path / "detections.json").read_text())
    # a score threshold of 0 keeps every query of an untrained DETR
    assert len(detections) == len(inputs) * TINY_NUM_QUERIES
    assert {d["file_name"] for d in detections} == set(inputs)
    for d in detections:
        assert d["category_id"] in {1, 2, 3, 4, 5}  # shapes' dataset ids, the model's + 1
        x, y, w, h = d["bbox"]
        assert w >= 0 and h >= 0 and 0 <= d["score"] <= 1


@pytest.fixture
def demo(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    return load_tool("demo").main


def test_no_image_matched(demo, tmp_path, capsys):
    with pytest.raises(SystemExit):
        demo(["--input", str(tmp_path / "*.jpg"), "--config-file", QUICKSTART, *TINY_DETR])
    assert f"--input {tmp_path}/*.jpg: no image file, folder of images or matching file" in capsys.readouterr().err


def test_an_override_after_input_is_not_taken_for_an_image(demo, images, capsys):
    with pytest.raises(SystemExit):
        demo(["--config-file", QUICKSTART, "--input", f"{images}/000001.png", "model.num_queries=3"])
    assert "--input model.num_queries=3: no image file" in capsys.readouterr().err


def test_several_images_need_an_output_folder(demo, images, capsys):
    with pytest.raises(SystemExit):
        demo(["--input", images, "--config-file", QUICKSTART, *TINY_DETR])
    assert "--output must name a folder to draw 200 images" in capsys.readouterr().err


def test_missing_checkpoint(demo, images, tmp_path, capsys):
    with pytest.raises(SystemExit):
        demo(["--input", f"{images}/000001.png", "--config-file", QUICKSTART,
              "--checkpoint", str(tmp_path / "missing.pth"), *TINY_DETR])
    assert f"--checkpoint {tmp_path}/missing.pth: no such file" in capsys.readouterr().err


def test_unreadable_image_is_named(demo, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit):
        demo(["--input", str(tmp_path / "broken.png"), "--config-file", QUICKSTART, *TINY_DETR])
    assert f"error: cannot read image {tmp_path}/broken.png" in capsys.readouterr().err

"""tools/eval_batch_invariance.py (in this process) with a tiny randomly initialised DETR on three odd-sized
images in COCO format: with batch_invariant an image's detections are the same at batch 1 and batch 3, the
table is printed."""
import json

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from PIL import Image  # noqa: E402
from tool_helpers import QUICKSTART, TINY_DETR, datasets_root, load_tool, save_tiny_detr  # noqa: E402

# (height, width): three aspect ratios, so that every batch of them is padded
SIZES = [(45, 67), (70, 53), (61, 61)]


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    """Three noise images of odd sizes with one or two boxes each, as a COCO json and an image folder."""
    root = tmp_path_factory.mktemp("odd_coco")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i, (h, w) in enumerate(SIZES, start=1):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        for j in range(1 + i % 2):
            box = [3.0 + 5 * j, 4.0, w / 2, h / 3]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": 1 + j, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    # as many classes as the quickstart model predicts
    categories = [{"id": k, "name": str(k)} for k in range(1, 6)]
    (root / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_detr(tmp_path_factory.mktemp("checkpoint"))


def test_invariant_mode_detects_the_same_at_batch_1_and_3(coco_folder, checkpoint, tmp_path, tmp_path_factory,
                                                          monkeypatch, capsys):
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    load_tool("eval_batch_invariance").main([
        "--config-file", QUICKSTART, "--checkpoint", checkpoint, "--batch-size", "3",
        "--coco-json", str(coco_folder / "instances.json"), "--image-root", str(coco_folder / "images"),
        "--topk", "5", "--json", str(tmp_path / "figures.json"), *TINY_DETR,
    ])
    out = capsys.readouterr().out
    table = out[out.index("| mode |"):].splitlines()
    assert table[0].startswith("| mode | AP b1 | AP b3 | AP change |")
    assert table[2].startswith("| official (batch_invariant=False) |")
    assert table[3].startswith("| batch_invariant=True |")

    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["images"] == len(SIZES)
    official, invariant = figures["rows"]
    assert not official["batch_invariant"] and invariant["batch_invariant"]
    # the padding of the batch moves the official detections, so the comparison is not vacuous ...
    assert official["max_score_diff"] > 1e-4 or official["max_box_diff_px"] > 1e-2
    # ... and leaves those of the batch-invariant mode where they are
    assert invariant["max_score_diff"] < 1e-4 and invariant["max_box_diff_px"] < 1e-2
    assert invariant["same_topk"] == 1.0
    assert invariant["AP"]["1"] == pytest.approx(invariant["AP"]["3"], abs=1e-6)
    for row in figures["rows"]:
        assert all(seconds > 0 for seconds in row["cpu_seconds_per_image"].values())

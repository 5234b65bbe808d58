"""tools/visualize.py with a tiny randomly initialised quickstart DETR: pictures of dataset images and of image
files, and one-line errors for what has no picture."""
import re

import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from PIL import Image  # noqa: E402
from tool_helpers import (  # noqa: E402
    QUICKSTART, TINY_DETR, save_tiny_detr, tool_main_in_process,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_detr(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture
def visualize(tmp_path_factory, monkeypatch):
    yield from tool_main_in_process("visualize", tmp_path_factory, monkeypatch)


def test_pictures_of_dataset_images_and_files(visualize, checkpoint, tmp_path):
    common = ["--config-file", QUICKSTART, "--checkpoint", checkpoint, "--score-threshold", "0", "--topk", "2"]
    visualize([*common, "--dataset", "shapes_val", "--image-id", "2", "5", "--output", str(tmp_path / "vis"),
               *TINY_DETR])
    pictures = sorted(p.name for p in (tmp_path / "vis").iterdir())
    assert pictures == ["shapes_val_2.png", "shapes_val_5.png"]
    Image.new("RGB", (90, 70), (200, 30, 30)).save(tmp_path / "red.jpg")
    visualize([*common, "--input", str(tmp_path / "red.jpg"), "--output", str(tmp_path / "files"),
               "--per-detection", "--per-head", "--colors", "32", *TINY_DETR])
    for name in ("red_0.png", "red_1.png"):
        picture = Image.open(tmp_path / "files" / name)
        assert picture.mode == "P" and len(picture.getcolors()) <= 32  # reduced to --colors


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--layer", "1"], r"--layer 1: DETR's decoder has layers 0..0 \(or -1 for the last\)"),
        (["--layer", "-2"], r"--layer -2: DETR's decoder has layers 0..0"),
        (["--topk", "0"], r"--topk must be at least 1, got 0"),
        (["--colors", "300"], r"--colors must be in 0..256"),
        (["--image-id", "3"], r"--image-id needs --dataset"),
    ],
)
def test_bad_option_is_one_line(visualize, checkpoint, tmp_path, capsys, argv, message):
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 30)).save(image)
    with pytest.raises(SystemExit) as exit_:
        visualize(["--config-file", QUICKSTART, "--checkpoint", checkpoint, "--input", str(image), *argv,
                   "--output", str(tmp_path), *TINY_DETR])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert re.search(r"^\S+: error: " + message, err.strip().splitlines()[-1]), err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "nowhere"], r"--dataset nowhere: not a registered dataset"),
        (["--dataset", "shapes_val", "--image-id", "0"], r"--dataset shapes_val has no image with image_id 0"),
    ],
)
def test_bad_dataset_image_is_one_line(visualize, checkpoint, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        visualize(["--config-file", QUICKSTART, "--checkpoint", checkpoint, *argv, "--output", str(tmp_path),
                   *TINY_DETR])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and re.search(r"^\S+: error: " + message, err), err


def test_no_detection_scoring_enough(visualize, checkpoint, tmp_path, capsys):
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 30)).save(image)
    with pytest.raises(SystemExit) as exit_:
        visualize(["--config-file", QUICKSTART, "--checkpoint", checkpoint, "--input", str(image), "--output",
                   str(tmp_path / "out"), "--score-threshold", "1", *TINY_DETR])
    assert exit_.value.code == 1
    assert ": no detection scores >= 1.0 in 1 image(s): lower --score-threshold" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# a model of no method: its decoder's layers are plain Linear layers, which have no picture
NO_PICTURE_CONFIG = """
from detectron2.config import LazyCall as L, LazyConfig
from torch import nn

_quickstart = LazyConfig.load({quickstart!r})
dataloader, train = _quickstart.dataloader, _quickstart.train
train.init_checkpoint = ""


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4)])


class NoMethod(nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = Decoder()


model = L(NoMethod)()
"""


def test_a_model_without_picture_is_one_line(visualize, tmp_path, capsys):
    config = tmp_path / "no_method.py"
    config.write_text(NO_PICTURE_CONFIG.format(quickstart=QUICKSTART))
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 30)).save(image)
    with pytest.raises(SystemExit) as exit_:
        visualize(["--config-file", str(config), "--input", str(image), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "error: NoMethod: no picture for decoder layers of type Linear (pictures exist: " in err, err
    assert not (tmp_path / "out").exists()

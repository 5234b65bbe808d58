"""tools/make_gallery.py with a tiny quickstart DETR as the race's checkpoint: a picture per method and one
of the COCO image; a missing checkpoint stops it before any picture, naming the file and the race command."""
import shutil

import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from PIL import Image  # noqa: E402
from tool_helpers import QUICKSTART, TINY_DETR, save_tiny_detr, tool_main_in_process  # noqa: E402


@pytest.fixture
def make_gallery(tmp_path_factory, monkeypatch):
    yield from tool_main_in_process("make_gallery", tmp_path_factory, monkeypatch)


@pytest.fixture
def runs(tmp_path):
    """A race folder with the tiny DETR as detr/model_final.pth."""
    (tmp_path / "race" / "detr").mkdir(parents=True)
    shutil.move(save_tiny_detr(tmp_path), tmp_path / "race" / "detr" / "model_final.pth")
    return tmp_path / "race"


def test_a_picture_per_method_and_of_the_coco_image(make_gallery, runs, tmp_path):
    Image.new("RGB", (80, 60), (30, 90, 200)).save(tmp_path / "photo.jpg")
    make_gallery(["--runs", str(runs), "--methods", "detr", "--image-id", "2", "--output", str(tmp_path / "gallery"),
                  "--coco-image", str(tmp_path / "photo.jpg"), "--coco-config", QUICKSTART, "--colors", "16",
                  *TINY_DETR])
    assert sorted(p.name for p in (tmp_path / "gallery").iterdir()) == ["coco_detr.png", "detr.png"]
    for name in ("coco_detr.png", "detr.png"):
        picture = Image.open(tmp_path / "gallery" / name)
        assert picture.mode == "P" and len(picture.getcolors()) <= 16


def test_missing_checkpoint_stops_before_any_picture(make_gallery, runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        make_gallery(["--runs", str(runs), "--methods", "detr", "sam_detr", "--output", str(tmp_path / "gallery"),
                      *TINY_DETR])
    assert exit_.value.code == 2
    missing = runs / "sam_detr" / "model_final.pth"
    assert (f"error: {missing}: no such file (the race trains it: python tools/race.py --methods sam_detr "
            f"--output {runs})") in capsys.readouterr().err
    assert not (tmp_path / "gallery").exists()

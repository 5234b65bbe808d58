"""tools/check_dataset.py: one report of every problem of a dataset, grouped by kind with counts and the first
ids, the class histogram, and an exit status that says whether training would refuse the data."""
import re
import subprocess
import sys

import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from coco_builder import CocoBuilder, flat_png, not_an_image, png, truncated_png  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from tool_helpers import QUICKSTART, load_tool, tool_env  # noqa: E402

W, H = 64, 48
GOOD_BOX = (8, 6, 20, 16)
check_dataset = load_tool("check_dataset")


@pytest.fixture
def coco(tmp_path):
    builder = CocoBuilder(tmp_path)
    builder.image(png(W, H), W, H, [GOOD_BOX])
    yield builder
    builder.unregister()


def run(capsys, *argv):
    status = check_dataset.main([*argv, "--no-progress", "--workers", "3"])
    return status, capsys.readouterr().out


def section(report: str, heading: str) -> str:
    """The lines of a report's section, from its heading to the next blank line."""
    match = re.search(rf"^{re.escape(heading)}.*?(?=\n\n|\Z)", report, re.S | re.M)
    assert match, f"no section {heading!r} in:\n{report}"
    return match.group()


def test_every_problem_of_a_json_at_once(coco, capsys):
    """A json that Detectron2 could not load as it is: the report lists its json problems and, from the json's
    own entries, those of its files and boxes, each with its count and ids."""
    coco.image(png(W, H, seed=1), W, H, [GOOD_BOX])  # id 2, then shares its id with image 3
    coco.image(png(W, H, seed=2), W, H, [GOOD_BOX])
    coco.images[2]["id"] = coco.annotations[2]["image_id"] = 2
    coco.image(None, W, H, [GOOD_BOX])  # 4: missing
    coco.image(not_an_image, W, H, [GOOD_BOX])  # 5: corrupt
    coco.image(png(W + 8, H, seed=3), W, H, [GOOD_BOX])  # 6: its size is not the json's
    coco.image(png(W, H, seed=4), W, H, [GOOD_BOX, (1, float("nan"), 2, 2), (3, 3, 0, 5), (50, 40, 30, 20)])  # 7
    coco.annotation(7, GOOD_BOX)
    coco.annotations[-1].update(iscrowd=2)
    coco.annotation(99, GOOD_BOX)  # orphan
    coco.annotation(1, GOOD_BOX, category_id=5)  # unknown category
    coco.annotation(1, GOOD_BOX)
    coco.annotations[-1]["id"] = 1  # duplicate annotation id
    name = coco.register()
    status, report = run(capsys, "--dataset", name)
    assert status == 1
    assert "from the json's entries that passed (Detectron2 cannot load the json as it is)" in report
    errors = section(report, "Errors (refused under these policies):")
    expected = [
        r"1 image ids shared by several images\n      image id=2: 002\.png and 003\.png share it",
        r"1 annotation ids shared by several annotations\n      annotation id=1: annotations of image_id=1 and "
        r"image_id=1 share it",
        r"1 annotations of a category not in 'categories'\n      annotation id=\d+ \(image_id=1, 001\.png\): "
        r"category_id 5 is not among the categories \[1, 2\]",
        r"1 annotation\(s\) whose image_id is not an image of the json \[bad_annotations='error'\]\n"
        r"      annotation id=\d+ \(image_id=99\): image_id 99 is not an image of the json",
        r"1 missing image file\(s\) \[missing_images='error'\]\n      image_id=4 \(.*004\.png\): the image file "
        r"does not exist",
        r"2 invalid annotation\(s\) in 1 image\(s\) \[bad_annotations='error'\]\n      image_id=7 \(.*007\.png\): "
        r"annotation 1 \(id \d+\): bbox must be 4 finite numbers, got \[1, nan, 2, 2\]",
        r"1 unreadable image file\(s\) \[bad_images='error'\]\n      image_id=5 \(.*005\.png\): cannot read the image: "
        r"UnidentifiedImageError",
        r"1 image file\(s\) whose size is not the json's width and height \[bad_images='error'\]\n      image_id=6 "
        r"\(.*006\.png\): the file is 72x48 \(width x height\), its dataset's width/height say 64x48",
    ]
    for pattern in expected:
        assert re.search(pattern, errors), f"{pattern}\nnot in:\n{errors}"
    assert re.search(r"iscrowd must be 0 or 1, got 2", errors)
    assert re.search(r"1 annotation\(s\) with zero area \[empty_boxes='skip'\]\n      image_id=7 .*annotation 2 "
                     r"\(id \d+\): bbox \[3, 3, 0, 5\] has zero area", section(report, "Skipped by the policies:"))
    assert re.search(r"1 annotation\(s\) partly outside the image\n      image_id=7 .*annotation 3 .*reaches outside "
                     r"the 64x48 image", section(report, "Clipped to the image:"))
    assert re.search(r"REFUSED: training would refuse this data: 9 problem\(s\) of 8 kind\(s\)", report)


def test_loadable_json_policies_and_histogram(coco, capsys):
    """A json Detectron2 loads: the checks run on its dicts, as in training; the policies decide the status."""
    coco.image(None, W, H, [GOOD_BOX])  # 2
    coco.image(truncated_png(W, H), W, H, [GOOD_BOX])  # 3: its header reads; decoding it fails
    coco.image(png(W, H, mode="L"), W, H, [GOOD_BOX, GOOD_BOX], category_id=2)  # 4
    coco.image(flat_png(W, H), W, H, [])  # 5
    name = coco.register()
    status, report = run(capsys, "--dataset", name)
    assert status == 1
    assert "from Detectron2's loader; 4 image file(s) opened (headers)" in report
    assert re.search(r"1 missing image file\(s\)", section(report, "Errors"))
    assert "unreadable" not in report
    notes = section(report, "Notes:")
    assert re.search(r"1 image file\(s\) converted to RGB: read as RGB.*\n      image_id=4 .*: PIL mode 'L'", notes)
    assert re.search(r"1 image\(s\) without annotations: trained on as background\n      image_id=5 ", notes)
    histogram = section(report, "Classes (after the policies):")
    assert re.search(r"\n\s+0\s+1\s+3\s+0\s+3\s+square\n\s+1\s+2\s+2\s+0\s+1\s+disk", histogram), histogram

    status, report = run(capsys, "--dataset", name, "--decode")
    assert re.search(r"1 unreadable image file\(s\) \[bad_images='error'\]\n      image_id=3 .*truncated", report)
    assert "4 image file(s) decoded" in report

    status, report = run(capsys, "--dataset", name, "--missing-images", "skip", "--bad-images", "skip", "--decode")
    assert status == 0 and "OK: training accepts this data under these policies" in report
    skipped = section(report, "Skipped by the policies:")
    assert "1 missing image file(s) [missing_images='skip']" in skipped
    assert "1 unreadable image file(s) [bad_images='skip']" in skipped

    status, report = run(capsys, "--dataset", name, "--skip-images", "--missing-images", "skip")
    assert status == 0 and "image files not opened" in report and "converted" not in report


def test_evaluation_policies(coco, capsys):
    del coco.annotations[0]["area"]
    name = coco.register()
    assert run(capsys, "--dataset", name)[0] == 0
    status, report = run(capsys, "--dataset", name, "--evaluation")
    assert status == 1 and "REFUSED: evaluation would refuse this data" in report
    assert re.search(r"annotation id=1 \(image_id=1, 001\.png\): 'area' must be a finite number >= 0, got None", report)
    with pytest.raises(SystemExit) as exit_:
        check_dataset.main(["--dataset", name, "--evaluation", "--missing-images", "skip"])
    assert exit_.value.code == 2 and "missing_images='skip' is for training" in capsys.readouterr().err


@pytest.mark.coco_mini
def test_coco_mini_is_clean(coco_mini_dir, capsys):
    status, report = run(capsys, "--json", str(coco_mini_dir / "annotations" / "instances_val2017.json"),
                         "--image-root", str(coco_mini_dir / "val2017"))
    name = str(coco_mini_dir / "annotations" / "instances_val2017.json")
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    assert status == 0, report
    assert ("158 image(s), 1424 annotation(s), 80 class(es), from Detectron2's loader; 158 image file(s) opened"
            in report)
    assert "Errors" not in report and "Warnings" not in report
    assert re.search(r"\n\s+0\s+1\s+323\s+8\s+87\s+person\n", report)
    assert "ids [1, 2, 3, 4, 5, 6, ..., 90] (80 ids) are classes 0..79, in id order" in report


def test_benchmark_writes_a_json_the_checks_accept(tmp_path, capsys):
    """tools/benchmark_check_dataset.py, tiny: its generated json and links pass every check."""
    source = tmp_path / "source"
    source.mkdir()
    png(W, H)(source / "a.png")
    png(H, W)(source / "b.png")
    load_tool("benchmark_check_dataset").main(["--images", "7", "--annotations", "30", "--workers", "2",
                                               "--image-source", str(source), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    DatasetCatalog.remove("coco_benchmark_check_dataset")
    MetadataCatalog.remove("coco_benchmark_check_dataset")
    assert re.search(r"\| d2 load_coco_json \| [\d.]+ \| [\d.]+ \| (-?\d+|nan) \| 7 \|", out), out
    assert re.search(r"\| check_dataset, json only \| .* \| accepted \|", out)
    assert re.search(r"\| check_dataset, 2 threads \| .* \| 7 headers read, accepted \|", out)


def test_as_a_user_runs_it(tmp_path_factory, tmp_path):
    """As a script: a broken json and its images (exit status 1), a config's test data (0), a bad option (2)."""
    coco = CocoBuilder(tmp_path)
    coco.image(png(W, H), W, H, [GOOD_BOX])
    coco.image(png(W, H), W, H, [GOOD_BOX])
    coco.images[1]["id"] = 1
    coco.register()
    coco.unregister()
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    env = tool_env(tmp_path_factory)
    tool = [sys.executable, str(REPO_ROOT / "tools" / "check_dataset.py")]

    def call(*argv):
        return subprocess.run([*tool, *argv], env=env, capture_output=True, text=True, timeout=600)

    proc = call("--json", str(folder / "annotations.json"), "--image-root", str(folder / "images"))
    assert proc.returncode == 1, proc.stderr
    assert "image id=1: 001.png and 002.png share it" in proc.stdout and "REFUSED" in proc.stdout
    proc = call("--config-file", QUICKSTART, "--split", "test", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dataset 'shapes_val'" in proc.stdout and "(evaluation)" in proc.stdout
    proc = call("--json", str(folder / "annotations.json"))
    assert proc.returncode == 2 and "--json and --image-root go together" in proc.stderr

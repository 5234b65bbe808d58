"""tools/race.py as a user runs it: two methods for a few iterations, the report's files, the picture, a rerun."""
import json
import re

import numpy as np
import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import matplotlib  # noqa: E402
from PIL import Image  # noqa: E402
from tool_helpers import load_tool, tool_env  # noqa: E402

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ["detr", "sam_detr"]
# the quickstart configs as they are, on 64 px images of shapes_val, 4 iterations of 2 images, 2 evaluations
# on its first 64 images
SMALL = [
    "train.max_iter=4",
    "dataloader.test.sampler={_target_:detectron2.data.samplers.InferenceSampler,size:64}",
    "train.checkpointer.period=2",
    "model.num_queries=5",
    "dataloader.train.dataset.names=shapes_val",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "dataloader.train.mapper.augmentations.1.short_edge_length=[64]",
    "dataloader.test.mapper.augmentations.0.short_edge_length=64",
]


def _pixels_of(image: np.ndarray, color: str) -> int:
    rgb = np.round(np.array(matplotlib.colors.to_rgb(color)) * 255)
    return int((np.round(image[..., :3] * 255) == rgb).all(-1).sum())


@pytest.mark.slow
def test_race(tmp_path, tmp_path_factory, monkeypatch, capsys):
    for key, value in tool_env(tmp_path_factory).items():
        monkeypatch.setenv(key, value)  # the trainings the race starts inherit this environment
    out = tmp_path / "race"
    args = ["--methods", *METHODS, *SMALL, "--output", str(out), "--evals", "2", "--progress-period", "5"]
    race = load_tool("race")
    race.main(args)  # in this process; each training runs in a process of its own
    console = capsys.readouterr().out
    for i, name in enumerate(METHODS):
        assert f"[race] {name} ({i + 1}/2): iteration 4/4, AP " in console  # the method's last progress line
        for file in ("metrics.json", "log.txt", "model_final.pth", "model_0000001.pth", "console.log"):
            assert (out / name / file).is_file(), file
        assert list((out / name).glob("events.out.tfevents.*"))
    assert re.search(r"left for it, \d+:\d\d:\d\d for the race", console)  # the race's ETA

    report = json.loads((out / "race.json").read_text())
    assert (report["max_iter"], report["eval_period"]) == (4, 2)
    assert list(report["methods"]) == METHODS
    colors = [m["color"] for m in report["methods"].values()]
    assert len(set(colors)) == 2
    for name, method in report["methods"].items():
        evaluations = method["evaluations"]
        assert [e["iteration"] for e in evaluations] == [2, 4]
        assert all(0 <= e["AP"] <= e["AP50"] <= 100 for e in evaluations)
        assert evaluations[0]["train_seconds"] <= evaluations[1]["train_seconds"]
        assert method["finished"] and method["wall_seconds"] > 0
        # the figures are those the training run logged at its evaluations
        rows = [json.loads(line) for line in (out / name / "metrics.json").read_text().splitlines()]
        assert [r["bbox/AP"] for r in rows if "bbox/AP" in r] == [e["AP"] for e in evaluations]

    table = (out / "race.md").read_text()
    assert "| method | AP / AP50 at 2 | AP / AP50 at 4 | training time | wall time |" in table
    for name, method in report["methods"].items():
        ap, ap50 = method["evaluations"][-1]["AP"], method["evaluations"][-1]["AP50"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {ap:.1f} / {ap50:.1f} |" in row

    # a readable PNG with a line of each method's colour in both panels (AP against iterations, against
    # time), and none of the next colour of the cycle: one line per method
    with Image.open(out / "race.png") as png:
        assert png.format == "PNG"
        png.verify()
    image = matplotlib.image.imread(out / "race.png")
    width = image.shape[1]
    for color in colors:
        assert _pixels_of(image[:, : width // 2], color) > 20 and _pixels_of(image[:, width // 2 :], color) > 20, color
    unused = plt.rcParams["axes.prop_cycle"].by_key()["color"][2]
    assert _pixels_of(image, unused) == 0

    # the same command again: every run has finished, nothing is trained, the report stays
    race.main(args)
    again = capsys.readouterr().out
    assert all(f"[race] {name}: finished earlier" in again for name in METHODS), again
    assert json.loads((out / "race.json").read_text())["methods"] == report["methods"]

    # the report rebuilt without race.json (another race process wrote it with its own methods): each method's
    # wall time is kept in its run folder
    (out / "race.json").unlink()
    race.main(args)
    assert json.loads((out / "race.json").read_text())["methods"] == report["methods"]


def test_race_refuses_methods_that_differ(tmp_path):
    race = load_tool("race")
    quickstart = REPO_ROOT / "configs" / "quickstart" / "detr.py"
    base = f"from detectron2.config import LazyConfig\nglobals().update(LazyConfig.load({str(quickstart)!r}))\n"
    (tmp_path / "a.py").write_text(base)
    (tmp_path / "b.py").write_text(base + "dataloader.train.total_batch_size = 8\n")
    with pytest.raises(SystemExit, match=r"b\.py: dataloader differs from that of a"):
        race.main(["--config-dir", str(tmp_path), "--output", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"--methods: no config for \['c'\]"):
        race.main(["--config-dir", str(tmp_path), "--methods", "a", "c"])
    assert not (tmp_path / "out").exists()

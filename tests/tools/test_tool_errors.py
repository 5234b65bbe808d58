"""The demo, the converter, the Slurm launcher and analyze_model answer bad paths and bad options with one line
(`<tool>: error: ...`, exit status 2), not a traceback; analyze_model counts offline (no weights, no dataset)."""
import re
import shutil

import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from tool_helpers import QUICKSTART, TINY_DETR, datasets_root, load_tool, reset_loggers  # noqa: E402

SAM_DETR_R50 = str(REPO_ROOT / "configs" / "sam_detr_r50.py")
QUICKSTART_SAM_DETR = str(REPO_ROOT / "configs" / "quickstart" / "sam_detr.py")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An image, the tiny quickstart DETR's checkpoint, the same cut in half, a file that is not a checkpoint."""
    d = tmp_path_factory.mktemp("tool_errors")
    torch.manual_seed(0)
    model = instantiate(LazyConfig.apply_overrides(LazyConfig.load(QUICKSTART), TINY_DETR).model)
    DetectionCheckpointer(model, str(d)).save("tiny")
    data = (d / "tiny.pth").read_bytes()
    (d / "cut.pth").write_bytes(data[: len(data) // 2])
    (d / "text.pth").write_text("not a checkpoint")
    from PIL import Image

    Image.new("RGB", (40, 30)).save(d / "image.png")
    return d


def cases(d):
    image = ["--input", str(d / "image.png")]
    demo = [*image, "--config-file", QUICKSTART]
    convert = ["--config-file", SAM_DETR_R50, "--output", str(d / "out.pth")]
    slurm = ["--dry-run", "--config-file", QUICKSTART]
    analyze = ["--config-file", QUICKSTART, "--tasks", "flop"]
    return [
        ("demo", [*image, "--config-file", str(d / "none.py")], r"--config-file .*none\.py: no such file"),
        ("demo", [*demo, "--checkpoint", str(d / "none.pth")], r"--checkpoint .*none\.pth: no such file"),
        ("demo", [*demo, "--checkpoint", str(d / "cut.pth"), *TINY_DETR], r"cut\.pth cannot be read \(truncated"),
        ("demo", [*demo, "--checkpoint", str(d / "tiny.pth")], r"tiny\.pth does not fit the model: .*missing from it"),
        ("demo", [*image, "--config-file", QUICKSTART_SAM_DETR, "--checkpoint", str(d / "tiny.pth")],
         r"tiny\.pth does not fit the model"),
        ("demo", [*demo, "--device", "gpu0"], r"--device gpu0: "),
        ("demo", [*demo, "--score-threshold", "2"], r"--score-threshold must be in \[0, 1\], got 2.0"),
        ("demo", [*demo, "--json", str(d / "no" / "dir.json")], r"--json .*dir\.json: its folder does not exist"),
        ("demo", [*demo, "model.num_queries"], r"override 'model.num_queries' is not key=value"),
        ("demo", [*demo, "train.device.x=1"], r"override 'train.device.x=1': .*train.device is not a config"),
        ("demo", [*demo, "train.init_checkpoint=" + str(d / "none.pth")], r"checkpoint .*none\.pth not found"),
        ("convert_official_weights", [*convert, "--source", str(d / "none.pth")], r"--source .*none\.pth: no such"),
        ("convert_official_weights", [*convert, "--source", str(d / "cut.pth")], r"cut\.pth cannot be read"),
        ("convert_official_weights", [*convert, "--source", str(d / "text.pth")], r"text\.pth cannot be read"),
        ("convert_official_weights", [*convert, "--source", str(d / "tiny.pth"), "--dataset", "nowhere"],
         r"--dataset nowhere: not a registered dataset"),
        ("convert_official_weights", ["--config-file", SAM_DETR_R50, "--output", str(d / "no" / "o.pth"),
                                      "--source", str(d / "tiny.pth")], r"--output .*o\.pth: its folder does not"),
        ("convert_official_weights", [*convert, "--source", str(d / "tiny.pth")], r"official key .* is not"),
        ("submit_slurm", [*slurm, "--timeout", "0"], r"--timeout must be positive, got 0"),
        ("submit_slurm", [*slurm, "--cpus-per-gpu", "0"], r"--cpus-per-gpu must be positive, got 0"),
        ("submit_slurm", [*slurm, "--max-timeouts", "-1"], r"--max-timeouts must be 0 or more, got -1"),
        ("submit_slurm", [*slurm, "train.max_iter"], r"override 'train.max_iter' is not key=value"),
        ("analyze_model", [*analyze, "--input-size", "800"], r"--input-size: expected HEIGHTxWIDTH"),
        ("analyze_model", [*analyze, "-n", "0"], r"-n must be positive, got 0"),
        ("analyze_model", ["--config-file", SAM_DETR_R50, "--tasks", "flop"],
         r"the test data of the config cannot be read .*instances_val2017\.json.*; --input-size HxW counts"),
    ]


@pytest.fixture
def isolated(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "no_datasets"))
    monkeypatch.delenv("SAM_DETR_TRACEBACK", raising=False)
    reset_loggers()
    yield
    reset_loggers()


@pytest.mark.parametrize("index", range(len(cases(REPO_ROOT))))
def test_bad_path_or_option_is_one_line(index, files, isolated, capsys):
    tool, argv, message = cases(files)[index]
    with pytest.raises(SystemExit) as exit_:
        load_tool(tool).main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.search(r"^\S+: error: .*" + message, last), err[-2000:]


@pytest.mark.skipif(shutil.which("srun") is not None, reason="Slurm is installed here")
def test_slurm_launcher_without_slurm(files, isolated, tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_tool("submit_slurm").main(["--config-file", QUICKSTART, "--output-dir", str(tmp_path)])
    assert 'error: Could not detect "srun", are you indeed on a slurm cluster?' in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_model_counts_a_published_model_offline(isolated, capsys):
    """configs/sam_detr_r50.py starts from ImageNet weights (a download) and tests on COCO (absent here): neither
    is needed to count its FLOPs and parameters."""
    load_tool("analyze_model").main(
        ["--config-file", SAM_DETR_R50, "--tasks", "flop", "parameter", "--input-size", "64x96"]
    )
    out = capsys.readouterr().out
    assert re.search(r"Total GFLOPs over 1 image\(s\) of mean size 64x96: [0-9.]+ ± 0\.000", out)
    assert "Parameters: 58.279 M, of which trainable: 58.057 M" in out

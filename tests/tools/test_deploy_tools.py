"""tools/deploy/export_model.py, tools/demo.py --onnx and tools/deploy/evaluate_onnx.py with a tiny randomly
initialised DETR on the shapes dataset: the exported file draws, writes and scores what the PyTorch model does."""
import json

import pytest
from conftest import DETECTRON2_MISSING, importorskip_deploy

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)
importorskip_deploy()

from tool_helpers import QUICKSTART, TINY_DETR, datasets_root, load_tool, run_tool, save_tiny_detr, tool_env  # noqa: E402

from sam_detr.data.datasets import SHAPES_SPLITS, ensure_shapes  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_detr(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The tiny DETR's checkpoint exported by the tool, with --verify; (path, the tool's output)."""
    path = tmp_path_factory.mktemp("onnx") / "tiny_detr.onnx"
    proc = run_tool("deploy/export_model", "--config-file", QUICKSTART, "--checkpoint", checkpoint, "--output",
                    str(path), "--verify", *TINY_DETR, env=tool_env(tmp_path_factory))
    return path, proc.stdout + proc.stderr


def test_export_writes_a_file_that_verifies(exported):
    path, output = exported
    assert path.is_file()
    verified = [line for line in output.splitlines() if " unmatched (" in line]
    assert len(verified) == 3 and all(", 0 unmatched (" in line for line in verified), output


def test_demo_onnx_writes_the_pytorch_demo_detections(exported, checkpoint, tmp_path, tmp_path_factory):
    images = ensure_shapes(SHAPES_SPLITS["shapes_val"], str(datasets_root(tmp_path_factory))) + "/images"
    args = ["--config-file", QUICKSTART, "--input", f"{images}/00000[123].png", "--score-threshold", "0"]
    for name, backend in (("pytorch", ["--checkpoint", checkpoint]), ("onnx", ["--onnx", str(exported[0])])):
        run_tool("demo", *args, *backend, "--json", str(tmp_path / f"{name}.json"), "--output",
                 str(tmp_path / name), *TINY_DETR, env=tool_env(tmp_path_factory))
    pytorch, onnx = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("pytorch", "onnx"))
    assert len(onnx) == len(pytorch) > 0
    for a, b in zip(pytorch, onnx):  # written rounded: to 2 decimals (boxes) and 4 (scores)
        assert (a["file_name"], a["category_id"]) == (b["file_name"], b["category_id"])
        assert abs(a["score"] - b["score"]) <= 2e-4
        assert max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"])) <= 0.02
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["000001.png", "000002.png", "000003.png"]


def test_evaluate_onnx_gives_the_pytorch_ap(exported, checkpoint, tmp_path_factory, monkeypatch):
    from detectron2.config import LazyConfig

    from sam_detr.engine.defaults import build_inference_model
    from sam_detr.engine.train_net import do_test

    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    overrides = [*TINY_DETR, f"train.init_checkpoint={checkpoint}", "train.device=cpu", "dataloader.test.batch_size=2"]
    onnx = load_tool("deploy/evaluate_onnx").main(["--config-file", QUICKSTART, "--onnx", str(exported[0]),
                                                   "--threads", "1", *overrides])
    cfg = LazyConfig.apply_overrides(LazyConfig.load(QUICKSTART), overrides)
    pytorch = do_test(cfg, build_inference_model(cfg))
    assert onnx["bbox"].keys() == pytorch["bbox"].keys()
    for key, value in pytorch["bbox"].items():
        assert onnx["bbox"][key] == pytest.approx(value, abs=1e-3, nan_ok=True), key


def test_evaluate_onnx_names_a_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_tool("deploy/evaluate_onnx").main(["--config-file", QUICKSTART, "--onnx", str(tmp_path / "no.onnx")])
    assert f"--onnx {tmp_path}/no.onnx: no such file" in capsys.readouterr().err

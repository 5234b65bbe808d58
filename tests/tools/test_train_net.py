"""tools/lazyconfig_train_net.py as a user runs it: train, --eval-only on the checkpoint, --resume."""
import json

import pytest

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from tool_helpers import (  # noqa: E402
    QUICKSTART, SHORT_RUN, TINY_DETR, TINY_SAM_DETR, datasets_root, run_tool, tool_env, train_in_process,
)

from sam_detr.engine import CheckpointError  # noqa: E402

QUICKSTART_SAM_DETR = str(REPO_ROOT / "configs" / "quickstart" / "sam_detr.py")


def copypaste_results(log: str) -> list:
    """The evaluation's result lines (d2's print_csv_format: "copypaste: ..."), in order."""
    return [line.split("copypaste: ", 1)[1] for line in log.splitlines() if "copypaste: " in line]


def iterations(output_dir) -> list:
    with open(output_dir / "metrics.json") as f:
        return [r["iteration"] for r in map(json.loads, f) if "total_loss" in r]


@pytest.mark.slow
def test_train_eval_only_and_resume(tmp_path, tmp_path_factory, monkeypatch):
    env = tool_env(tmp_path_factory)
    out = tmp_path / "run"
    config = ["--config-file", QUICKSTART]
    common = [*TINY_DETR, "train.log_period=1", f"train.output_dir={out}"]
    # 4 iterations, a checkpoint every 2, one evaluation at the end
    trained = run_tool(
        "lazyconfig_train_net", *config, *common, "train.max_iter=4", "train.checkpointer.period=2", env=env
    )
    log = trained.stdout + trained.stderr
    assert "iter: 3" in log and "total_loss" in log  # the progress line of d2's writers
    assert (out / "model_final.pth").is_file() and (out / "model_0000001.pth").is_file()
    assert iterations(out) == [0, 1, 2, 3]
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard events"
    results = copypaste_results(log)
    assert results and results[0].startswith("Task: bbox")
    # nonzero figures, so that a checkpoint failing to load would show
    assert any(float(x) > 0 for x in results[2].split(","))

    # the checkpoint evaluates to exactly what the training run reported (in this process, as the resumed run
    # below: d2's launch calls main directly; a run logs to its output folder's log.txt)
    monkeypatch.setenv("SAM_DETR_DATASETS", env["SAM_DETR_DATASETS"])
    train_in_process(
        QUICKSTART, "--eval-only", *common[:-1], f"train.output_dir={tmp_path / 'eval'}",
        f"train.init_checkpoint={out / 'model_final.pth'}",
    )
    assert copypaste_results((tmp_path / "eval" / "log.txt").read_text()) == results

    # --resume continues from the last checkpoint (iteration 4) up to the new max_iter
    train_in_process(QUICKSTART, "--resume", *common, "train.max_iter=6")
    log = (out / "log.txt").read_text()
    assert f"Loading from {out / 'model_final.pth'}" in log and "Starting training from iteration 4" in log
    assert iterations(out) == [0, 1, 2, 3, 4, 5]


def test_checkpoints_that_do_not_fit_are_refused(tmp_path, tmp_path_factory, monkeypatch):
    """--eval-only and train.init_checkpoint load strictly: the DETR quickstart's checkpoint is not a SAM-DETR's."""
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    torch.manual_seed(0)
    detr = instantiate(LazyConfig.apply_overrides(LazyConfig.load(QUICKSTART), TINY_DETR).model)
    DetectionCheckpointer(detr, str(tmp_path)).save("detr")
    sam_detr = [*TINY_SAM_DETR, *SHORT_RUN, "train.max_iter=1", f"train.init_checkpoint={tmp_path}/detr.pth",
                f"train.output_dir={tmp_path / 'out'}"]
    for mode in (["--eval-only"], []):
        with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path}/detr.pth does not fit the model: \d+ model "
                                                  r"weight\(s\) missing from it: transformer\.decoder"):
            train_in_process(QUICKSTART_SAM_DETR, *mode, *sam_detr)
    with pytest.raises(ValueError, match="--eval-only needs the weights to evaluate: train.init_checkpoint="):
        train_in_process(QUICKSTART_SAM_DETR, "--eval-only", *TINY_SAM_DETR, f"train.output_dir={tmp_path / 'out'}")

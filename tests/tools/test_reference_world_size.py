"""train.reference_world_size: Detectron2's auto_scale_workers for the LazyConfig trainer. A config's batch and
learning rate are for its reference number of workers; trained on fewer, both shrink and the iterations grow."""
import json

import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig  # noqa: E402
from tool_helpers import QUICKSTART, SHORT_RUN, TINY_DETR, datasets_root, train_in_process  # noqa: E402

from sam_detr.engine.train_net import auto_scale_workers  # noqa: E402


def test_auto_scale_workers_scales_batch_lr_and_iterations():
    cfg = LazyConfig.load(QUICKSTART)  # batch 4, lr 2e-4, 500 iterations
    cfg.train.reference_world_size = 4
    message = auto_scale_workers(cfg, 1)
    assert cfg.dataloader.train.total_batch_size == 1
    assert cfg.optimizer.lr == pytest.approx(5e-5)
    assert cfg.train.max_iter == 2000 and cfg.train.checkpointer.period == 400
    assert message.startswith("auto_scale_workers: 4 -> 1 worker(s): total batch 4 -> 1, lr 0.0002 -> 5e-05")
    # the scaled config is for 1 worker now: not scaled again (a resumed run, the saved config)
    assert auto_scale_workers(cfg, 1) is None and cfg.dataloader.train.total_batch_size == 1
    assert auto_scale_workers(LazyConfig.load(QUICKSTART), 3) is None  # 0: off
    cfg.train.reference_world_size = 3
    with pytest.raises(ValueError, match=r"the total batch 1 cannot be scaled to 1 worker\(s\) \(0.333333 images\)"):
        auto_scale_workers(cfg, 1)


def test_the_train_tool_scales_to_its_world_size(tmp_path, tmp_path_factory, monkeypatch):
    """One process for a config made for two: half the batch, half the learning rate, twice the iterations."""
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    out = tmp_path / "run"
    train_in_process(QUICKSTART, *TINY_DETR, *SHORT_RUN, "train.max_iter=2", "train.reference_world_size=2",
                     "optimizer.lr=1e-4", f"train.output_dir={out}")
    saved = LazyConfig.load(str(out / "config.yaml"))
    assert saved.dataloader.train.total_batch_size == 1 and saved.optimizer.lr == pytest.approx(5e-5)
    with open(out / "metrics.json") as f:
        records = [r for r in map(json.loads, f) if "total_loss" in r]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    assert records[0]["lr"] == pytest.approx(5e-5)

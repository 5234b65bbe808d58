"""`--num-gpus 2` on the CPU: two gloo processes train the quickstart SAM-DETR as one process does with the same
total batch (the train loader gives each process its half of the same global batch, augmented the same way).

Made comparable: images of one size (DETR-style models pad each process's batch to its own largest image, which
changes the features: not batch-invariant), and GroupNorm in the backbone instead of BatchNorm (BatchNorm
normalises each process's batch separately; d2's naiveSyncBN shares the statistics but computes the variance
as E[x^2] - E[x]^2, which moves the weights by up to 8e-4 after 3 AdamW steps, see docs/what_happens_when.md).
AdamW's epsilon is raised from 1e-8 to 1e-3 so that its step is a smooth function of the gradient: at 1e-8 its
first steps are about +-lr for any gradient near 1e-8, so that rounding in a gradient that is ~0 (the two runs
sum the images' contributions in another order) decides the sign, and 10 of the 3.9M weights of this model
differ by more than 1e-5 after 3 iterations (at most 4.2e-5; with the quickstart's width, 9.4e-7).
"""
import json

import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from tool_helpers import TINY_SAM_DETR, final_weights, run_tool, tool_env, train_in_process  # noqa: E402

SAM_DETR = str(REPO_ROOT / "configs" / "quickstart" / "sam_detr.py")
RUN = [
    *TINY_SAM_DETR,
    "dataloader.train.total_batch_size=4",
    "dataloader.train.mapper.augmentations=[{_target_:detectron2.data.transforms.Resize,shape:[64,80]}]",
    "model.backbone.norm=GN",
    "optimizer.eps=1e-3",
    "train.max_iter=3",
    "train.checkpointer.period=100",
    "train.log_period=1",
    "dataloader.evaluator=null",
    "dataloader.test.sampler={_target_:detectron2.data.samplers.InferenceSampler,size:2}",
]


def metrics(output_dir):
    with open(output_dir / "metrics.json") as f:
        return [r for r in map(json.loads, f) if "total_loss" in r]


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path, tmp_path_factory, monkeypatch):
    env = tool_env(tmp_path_factory)
    log = run_tool("lazyconfig_train_net", "--config-file", SAM_DETR, "--num-gpus", "2", *RUN,
                   f"train.output_dir={tmp_path / '2'}", env=env)
    assert "World size: 2" in log.stderr + log.stdout
    # the one-process run, in this process (d2's launch calls main directly)
    monkeypatch.setenv("SAM_DETR_DATASETS", env["SAM_DETR_DATASETS"])
    train_in_process(SAM_DETR, "--num-gpus", "1", *RUN, f"train.output_dir={tmp_path / '1'}")
    one, two = metrics(tmp_path / "1"), metrics(tmp_path / "2")
    assert [r["iteration"] for r in two] == [0, 1, 2]
    # the first iteration's losses (d2 averages them over the processes), term by term
    terms = [k for k in one[0] if k.startswith("loss_")]
    assert len(terms) == 6  # 3 terms, 2 decoder layers
    for k in terms:
        assert two[0][k] == pytest.approx(one[0][k], rel=1e-6, abs=1e-7), k
    # the weights after 3 iterations
    a, b = final_weights(tmp_path / "1"), final_weights(tmp_path / "2")
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst < 1e-5

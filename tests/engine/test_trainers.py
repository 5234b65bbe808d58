"""The stop at the first non-finite loss: every process raises at once, naming the iteration, the terms and the
process they came from (the training flow's stop and resume: tests/tools/test_resume.py)."""
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from sam_detr.engine.trainers import NonFiniteLossError, check_finite_losses  # noqa: E402


def test_finite_losses_pass_and_the_others_are_named():
    check_finite_losses({"loss_ce": torch.tensor(1.0), "loss_bbox": torch.tensor(0.0)}, 7)
    with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at iteration 7: loss_bbox = inf \(process 0\); "
                                                 r"loss_giou_1 = nan \(process 0\)\. The optimizer did not step"):
        check_finite_losses({"loss_ce": torch.tensor(1.0), "loss_giou_1": torch.tensor(float("nan")),
                             "loss_bbox": torch.tensor(float("inf"))}, 7)


def _process(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    losses = {"loss_ce": torch.tensor(1.0), "loss_bbox": torch.tensor(float("nan") if rank == 1 else 2.0)}
    try:
        check_finite_losses({"loss_ce": torch.tensor(1.0), "loss_bbox": torch.tensor(2.0)}, 4)  # all finite
        check_finite_losses(losses, 5)
        results[rank] = "no error"
    except NonFiniteLossError as e:
        results[rank] = str(e)
    dist.destroy_process_group()


def test_every_process_stops_when_one_has_a_non_finite_loss(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        # forked: the processes need not import torch and detectron2 again
        mp.start_processes(_process, args=(str(tmp_path / "rendezvous"), results), nprocs=2, start_method="fork")
        messages = dict(results)
    assert set(messages) == {0, 1}
    for message in messages.values():
        assert message.startswith("non-finite loss at iteration 5: loss_bbox = nan (process 1). The optimizer")

"""Exact resume and the stop at a non-finite loss, in the train tool's flow (in this process, tiny quickstart DETR).

Training to iteration N in one run, and training to k, stopping, and `--resume` to N give the same weights bit
for bit: the checkpoint holds the data stream's position and the random states besides d2's weights,
optimizer and iteration (tests/tools/test_submit_slurm.py: the same through a Slurm requeue)."""
import json

import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from tool_helpers import (  # noqa: E402
    QUICKSTART, SHORT_RUN, TINY_DETR, assert_same_weights, datasets_root, final_weights, train_in_process,
)

from sam_detr.engine import NonFiniteLossError  # noqa: E402
from sam_detr.engine import trainers  # noqa: E402
from sam_detr.modeling import DETR  # noqa: E402

N = 6
# dropout on, so that the random states matter to the weights, not only the data stream
RUN = [*TINY_DETR, *SHORT_RUN, f"train.max_iter={N}", "model.transformer.dropout=0.1"]


@pytest.fixture(autouse=True)
def datasets(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))


def record_losses(mp: pytest.MonkeyPatch) -> dict:
    """{iteration: {loss term: value}} of the trainings run while `mp` holds: every iteration's own losses, as
    the trainer computes them (metrics.json holds medians over the last 20 iterations, a window that a resumed
    run starts afresh)."""
    recorded, check = {}, trainers.check_finite_losses

    def record(loss_dict, iteration):
        recorded[iteration] = {k: v.item() for k, v in loss_dict.items()}
        check(loss_dict, iteration)

    mp.setattr(trainers, "check_finite_losses", record)
    return recorded


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
        recorded = record_losses(mp)
        train_in_process(QUICKSTART, *RUN, f"train.output_dir={out}")
    (out / "losses.json").write_text(json.dumps(recorded))
    return out


def reference_losses(output_dir) -> dict:
    return {int(i): terms for i, terms in json.loads((output_dir / "losses.json").read_text()).items()}


@pytest.mark.slow
def test_resume_gives_the_weights_of_the_uninterrupted_run(uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "run"
    step = trainers.SimpleTrainer.run_step

    def interrupted_at_4(self):
        if self.iter == 4:  # after the checkpoint of iteration 3
            raise KeyboardInterrupt("killed")
        step(self)

    with monkeypatch.context() as mp:
        mp.setattr(trainers.SimpleTrainer, "run_step", interrupted_at_4)
        with pytest.raises(KeyboardInterrupt):
            train_in_process(QUICKSTART, *RUN, f"train.output_dir={out}")
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    with monkeypatch.context() as mp:
        resumed = record_losses(mp)
        train_in_process(QUICKSTART, "--resume", *RUN, f"train.output_dir={out}")
    assert_same_weights(final_weights(out), final_weights(uninterrupted))
    assert sorted(resumed) == [4, 5]
    assert resumed == {i: reference_losses(uninterrupted)[i] for i in (4, 5)}


def test_non_finite_loss_stops_naming_the_terms_and_resume_continues(uninterrupted, tmp_path, monkeypatch):
    """Predicted boxes turn NaN at iteration 3 (a diverged run): no assertion in the matcher or the GIoU, the
    training stops at the non-finite losses, naming them; the checkpoint of iteration 1 is kept, and --resume
    from it trains on as if nothing had happened."""
    out = tmp_path / "run"
    head = DETR.forward_head

    def diverging(self, features, masks, targets=None):
        outputs = head(self, features, masks, targets)
        from detectron2.utils.events import get_event_storage

        if get_event_storage().iter == 3:
            outputs["pred_boxes"] = outputs["pred_boxes"] * float("nan")
        return outputs

    with monkeypatch.context() as mp:
        mp.setattr(DETR, "forward_head", diverging)
        with pytest.raises(NonFiniteLossError) as error:
            train_in_process(QUICKSTART, *RUN, f"train.output_dir={out}")
    message = str(error.value)
    assert message.startswith(
        "non-finite loss at iteration 3: loss_bbox = nan (process 0); loss_giou = nan (process 0)"
    )
    assert "loss_ce" not in message and f"[last checkpoint: {out}/model_0000001.pth]" in message
    assert not (out / "model_0000003.pth").exists()
    saved = torch.load(out / "model_0000001.pth", weights_only=True)
    assert saved["iteration"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values())

    train_in_process(QUICKSTART, "--resume", *RUN, f"train.output_dir={out}")
    assert_same_weights(final_weights(out), final_weights(uninterrupted))

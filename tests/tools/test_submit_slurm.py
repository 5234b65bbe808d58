"""tools/submit_slurm.py and sam_detr.engine.slurm, without Slurm: the dry run, the requeue logic, and a job
of submitit's local executor that is preempted and resumes from its checkpoint."""
import json
import os
import re
import signal
import time
from types import SimpleNamespace

import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import submitit  # noqa: E402
from detectron2.engine import default_argument_parser  # noqa: E402
from tool_helpers import (  # noqa: E402
    QUICKSTART, TINY_DETR, assert_same_weights, final_weights, load_tool, tool_env, train_in_process,
)

from sam_detr.engine import slurm  # noqa: E402
from sam_detr.engine.slurm import TrainJob, dist_url  # noqa: E402


@pytest.fixture
def submit():
    return load_tool("submit_slurm").main


def test_dry_run_prints_the_job_and_submits_nothing(submit, tmp_path, capsys):
    job = submit([
        "--dry-run", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--timeout", "90",
        "--slurm-opt", "account=vision", "--slurm-opt", "exclusive", "--output-dir", str(tmp_path / "run"),
        "--config-file", QUICKSTART, "--resume", "train.max_iter=7",
    ])
    out = capsys.readouterr().out
    assert job is None and not (tmp_path / "run").exists()
    for expected in [
        "'nodes': 2", "'tasks_per_node': 1", "'gpus_per_node': 4", "'cpus_per_task': 32", "'timeout_min': 90",
        "'slurm_partition': 'gpu'", "'slurm_additional_parameters': {'account': 'vision', 'exclusive': True}",
        f"--num-gpus 4 --num-machines 2 --machine-rank '<node rank>' --dist-url "
        f"'tcp://<first node>:<port from the job id>' --config-file {QUICKSTART} --resume "
        f"train.max_iter=7 train.output_dir={tmp_path}/run",
    ]:
        assert expected in out, out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--slurm-opt", "=1"], "expected key=value"),
        (["--output-dir", "a", "--config-file", QUICKSTART, "train.output_dir=b"], "give the output folder once"),
        (["--nodes", "0"], "must be positive"),
        (["--config-file", "configs/missing.py"], "--config-file configs/missing.py: no such file"),
    ],
)
def test_bad_options(submit, argv, message, capsys):
    with pytest.raises(SystemExit):
        submit(["--dry-run", "--config-file", QUICKSTART] + argv)
    assert message in capsys.readouterr().err


def test_requeued_job_resumes():
    job = TrainJob(["--config-file", "c.py", "--eval-only", "a.b=1"], gpus_per_node=2)
    requeued = job.checkpoint()
    assert requeued.args == () and requeued.kwargs == {}
    assert requeued.function.train_args == ["--resume", "--config-file", "c.py", "--eval-only", "a.b=1"]
    assert requeued.function.checkpoint().function.train_args == requeued.function.train_args

    args = default_argument_parser().parse_args(requeued.function.command(3, 1, "tcp://node0:1234"))
    assert (args.resume, args.eval_only, args.config_file, args.opts) == (True, True, "c.py", ["a.b=1"])
    assert (args.num_gpus, args.num_machines, args.machine_rank, args.dist_url) == (2, 3, 1, "tcp://node0:1234")


def _interrupted_training(*args, **kwargs):
    try:
        raise SystemExit(144)  # submitit's local requeue, from its signal handler
    finally:
        1 / 0  # a trainer hook failing in its after_train on the interrupted iteration


def _failed_training(*args, **kwargs):
    1 / 0


@pytest.mark.parametrize(
    "training, error", [(_interrupted_training, SystemExit), (_failed_training, ZeroDivisionError)]
)
def test_requeue_exit_is_not_hidden_by_the_unwinding(training, error, monkeypatch):
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: SimpleNamespace(num_nodes=1, node=0))
    monkeypatch.setattr(slurm, "launch_main", training)
    with pytest.raises(error) as caught:
        TrainJob(["--config-file", "c.py"], gpus_per_node=1)()
    if error is SystemExit:
        assert caught.value.code == 144


def test_dist_url():
    assert dist_url(SimpleNamespace(num_nodes=1)) == "auto"
    env = SimpleNamespace(num_nodes=2, hostnames=["node7", "node8"], job_id="4242")
    url = dist_url(env)
    assert re.fullmatch(r"tcp://node7:\d+", url) and 20000 <= int(url.rsplit(":", 1)[1]) < 60000
    assert dist_url(SimpleNamespace(**vars(env))) == url  # every node, and every requeue, agrees


def _has_checkpoint(output_dir) -> bool:
    """Whether d2's last_checkpoint is written and names a checkpoint (it is created empty, then written)."""
    tag = output_dir / "last_checkpoint"
    return tag.is_file() and tag.read_text().strip() != "" and (output_dir / tag.read_text().strip()).is_file()


@pytest.mark.slow
def test_preempted_job_resumes_from_its_checkpoint(submit, tmp_path, tmp_path_factory, monkeypatch):
    """A job preempted and requeued ends with the weights of the same training run without interruption."""
    for key, value in tool_env(tmp_path_factory).items():
        monkeypatch.setenv(key, value)  # the local executor's job inherits this environment
    out = tmp_path / "run"
    train_args = [
        "--config-file", QUICKSTART, *TINY_DETR,
        # the evaluation at the end, on 2 images with no evaluator
        "dataloader.test.sampler={_target_:detectron2.data.samplers.InferenceSampler,size:2}",
        "dataloader.evaluator=null",
        "train.max_iter=10", "train.checkpointer.period=2", "train.log_period=1",
    ]
    job = submit(["--cluster", "local", "--gpus-per-node", "1", "--timeout", "30", "--output-dir", str(out),
                  *train_args])
    try:
        deadline = time.monotonic() + 300
        while not _has_checkpoint(out):
            assert not job.done(), job.stderr()
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
        # what Slurm does on preemption: SIGUSR2 to the task (the controller's child), whose submitit handler
        # calls TrainJob.checkpoint and requeues it
        controller = job._process.pid
        with open(f"/proc/{controller}/task/{controller}/children") as f:
            (task,) = f.read().split()
        os.kill(int(task), signal.SIGUSR2)
        job.result()
    finally:
        if not job.done():
            job.cancel()

    stdout = job.stdout()
    assert "Requeued job" in stdout and "--dist-url auto --resume --config-file" in stdout, stdout
    starts = [int(n) for n in re.findall(r"Starting training from iteration (\d+)", (out / "log.txt").read_text())]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0, starts
    assert f"Loading from {out}/model_{starts[1] - 1:07d}.pth" in stdout
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert metrics[-1]["iteration"] == 9
    # the same training without interruption, in this process (d2's launch calls main directly)
    train_in_process(QUICKSTART, *train_args[2:], f"train.output_dir={tmp_path / 'uninterrupted'}")
    assert_same_weights(final_weights(out), final_weights(tmp_path / "uninterrupted"))

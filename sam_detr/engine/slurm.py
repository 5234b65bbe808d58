"""Training jobs on Slurm through submitit, requeued on timeout or preemption (see tools/submit_slurm.py).

A job has one submitit task per node. Each task runs what tools/lazyconfig_train_net.py runs,
`launch_main(args)` from train_net.py, one process per GPU of its node; the machines' arguments come from
the allocation. Near the time limit, or when Slurm preempts the job, submitit signals the tasks and calls
`TrainJob.checkpoint` in the first one; the job it returns (the same, with --resume) is requeued under
the same job id and continues from the last checkpoint in train.output_dir. Nothing is saved on the
signal (the training processes of d2's `launch` are not submitit's and just end): the iterations since
the last checkpoint, at most train.checkpointer.period, are done again.
"""
import shlex
import zlib
from typing import List, Sequence

import submitit
from detectron2.engine import default_argument_parser

from .train_net import launch_main

__all__ = ["TrainJob", "dist_url"]


def dist_url(job_env: submitit.JobEnvironment) -> str:
    """The rendezvous of the job's processes: a free port of this node when it is the only one; otherwise a
    port of the first node that every node derives from the job id alone (a requeued job keeps its id)."""
    if job_env.num_nodes == 1:
        return "auto"
    port = 20000 + zlib.crc32(job_env.job_id.encode()) % 40000
    return f"tcp://{job_env.hostnames[0]}:{port}"


class TrainJob(submitit.helpers.Checkpointable):
    """The task of one node: tools/lazyconfig_train_net.py's flow with `train_args`.

    Args:
        train_args: arguments of tools/lazyconfig_train_net.py but those of the machines (--num-gpus,
            --num-machines, --machine-rank, --dist-url), the `key=value` overrides last.
        gpus_per_node: training processes of each node (CPU processes where there is no GPU).
    """

    def __init__(self, train_args: Sequence[str], gpus_per_node: int):
        self.train_args = list(train_args)
        self.gpus_per_node = gpus_per_node

    def command(self, num_nodes, node, url) -> List[str]:
        """The arguments of lazyconfig_train_net.py that this job runs on machine `node` of `num_nodes`."""
        machine = ["--num-gpus", str(self.gpus_per_node), "--num-machines", str(num_nodes)]
        # the overrides end train_args, and the parser takes everything after the first one as overrides
        return machine + ["--machine-rank", str(node), "--dist-url", url] + self.train_args

    def __call__(self) -> None:
        job_env = submitit.JobEnvironment()
        argv = self.command(job_env.num_nodes, job_env.node, dist_url(job_env))
        # into the task's log: nothing has set up logging yet
        print(f"{job_env}: lazyconfig_train_net.py {shlex.join(argv)}", flush=True)
        args = default_argument_parser().parse_args(argv)
        try:
            launch_main(args)
        except Exception as error:
            # submitit requeues by raising SystemExit from its signal handler, inside the training loop when
            # it runs in this process; the trainer's hooks then end the interrupted iteration (after_train)
            # and may fail on it, which must not hide the exit: its code asks the local executor to requeue
            exit_ = error.__context__
            while exit_ is not None and not isinstance(exit_, SystemExit):
                exit_ = exit_.__context__
            if exit_ is None:
                raise
            raise exit_

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on timeout or preemption: the job to requeue, which resumes this one."""
        train_args = self.train_args if "--resume" in self.train_args else ["--resume"] + self.train_args
        return submitit.helpers.DelayedSubmission(TrainJob(train_args, self.gpus_per_node))

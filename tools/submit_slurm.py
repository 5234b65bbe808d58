#!/usr/bin/env python
"""Submit tools/lazyconfig_train_net.py to Slurm with submitit, requeued with --resume on timeout or preemption.

    python tools/submit_slurm.py --nodes 2 --gpus-per-node 8 --partition learn --timeout 4320 \\
        --slurm-opt account=vision --slurm-opt constraint=volta32gb \\
        --config-file configs/detr_r50_500ep.py train.checkpointer.period=2000
    python tools/submit_slurm.py --dry-run ...      # print the job without submitting it
    python tools/submit_slurm.py --cluster local --gpus-per-node 1 ...   # the same job on this machine

The job has one task per node; each runs the train tool's flow (`sam_detr.engine.train_net.main` through
Detectron2's `launch`) on its GPUs, the first node being the rendezvous (see sam_detr/engine/slurm.py).
Near the time limit (`--timeout`, in minutes) or on preemption, the job is requeued and resumes from the
last checkpoint in train.output_dir, so set train.checkpointer.period to what you accept to compute twice.
train.output_dir is `--output-dir` (default: the config's); submitit's logs go to its `submitit/` folder.
The train tool's own arguments (--config-file, --resume, --eval-only, key=value overrides) come last.
"""
import argparse
import os
import shlex
import subprocess
from pathlib import Path
from typing import Dict, Optional

import submitit

from sam_detr.engine.slurm import TrainJob
from sam_detr.utils.cli import load_config, one_line_errors


def slurm_option(text: str):
    """"key=value" -> (key, value); a bare "key" is a flag such as "exclusive"."""
    key, sep, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value if sep else True


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    job = parser.add_argument_group("job")
    job.add_argument("--nodes", type=int, default=1)
    job.add_argument("--gpus-per-node", type=int, default=8, help="training processes per node")
    job.add_argument("--cpus-per-gpu", type=int, default=8, help="CPUs per training process (data loading)")
    job.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    job.add_argument("--timeout", type=int, default=4320, help="time limit of each run, in minutes")
    job.add_argument(
        "--max-timeouts", type=int, default=20, help="requeues after reaching --timeout (preemptions do not count)"
    )
    job.add_argument("--job-name", help="default: the config file's name")
    job.add_argument(
        "--slurm-opt", type=slurm_option, action="append", default=[], metavar="KEY=VALUE",
        help="extra sbatch option, repeatable: account=..., qos=..., constraint=..., mem=..., exclusive",
    )
    job.add_argument("--output-dir", help="train.output_dir (default: the config's); submitit logs in it")
    job.add_argument(
        "--cluster", choices=["slurm", "local"], default="slurm",
        help="local: the same job on this machine (one node), through submitit's LocalExecutor",
    )
    job.add_argument("--dry-run", action="store_true", help="print the job without submitting it")
    train = parser.add_argument_group("train tool (tools/lazyconfig_train_net.py)")
    train.add_argument("--config-file", required=True, metavar="FILE")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint of train.output_dir")
    train.add_argument("--eval-only", action="store_true")
    train.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)

    if args.output_dir is not None and any(o.startswith("train.output_dir=") for o in args.opts):
        parser.error("give the output folder once: --output-dir or train.output_dir=")
    for option in ("nodes", "gpus_per_node", "cpus_per_gpu", "timeout"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be positive, got {getattr(args, option)}")
    if args.max_timeouts < 0:
        parser.error(f"--max-timeouts must be 0 or more, got {args.max_timeouts}")
    # loaded here: a wrong path or override fails now rather than in the queue
    args.cfg = load_config(parser, args.config_file, args.opts)
    args.parser = parser
    return args


def executor_parameters(args, job_name: str) -> Dict:
    """submitit AutoExecutor parameters of the job."""
    params = dict(
        name=job_name,
        nodes=args.nodes,
        tasks_per_node=1,  # d2's launch starts the processes of a node
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_gpu * args.gpus_per_node,
        timeout_min=args.timeout,
        slurm_additional_parameters=dict(args.slurm_opt),
    )
    if args.partition:
        params["slurm_partition"] = args.partition
    return params


def main(argv=None) -> Optional[submitit.Job]:
    """Submits the job (returned), or prints it with --dry-run."""
    args = parse_args(argv)
    config_file = os.path.abspath(args.config_file)
    output_dir = os.path.abspath(args.output_dir or args.cfg.train.output_dir)
    opts = [o for o in args.opts if not o.startswith("train.output_dir=")]
    # absolute paths: the job does not necessarily start in this folder
    train_args = ["--config-file", config_file]
    if args.resume:
        train_args.append("--resume")
    if args.eval_only:
        train_args.append("--eval-only")
    train_args += opts + [f"train.output_dir={output_dir}"]
    job = TrainJob(train_args, args.gpus_per_node)
    job_name = args.job_name or Path(config_file).stem
    params = executor_parameters(args, job_name)
    folder = os.path.join(output_dir, "submitit")

    if args.dry_run:
        if args.nodes == 1:
            command = job.command(1, 0, "auto")  # d2 picks a free port
        else:
            command = job.command(args.nodes, "<node rank>", "tcp://<first node>:<port from the job id>")
        print(f"Job {job_name!r} on {args.cluster} (dry run: nothing submitted)")
        print(f"  submitit parameters: {params}")
        print(f"  each node runs:      lazyconfig_train_net.py {shlex.join(command)}")
        print(f"  train.output_dir:    {output_dir}")
        print(f"  submitit logs:       {folder}")
        print(f"  on timeout (at most {args.max_timeouts} times) or preemption: requeued with --resume")
        return None

    # submitit raises RuntimeError where there is no Slurm (no srun), CalledProcessError where sbatch fails
    with one_line_errors(args.parser, also=(RuntimeError, subprocess.CalledProcessError)):
        executor = submitit.AutoExecutor(
            folder=folder,
            cluster=args.cluster,
            slurm_max_num_timeout=args.max_timeouts,
            local_max_num_timeout=args.max_timeouts,
        )
        executor.update_parameters(**params)
        submitted = executor.submit(job)
    print(f"Submitted job {submitted.job_id} ({job_name}); output in {output_dir}, logs in {folder}")
    return submitted


if __name__ == "__main__":
    main()

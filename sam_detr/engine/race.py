"""The convergence race (tools/race.py): every method's quickstart config trained with the same data, batch
and iterations, evaluated at the same iterations, drawn as AP against iterations and against training time.

Each method is an ordinary run of the training tool (tools/lazyconfig_train_net.py) in a process of its own,
with its own output folder <output>/<method> (log.txt, metrics.json, TensorBoard events, checkpoints), always
started with --resume: an interrupted race continues each run from its last checkpoint, and a run that
finished is not trained again. The race reads everything it reports from the runs' metrics.json (d2's
EvalHook puts `bbox/AP` there at iteration k-1 for an evaluation after k iterations) and writes
race.json (the raw series), race.md (the table) and race.png (the picture) into <output>.
"""
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from detectron2.config import LazyConfig
from omegaconf import OmegaConf

from .train_net import resolve_max_iter

__all__ = ["Evaluation", "MethodRun", "find_methods", "race_settings", "read_evaluations", "run_race", "write_report"]

# what must be the same for every method, so that the race compares the models alone
SHARED_FIELDS = ("dataloader", "train.max_iter", "train.seed")


@dataclasses.dataclass
class Evaluation:
    iteration: int
    """iterations trained before the evaluation"""
    AP: float
    AP50: float
    train_seconds: float
    """time of those iterations (the iteration times in metrics.json; evaluations and start-up excluded)"""


@dataclasses.dataclass
class MethodRun:
    name: str
    config: str
    output_dir: str
    evaluations: List[Evaluation] = dataclasses.field(default_factory=list)
    wall_seconds: float = 0.0
    """wall time of the method's training processes, start-up and evaluations included (summed over the
    race's sessions when it resumed)"""
    finished: bool = False


def find_methods(config_dir: str, methods: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """{method: config file}: the given methods, in that order, or every <config_dir>/*.py alphabetically."""
    available = {p.stem: str(p) for p in sorted(Path(config_dir).glob("*.py")) if not p.name.startswith("_")}
    if not available:
        raise FileNotFoundError(f"--config-dir {config_dir}: no config (*.py) there")
    if not methods:
        return available
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise ValueError(f"--methods: no config for {unknown} in {config_dir}; there: {sorted(available)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods: {list(methods)} names a method twice")
    return {m: available[m] for m in methods}


def _field(cfg, dotted: str):
    value = OmegaConf.select(cfg, dotted)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def race_settings(configs: Dict[str, str], overrides: Sequence[str], evals: int) -> dict:
    """Loads every config with `overrides`, checks that SHARED_FIELDS agree, and returns the race's
    {"max_iter", "eval_period", "log_period", "batch_size", "train_dataset", "test_dataset"}: `evals`
    evaluations, the last at max_iter, and a line of metrics at every evaluation, so that its training time
    is counted up to it."""
    if evals < 1:
        raise ValueError(f"--evals must be at least 1, got {evals}")
    reference, settings = None, {}
    for name, path in configs.items():
        cfg = LazyConfig.apply_overrides(LazyConfig.load(path), list(overrides))
        resolve_max_iter(cfg)
        shared = {f: _field(cfg, f) for f in SHARED_FIELDS}
        if reference is None:
            reference = (name, shared)
            max_iter = cfg.train.max_iter
            eval_period = math.ceil(max_iter / evals)
            settings = dict(
                max_iter=max_iter,
                eval_period=eval_period,
                log_period=math.gcd(cfg.train.log_period, eval_period),
                batch_size=cfg.dataloader.train.total_batch_size,
                train_dataset=_field(cfg, "dataloader.train.dataset.names"),
                test_dataset=_field(cfg, "dataloader.test.dataset.names"),
            )
            continue
        for f in SHARED_FIELDS:
            if shared[f] != reference[1][f]:
                first = reference[0]
                raise ValueError(
                    f"{path}: {f} differs from that of {first} ({configs[first]}); the race trains every method "
                    f"on the same data, batch and iterations:\n  {name}: {shared[f]}\n  {first}: {reference[1][f]}"
                )
    return settings


def _metrics_rows(output_dir: str) -> Dict[int, dict]:
    """metrics.json as {iteration: scalars}; rows written again after a resume replace the earlier ones."""
    rows: Dict[int, dict] = {}
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line being written
                continue
            rows.setdefault(row.pop("iteration"), {}).update(row)
    return rows


def read_evaluations(output_dir: str, max_iter: int) -> List[Evaluation]:
    """The evaluations of a run, in order, with the training time up to each: every logged row's
    `time` (d2's median iteration time over the last log period) times the iterations since the row before.
    An evaluation during training is in the row of its last iteration, k - 1; the one after training in
    the row max_iter (d2's trainer counts one past the last iteration when training ends)."""
    evaluations, seconds, previous = [], 0.0, -1
    for iteration, row in sorted(_metrics_rows(output_dir).items()):
        if "time" in row:
            seconds += row["time"] * (iteration - previous)
            previous = iteration
        if "bbox/AP" in row:
            trained = min(iteration + 1, max_iter)
            evaluations.append(Evaluation(trained, row["bbox/AP"], row["bbox/AP50"], round(seconds, 1)))
    return evaluations


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Progress:
    """Prints one line per method now and then (and at each evaluation): where it is, its speed, and the time
    left for it and for the race, from the wall time per iteration measured so far in this session."""

    def __init__(self, names: Sequence[str], max_iter: int, period: float):
        self.names, self.max_iter, self.period = list(names), max_iter, period
        self.rates: Dict[str, float] = {}  # wall seconds per iteration of the methods run in this session
        self._last = (None, 0.0)  # (method, iterations, evaluations) of the last line, and its time

    def update(self, name: str, run: MethodRun, start_iter: int, elapsed: float, force: bool = False) -> None:
        rows = _metrics_rows(run.output_dir)
        done = min(max(rows) + 1, self.max_iter) if rows else 0
        evaluations = read_evaluations(run.output_dir, self.max_iter)
        state, (last_state, last_time) = (name, done, len(evaluations)), self._last
        if state == last_state:
            return  # nothing new
        new_evaluation = last_state is None or last_state[0] != name or last_state[2] != state[2]
        if not (force or new_evaluation or time.monotonic() - last_time >= self.period):
            return  # too soon
        self._last = (state, time.monotonic())
        rate = elapsed / (done - start_iter) if done > start_iter else None
        if rate is not None:
            self.rates[name] = rate
        known = list(self.rates.values())
        left = None
        if known:
            mean = sum(known) / len(known)
            later = self.names[self.names.index(name) + 1 :]
            left_here = (self.max_iter - done) * (rate or mean)
            left = left_here + len(later) * self.max_iter * mean
        ap = f"AP {evaluations[-1].AP:.1f} at {evaluations[-1].iteration}" if evaluations else "no evaluation yet"
        speed = f"{rate:.2f} s/iteration" if rate else "starting"
        eta = f"; {_clock(left_here)} left for it, {_clock(left)} for the race" if left is not None else ""
        index = self.names.index(name) + 1
        where = f"[race] {name} ({index}/{len(self.names)}): iteration {done}/{self.max_iter}"
        print(f"{where}, {ap}, {speed}{eta}", flush=True)


def _run_method(
    run: MethodRun, train_script: str, overrides: Sequence[str], settings: dict, progress: _Progress, poll: float
) -> None:
    """Trains (or resumes) one method with the training tool, its console output into <output_dir>/console.log."""
    os.makedirs(run.output_dir, exist_ok=True)
    command = [
        sys.executable, train_script, "--resume", "--config-file", run.config, *overrides,
        f"train.max_iter={settings['max_iter']}",
        f"train.eval_period={settings['eval_period']}",
        f"train.log_period={settings['log_period']}",
        f"train.output_dir={run.output_dir}",
    ]  # fmt: skip
    rows = _metrics_rows(run.output_dir)
    start_iter = min(max(rows) + 1, settings["max_iter"]) if rows else 0
    console = os.path.join(run.output_dir, "console.log")
    start = time.monotonic()
    with open(console, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    proc.wait(timeout=poll)
                    break
                except subprocess.TimeoutExpired:
                    progress.update(run.name, run, start_iter, time.monotonic() - start)
        finally:
            if proc.poll() is None:  # interrupted: stop the training, whose checkpoints let it resume
                proc.terminate()
                proc.wait()
            run.wall_seconds += time.monotonic() - start
            with open(_wall_seconds_file(run.output_dir), "w") as f:
                json.dump({"wall_seconds": run.wall_seconds}, f)
    if proc.returncode != 0:
        with open(console) as f:
            tail = "".join(f.readlines()[-30:])
        raise RuntimeError(f"{run.name}: training failed (exit status {proc.returncode}); end of {console}:\n{tail}")
    progress.update(run.name, run, start_iter, time.monotonic() - start, force=True)


def _wall_seconds_file(run_dir: str) -> str:
    return os.path.join(run_dir, "race_wall_seconds.json")


def _previous_wall_seconds(output: str, name: str, previous: dict) -> float:
    """The wall time of the method's earlier sessions: kept in its run folder (so that races run by other
    processes into the same output add up), else in an older race's race.json."""
    path = _wall_seconds_file(os.path.join(output, name))
    if os.path.isfile(path):
        with open(path) as f:
            return float(json.load(f)["wall_seconds"])
    return float(previous.get(name, {}).get("wall_seconds", 0.0))


def run_race(
    configs: Dict[str, str],
    output: str,
    train_script: str,
    overrides: Sequence[str] = (),
    evals: int = 4,
    progress_period: float = 30.0,
    poll: float = 2.0,
) -> List[MethodRun]:
    """Trains every method of `configs` ({name: config file}) in turn with `overrides` (and the race's
    iterations and evaluations), skipping those whose run has finished, and rewrites the report after each."""
    settings = race_settings(configs, overrides, evals)
    previous = {}
    if os.path.isfile(os.path.join(output, "race.json")):
        with open(os.path.join(output, "race.json")) as f:
            previous = json.load(f)["methods"]
    runs = [
        MethodRun(name, path, os.path.join(output, name), wall_seconds=_previous_wall_seconds(output, name, previous))
        for name, path in configs.items()
    ]
    progress = _Progress(list(configs), settings["max_iter"], progress_period)
    print(
        f"[race] {len(runs)} method(s): {', '.join(configs)}; {settings['max_iter']} iterations each, an evaluation "
        f"every {settings['eval_period']}; output in {output}",
        flush=True,
    )
    for run in runs:
        run.evaluations = read_evaluations(run.output_dir, settings["max_iter"])
        finished = bool(run.evaluations) and run.evaluations[-1].iteration == settings["max_iter"]
        if finished and os.path.isfile(os.path.join(run.output_dir, "model_final.pth")):
            print(f"[race] {run.name}: finished earlier ({run.output_dir}), not trained again", flush=True)
        else:
            try:
                _run_method(run, train_script, overrides, settings, progress, poll)
            finally:
                run.evaluations = read_evaluations(run.output_dir, settings["max_iter"])
                write_report(runs, settings, output)
        run.finished = True
    write_report(runs, settings, output)
    return runs


def _table(runs: Sequence[MethodRun], settings: dict) -> str:
    iterations = sorted({e.iteration for r in runs for e in r.evaluations})
    lines = [
        "| method | " + " | ".join(f"AP / AP50 at {i}" for i in iterations) + " | training time | wall time |",
        "|---|" + "---|" * len(iterations) + "---|---|",
    ]
    for run in runs:
        at = {e.iteration: e for e in run.evaluations}
        cells = [f"{at[i].AP:.1f} / {at[i].AP50:.1f}" if i in at else "" for i in iterations]
        train = f"{run.evaluations[-1].train_seconds:.0f} s" if run.evaluations else ""
        lines.append(f"| {run.name} | " + " | ".join(cells) + f" | {train} | {run.wall_seconds:.0f} s |")
    return "\n".join(lines) + "\n"


def write_report(runs: Sequence[MethodRun], settings: dict, output: str) -> None:
    """race.json, race.md and race.png in `output`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(output, exist_ok=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    report = {
        **settings,
        "methods": {
            r.name: {
                "config": r.config,
                "output_dir": r.output_dir,
                "color": matplotlib.colors.to_hex(colors[i % len(colors)]),
                "finished": r.finished,
                "wall_seconds": round(r.wall_seconds, 1),
                "evaluations": [dataclasses.asdict(e) for e in r.evaluations],
            }
            for i, r in enumerate(runs)
        },
    }
    with open(os.path.join(output, "race.json"), "w") as f:
        json.dump(report, f, indent=1)

    total = sum(r.wall_seconds for r in runs)
    with open(os.path.join(output, "race.md"), "w") as f:
        f.write(
            f"Box AP / AP50 on the evaluation set after each number of iterations ({settings['max_iter']} in all). "
            f"Training time: the iterations alone; wall time: each training process, start-up and evaluations "
            f"included ({total:.0f} s for the race).\n\n" + _table(runs, settings)
        )

    fig, (by_iter, by_time) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for run in runs:
        color = report["methods"][run.name]["color"]
        ap = [e.AP for e in run.evaluations]
        by_iter.plot([e.iteration for e in run.evaluations], ap, "o-", color=color, label=run.name)
        by_time.plot([e.train_seconds for e in run.evaluations], ap, "o-", color=color, label=run.name)
    by_iter.set(xlabel="training iterations", ylabel="box AP", xlim=(0, settings["max_iter"] * 1.02))
    by_time.set(xlabel="training time (s, evaluations excluded)")
    by_iter.set_ylim(bottom=0)
    by_time.set_xlim(left=0)
    for ax in (by_iter, by_time):
        ax.grid(alpha=0.3)
    by_iter.legend(loc="upper left")
    fig.suptitle(
        f"box AP on {settings['test_dataset']}, trained on {settings['train_dataset']} "
        f"({settings['max_iter']} iterations of {settings['batch_size']} images)"
    )
    fig.tight_layout()
    fig.savefig(os.path.join(output, "race.png"), dpi=80)
    plt.close(fig)

#!/usr/bin/env python
r"""The convergence race: trains every method's quickstart config (configs/quickstart/*.py) on the embedded
dataset with the same data, batch and iterations, evaluates each at the same iterations, and draws box AP
against iterations and against training time.

    python tools/race.py                                         # every quickstart config
    python tools/race.py --methods detr sam_detr --evals 4 --output output/race
    python tools/race.py --methods detr sam_detr train.max_iter=400   # key=value: for every method

Each method trains with tools/lazyconfig_train_net.py --resume in <output>/<method> (log, metrics.json,
events, checkpoints): run the same command again to continue an interrupted race. Writes race.json,
race.md and race.png into <output>. See sam_detr/engine/race.py.
"""
import argparse
import sys
from pathlib import Path

from sam_detr.engine.race import find_methods, run_race

TOOLS = Path(__file__).resolve().parent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", metavar="METHOD", help="config names in --config-dir (default: all)")
    parser.add_argument("--config-dir", default=str(TOOLS.parent / "configs" / "quickstart"))
    parser.add_argument("--output", default="output/race", help="race.json/md/png here, each method's run below")
    parser.add_argument("--evals", type=int, default=4, help="evaluations per method, evenly spaced")
    parser.add_argument("--progress-period", type=float, default=30.0, help="seconds between progress lines")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value overrides for every method's config")
    args = parser.parse_args(argv)
    # `--methods a b key=value`: argparse gives the overrides after the methods to --methods
    methods = [m for m in args.methods or [] if "=" not in m]
    opts = [m for m in args.methods or [] if "=" in m] + args.opts
    try:
        configs = find_methods(args.config_dir, methods)
        run_race(
            configs,
            args.output,
            str(TOOLS / "lazyconfig_train_net.py"),
            overrides=opts,
            evals=args.evals,
            progress_period=args.progress_period,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        sys.exit(f"race.py: {e}")
    print(f"[race] done: {args.output}/race.md, race.png, race.json")
    print((Path(args.output) / "race.md").read_text().split("\n\n", 1)[1], end="")


if __name__ == "__main__":
    main()

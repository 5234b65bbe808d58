#!/usr/bin/env python
r"""Train or evaluate a model described by a LazyConfig file (Detectron2's flow, every knob under cfg.train).

    python tools/lazyconfig_train_net.py --config-file configs/sam_detr_r50.py --num-gpus 4
    python tools/lazyconfig_train_net.py --config-file configs/sam_detr_r50.py --eval-only \
        train.init_checkpoint=model.pth
    python tools/lazyconfig_train_net.py --config-file configs/quickstart/detr.py      # CPU, embedded dataset

`--resume` continues from the last checkpoint in train.output_dir; `key=value` arguments override the
config; `--num-machines`, `--machine-rank` and `--dist-url` run on several machines. On a machine
without GPU, `--num-gpus N` starts N CPU workers (gloo).
"""
from detectron2.engine import default_argument_parser

from sam_detr.engine.train_net import launch_main


def invoke_main() -> None:
    launch_main(default_argument_parser().parse_args())


if __name__ == "__main__":
    invoke_main()

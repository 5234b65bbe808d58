#!/usr/bin/env python
"""Convert an official checkpoint into a Detectron2 checkpoint for the model of a LazyConfig file.

    python tools/convert_official_weights.py --config-file configs/sam_detr_r50_12ep.py \
        --source checkpoint.pth --output sam_detr_r50_12ep.pth
    python tools/convert_official_weights.py --config-file configs/deformable_detr_r50_two_stage_50ep.py \
        --source r50_deformable_detr_plus_iterative_bbox_refinement_plus_plus_two_stage-checkpoint.pth \
        --output deformable_detr_r50_two_stage_50ep.pth
    python tools/convert_official_weights.py --config-file configs/conditional_detr_r50_50ep.py \
        --source ConditionalDETR_r50_epoch50.pth --output conditional_detr_r50_50ep.pth
    python tools/convert_official_weights.py --config-file configs/detr_r50_500ep.py \
        --source detr-r50-e632da11.pth --output detr_r50_500ep.pth
    python tools/convert_official_weights.py --config-file configs/ms_detr_pp_r50_12ep.py \
        --source ms_detr_pp_300.pth --output ms_detr_pp_r50_12ep.pth
    python tools/convert_official_weights.py --config-file configs/plain_detr_swinv2_small_sup_pt_boxrpe.py \
        --source plain_detr_checkpoint.pth --output plain_detr_swinv2_small_sup_pt_boxrpe.pth

The conversion is strict: every official weight is used and every weight of the model filled, with equal
shapes. When the model predicts the contiguous classes of `--dataset` (Detectron2's 80 COCO classes),
the class heads keep the official rows of those classes (the official models index COCO category ids,
91 rows; DETR's "no object" row stays last). The output loads with `DetectionCheckpointer` (e.g.
`train.init_checkpoint=<output>`).
"""
import argparse
import logging
import os

import torch
from detectron2.data import MetadataCatalog

from sam_detr.checkpoint.official import convert_official
from sam_detr.utils.cli import load_config, one_line_errors

logger = logging.getLogger("convert_official_weights")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="LazyConfig file of the model")
    parser.add_argument("--source", required=True, help="official checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="where to write the converted checkpoint (.pth)")
    parser.add_argument(
        "--dataset", default="coco_2017_val", help="registered dataset whose classes the model predicts"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, key=value")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.source):
        parser.error(f"--source {args.source}: no such file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        parser.error(f"--output {args.output}: its folder does not exist")
    import detectron2.data.datasets  # noqa: F401  (registers the builtin datasets' metadata)

    if MetadataCatalog.get(args.dataset).get("thing_dataset_id_to_contiguous_id") is None:
        parser.error(f"--dataset {args.dataset}: not a registered dataset with class ids (e.g. coco_2017_val)")
    load_config(parser, args.config_file, args.opts)  # a missing file or a bad override: the parser's error
    logging.basicConfig(level=logging.INFO)
    with one_line_errors(parser):
        checkpoint = convert_official(args.config_file, args.source, args.dataset, args.opts, log=logger.info)
        torch.save(checkpoint, args.output)
    logger.info(f"wrote {args.output}")


if __name__ == "__main__":
    main()

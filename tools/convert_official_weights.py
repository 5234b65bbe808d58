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
    python tools/convert_official_weights.py --config-file configs/dino_r50_4scale_12ep.py \
        --source checkpoint0011_4scale.pth --output dino_r50_4scale_12ep.pth

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
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog

from sam_detr.checkpoint import (
    convert_conditional_detr, convert_deformable_detr, convert_detr, convert_dino, convert_ms_detr, convert_plain_detr,
    convert_sam_detr, dataset_class_ids,
)
from sam_detr.modeling import DETR, DINO, SAMDETR, ConditionalDETR, DeformableDETR, PlainDETR
from sam_detr.modeling.transformer import MSDETRDecoderLayer
from sam_detr.utils.cli import load_config, one_line_errors

# meta-architecture, or decoder layer where a method is a meta-architecture with its own layers
# -> (converter of its official checkpoints, official repository)
CONVERTERS = {
    SAMDETR: (convert_sam_detr, "ZhangGongjie/SAM-DETR"),
    DeformableDETR: (convert_deformable_detr, "fundamentalvision/Deformable-DETR"),
    ConditionalDETR: (convert_conditional_detr, "Atten4Vis/ConditionalDETR"),
    DETR: (convert_detr, "facebookresearch/detr"),
    MSDETRDecoderLayer: (convert_ms_detr, "Atten4Vis/MS-DETR"),
    PlainDETR: (convert_plain_detr, "impiga/Plain-DETR"),
    DINO: (convert_dino, "IDEA-Research/DINO"),
}


def converter_for(model):
    """(converter, official repository) of the model: by its decoder layers' type first (MS-DETR is a
    DeformableDETR with its own layers), then by its meta-architecture."""
    layers = getattr(getattr(getattr(model, "transformer", None), "decoder", None), "layers", None)
    for kind in ([type(layers[0])] if layers else []) + [type(model)]:
        if kind in CONVERTERS:
            return CONVERTERS[kind]
    raise ValueError(f"no converter for {type(model).__name__}; known: {[c.__name__ for c in CONVERTERS]}")

logger = logging.getLogger("convert_official_weights")


def load_official(path: str) -> dict:
    """The "model" dict of an official checkpoint (its "args" is an argparse.Namespace)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load and pickle raise many types, none naming the file
        raise ValueError(
            f"--source {path} cannot be read (truncated, or not a checkpoint?): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(checkpoint, dict):
        raise ValueError(f"--source {path} holds a {type(checkpoint).__name__}, not a checkpoint's dict")
    return checkpoint.get("model", checkpoint)


def convert(config_file: str, source: str, dataset: str, opts=()) -> dict:
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))
    # only the names and shapes of the model are needed
    with torch.device("meta"):
        model = instantiate(cfg.model)
    converter, origin = converter_for(model)
    ids = dataset_class_ids(dataset)
    class_ids = ids if model.num_classes == len(ids) else None
    weights = converter(load_official(source), model.state_dict(), class_ids=class_ids)
    logger.info(f"converted {len(weights)} tensors" + (f", class heads mapped to {dataset}" if class_ids else ""))
    return {"model": weights, "__author__": f"{origin} (converted by sam_detr)", "matching_heuristics": False}


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
        torch.save(convert(args.config_file, args.source, args.dataset, args.opts), args.output)
    logger.info(f"wrote {args.output}")


if __name__ == "__main__":
    main()

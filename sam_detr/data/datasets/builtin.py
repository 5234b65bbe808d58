"""Registers the datasets that ship with sam_detr: "shapes_train" and "shapes_val" (see shapes.py).

COCO needs no registration here: Detectron2 registers "coco_2017_train" and "coco_2017_val" itself, under
$DETECTRON2_DATASETS.
"""
from .shapes import ShapesSpec, register_shapes

SHAPES_SPLITS = {
    "shapes_train": ShapesSpec(num_images=1500, seed=0),
    "shapes_val": ShapesSpec(num_images=200, seed=1),
}

for _name, _spec in SHAPES_SPLITS.items():
    register_shapes(_name, _spec)

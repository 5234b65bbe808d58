"""Datasets of sam_detr; importing this package registers them (see builtin.py). Your own COCO-format
datasets are registered from config fields (coco_json.py)."""
# coco_json first: it tells Detectron2's builtin datasets from those registered after it
from .coco_json import (
    DatasetNotRegisteredError, dataset_classes, dataset_names, num_classes_of, register_coco_json, require_registered,
)
from . import builtin  # noqa: F401  (registers the datasets)
from .builtin import SHAPES_SPLITS
from .shapes import (
    SHAPES_CLASSES,
    ShapesSpec,
    datasets_root,
    ensure_shapes,
    register_shapes,
    render_shapes_image,
    write_shapes,
)

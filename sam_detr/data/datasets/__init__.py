"""Datasets of sam_detr; importing this package registers them (see builtin.py)."""
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

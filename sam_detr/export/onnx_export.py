"""Export a DETR-family model to ONNX with dynamic batch size and image size (`export_onnx`).

The exporter is `torch.onnx.export(dynamo=True)`: `torch.export` traces the model with symbolic sizes, so the
sizes the Python code computes from tensor shapes (feature-level shapes, splits into levels, grids) stay
symbolic in the graph instead of being frozen at the example's values, as the TorchScript-based exporter's
tracing freezes every Python int; a size it would freeze anyway is an export error, not a silently wrong
graph. While it traces, the layers take their standard-operator paths (`torch.compiler.is_exporting()`):
multi-scale deformable attention through GridSample, RoIAlign through ONNX RoiAlign.
"""
import contextlib
import json
import logging
import os
import warnings
from typing import Dict, Optional, Sequence

import torch

from .deployable import DeployableDetector

__all__ = ["require_deploy_extra", "export_onnx", "INPUT_NAMES", "OUTPUT_NAMES", "MIN_OPSET", "DEFAULT_OPSET"]

logger = logging.getLogger(__name__)

INPUT_NAMES = ("images", "image_sizes")
OUTPUT_NAMES = ("boxes", "scores", "labels")
MIN_OPSET = 17  # LayerNormalization
DEFAULT_OPSET = 18
# the largest image side the exported graph is declared for
MAX_SIDE = 8192
INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
# the exporter's warnings that say nothing about this graph: the batch axis named once for both inputs; the
# adaptive RoIAlign sampling (torchvision's sampling_ratio -1) written as ONNX's 0, which is the same rule
QUIET_WARNINGS = ("# The axis name: .* will not be used", "ONNX export for RoIAlign with a non-zero sampling_ratio")


def _export_program(module, args, dynamic_shapes):
    """`torch.export.export` with every dimension of `dynamic_shapes` kept dynamic. Where the model needs a
    narrower range than declared (a larger minimum image side, so that its coarsest map has two pixels), the
    ranges torch.export suggests are taken; a suggestion to fix a size to the example's is an error. Returns
    the program and the dynamic shapes it was exported with."""
    try:
        return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False), dynamic_shapes
    except torch._dynamo.exc.UserError as e:
        try:
            refined = torch.export.dynamic_shapes.refine_dynamic_shapes_from_suggested_fixes(e.msg, dynamic_shapes)
        except Exception:
            raise e from None
        dims = [d for shapes in refined.values() for d in shapes.values()]
        # only narrower ranges: a derived dimension (e.g. width = 32 * k) would give a graph of some sizes only
        derived = torch.export.dynamic_shapes._DerivedDim
        if refined == dynamic_shapes or not all(isinstance(d, torch.export.Dim) and not isinstance(d, derived)
                                                for d in dims):
            raise
    return torch.export.export(module, args, dynamic_shapes=refined, strict=False), refined


@contextlib.contextmanager
def _quiet_exporter():
    """Without the exporter's QUIET_WARNINGS and the optimizer's log of every multi-output op it leaves alone
    (the level splits)."""
    optimizer_log = logging.getLogger("onnxscript.optimizer")
    level = optimizer_log.level
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        optimizer_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            optimizer_log.setLevel(level)


def require_deploy_extra(*modules: str) -> None:
    """ImportError naming the first of `modules` that is missing and the extra that installs it."""
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise ImportError(f"{name} is not installed: install the deploy extra (pip install -e .[deploy])", name=name)


def _max_stride(model, side: int = 256) -> int:
    """The largest stride among the head's feature levels, measured on a side x side image."""
    with torch.no_grad():
        x = torch.zeros(1, 3, side, side, device=model.device)
        features, _ = model.extract_batch_features(x, torch.zeros(1, side, side, dtype=torch.bool, device=model.device))
    return max(-(-side // min(f.shape[-2:])) for f in features)


def export_onnx(
    model,
    path: str,
    *,
    input_dtype: str = "uint8",
    opset: int = DEFAULT_OPSET,
    example_size: Sequence[int] = (2, 256, 320),
    metadata: Optional[Dict[str, object]] = None,
) -> str:
    """Writes `model` (a DETRBase model; see `DeployableDetector` for the graph's inputs and outputs) to the
    ONNX file `path`, for any batch size and any image size from min_side (just above the largest feature
    stride, so that the coarsest level has two rows and columns) to MAX_SIDE.

    Args:
        input_dtype: "uint8" or "float32", the dtype of the graph's `images`.
        opset: the ONNX opset, >= MIN_OPSET.
        example_size: (B, H, W) of the example the model is traced with (any size in range).
        metadata: written as the file's metadata (values JSON-encoded), with the model's "num_classes",
            "min_side" and "max_side".
    Returns:
        `path`.
    """
    require_deploy_extra("onnx", "onnxscript")
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype must be one of {sorted(INPUT_DTYPES)}, got {input_dtype!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is below {MIN_OPSET}, the first with LayerNormalization")
    wrapper = DeployableDetector(model)
    B, H, W = example_size
    device = model.device
    images = torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8, device=device).to(INPUT_DTYPES[input_dtype])
    image_sizes = torch.tensor([[H, W]] + [[H - 1, W - 1]] * (B - 1), dtype=torch.long, device=device)
    min_side = _max_stride(model) + 1
    if not min_side <= min(H, W):
        raise ValueError(f"example_size {tuple(example_size)}: the sides must be at least {min_side}")
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height", min=min_side, max=MAX_SIDE)
    width = torch.export.Dim("width", min=min_side, max=MAX_SIDE)
    dynamic_shapes = {"images": {0: batch, 2: height, 3: width}, "image_sizes": {0: batch}}
    with torch.no_grad(), _quiet_exporter():
        # torch.export first, on its own: torch.onnx.export would retry a failed capture with the sizes fixed
        # to the example's where the error suggests so, which gives a graph of one image size only
        exported, dynamic_shapes = _export_program(wrapper, (images, image_sizes), dynamic_shapes)
        # optimize=False: onnxscript's optimizer (0.7.2) drops the min/max inputs of some Clip nodes of
        # Plain-DETR's graph, leaving a file ONNX Runtime refuses; ONNX Runtime optimises the graph when it
        # loads it anyway
        program = torch.onnx.export(
            exported, (images, image_sizes), dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES), verbose=False, optimize=False,
        )
    min_side = max(dynamic_shapes["images"][2].min, dynamic_shapes["images"][3].min)
    info = {"num_classes": model.num_classes, "min_side": min_side, "max_side": MAX_SIDE, **(metadata or {})}
    program.model.metadata_props.update({k: json.dumps(v) for k, v in info.items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    program.save(path, external_data=False)
    return path

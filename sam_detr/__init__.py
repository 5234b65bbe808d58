"""sam_detr: fast-converging DETR detectors (SAM-DETR, Deformable DETR, ...) inside Detectron2.

`sam_detr.layers` (ops and small blocks) needs only torch and torchvision. Everything under
`sam_detr.modeling`, `sam_detr.data` and `sam_detr.engine` is built on Detectron2; importing this
package imports `sam_detr.modeling` where Detectron2 is installed, so that the meta-architectures are
registered in `META_ARCH_REGISTRY` as soon as `sam_detr` is imported.
"""
import importlib.util

import torch  # noqa: F401  (loads libtorch before sam_detr._C is imported)

__version__ = "0.1.0"

if importlib.util.find_spec("detectron2") is not None:
    from . import data  # noqa: F401  (registers the datasets)
    from . import modeling  # noqa: F401  (registers the meta-architectures)

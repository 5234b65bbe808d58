"""Deployment: a DETR-family model exported to ONNX (any batch and image size, the post-processing in the
graph) and run with ONNX Runtime like the PyTorch model. `export_onnx` needs onnx and onnxscript,
`OnnxDetector` onnxruntime: the `deploy` extra (`pip install -e .[deploy]`)."""
from .deployable import DeployableDetector, check_exportable
from .onnx_export import export_onnx, require_deploy_extra
from .onnx_runtime import OnnxDetector, pad_images
from .verify import DetectionDifferences, compare_detections, verify_export

__all__ = [
    "DeployableDetector", "check_exportable", "export_onnx", "require_deploy_extra", "OnnxDetector", "pad_images", "DetectionDifferences",
    "compare_detections", "verify_export",
]

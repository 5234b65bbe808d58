"""Run an exported ONNX file (`export_onnx`) with ONNX Runtime, as the PyTorch model runs.

`OnnxDetector` takes what the PyTorch model takes, d2's `batched_inputs`, and returns what it returns,
`[{"instances": Instances}]`, so that `inference_on_dataset` with a COCOEvaluator, the demo and the tests
treat both alike. The images are padded into one batch as the PyTorch model pads them (`pad_images`); the
graph does the rest; `detector_postprocess` scales the detections to each input's "height" and "width" and
drops empty boxes, as in the PyTorch model.
"""
import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.modeling import detector_postprocess
from detectron2.structures import Boxes, Instances

from .onnx_export import INPUT_NAMES, require_deploy_extra

__all__ = ["OnnxDetector", "pad_images"]

ONNX_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}


def pad_images(images: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per image (3, h, w) -> the (B, 3, H, W) batch zero-padded at the bottom/right to the largest h and w
    (as `ImageList.from_tensors` without size_divisibility), and (B, 2) int64 (h, w)."""
    if not images:
        raise ValueError("no images to batch")
    for i, image in enumerate(images):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image {i} must have shape (3, H, W), got {tuple(image.shape)}")
    sizes = torch.tensor([image.shape[-2:] for image in images], dtype=torch.long)
    H, W = sizes.max(0).values.tolist()
    batch = images[0].new_zeros((len(images), 3, H, W))
    for i, image in enumerate(images):
        batch[i, :, : image.shape[1], : image.shape[2]] = image
    return batch, sizes


class OnnxDetector:
    """An exported detector in an ONNX Runtime session, called like the PyTorch model in eval mode.

    Args:
        path: the .onnx file.
        num_threads: ONNX Runtime's intra-op threads (None: its default, one per core).
        providers: ONNX Runtime execution providers (default: the CPU).
    Attributes:
        metadata: the file's metadata (`export_onnx`), decoded.
    """

    def __init__(self, path: str, num_threads: Optional[int] = None, providers: Sequence[str] = ("CPUExecutionProvider",)):
        require_deploy_extra("onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(path, options, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own types, with the reason in the message
            raise ValueError(f"cannot load the ONNX file {path}: {e}") from e
        inputs = {i.name: i for i in self.session.get_inputs()}
        if sorted(inputs) != sorted(INPUT_NAMES):
            raise ValueError(f"{path}: its inputs {sorted(inputs)} are not an exported detector's {list(INPUT_NAMES)}")
        self.input_dtype = ONNX_DTYPES[inputs["images"].type]
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: Dict[str, object] = {k: json.loads(v) for k, v in props.items()}

    def run(self, images: np.ndarray, image_sizes: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The graph on a padded batch: boxes (B, N, 4), scores (B, N), labels (B, N) (`DeployableDetector`)."""
        feeds = {"images": images.astype(self.input_dtype, copy=False), "image_sizes": image_sizes.astype(np.int64)}
        boxes, scores, labels = self.session.run(None, feeds)
        return boxes, scores, labels

    def __call__(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """d2's inputs (per image, "image" (3, H, W) in the model's input format, optional "height"/"width") ->
        per image, {"instances": Instances} at its "height" and "width", as the PyTorch model returns."""
        for i, x in enumerate(batched_inputs):
            if "image" not in x:
                raise KeyError(f"input {i} (image_id {x.get('image_id', '?')}) has no 'image'")
        images, sizes = pad_images([x["image"].cpu() for x in batched_inputs])
        boxes, scores, labels = self.run(images.numpy(), sizes.numpy())
        results = []
        for i, x in enumerate(batched_inputs):
            h, w = sizes[i].tolist()
            instances = Instances((h, w))
            instances.pred_boxes = Boxes(torch.from_numpy(boxes[i]))
            instances.scores = torch.from_numpy(scores[i])
            instances.pred_classes = torch.from_numpy(labels[i])
            results.append({"instances": detector_postprocess(instances, x.get("height", h), x.get("width", w))})
        return results

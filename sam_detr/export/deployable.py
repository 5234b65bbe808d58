"""A DETR-family model as one function of a padded image batch, for export: pixels in, detections out.

`DeployableDetector` holds everything the PyTorch model does between `batched_inputs` and its `Instances`
that an exported graph can hold: the normalisation, the padding to `size_divisibility`, the padding masks,
the backbone and the head, and the method's own post-processing (`DETRBase.select_detections`), with the
boxes mapped to each image's input pixels and clipped to it, as `detector_postprocess` clips them. What stays
outside is what depends on the data's length: scaling to another output size and dropping empty boxes
(`detections_to_outputs`).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.meta_arch.detr_base import DETRBase
from ..modeling.postprocess import boxes_to_pixels
from ..modeling.transformer.levels import padding_mask

__all__ = ["DeployableDetector", "check_exportable"]


def check_exportable(model: nn.Module) -> None:
    """Raises ValueError (one line) for a model or an option that cannot be exported as one graph."""
    if not isinstance(model, DETRBase):
        raise ValueError(f"{type(model).__name__} is not a DETRBase model: only the DETR family exports")
    if model.batch_invariant:
        raise ValueError(
            "batch_invariant=True runs the backbone once per image at that image's own size, a loop over the batch "
            "with data-dependent sizes that one ONNX graph cannot hold: export with model.batch_invariant=False "
            "(the official batching; with one unpadded image per call both give the same detections)"
        )


class DeployableDetector(nn.Module):
    """Wraps a DETRBase model (in eval mode) for export.

    forward(images, image_sizes):
        images: (B, 3, H, W) uint8 or float, RGB on the 0-255 scale (the model's input format), each image
            at the top-left, the rest padding (its values are ignored: zeroed after normalisation, as the
            PyTorch model pads). Pad to the batch's largest image for the PyTorch model's batching (the
            padding reaches the backbone: the official semantics).
        image_sizes: (B, 2) int64, each image's (h, w).
    Returns:
        boxes (B, N, 4) float32 (x1, y1, x2, y2) in input pixels, clipped to each image; scores (B, N)
        float32; labels (B, N) int64 (contiguous class ids); N fixed by the model (`num_select`, or the
        number of queries where smaller), best first for top-k models.
    """

    def __init__(self, model: DETRBase):
        super().__init__()
        check_exportable(model)
        self.model = model
        self.eval()  # inference only

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        x = images.to(m.pixel_mean.dtype)
        divisor = m.size_divisibility
        if divisor > 1:  # ImageList.from_tensors pads the batch to a multiple
            H, W = x.shape[-2:]
            x = F.pad(x, (0, (divisor - W % divisor) % divisor, 0, (divisor - H % divisor) % divisor))
        mask = padding_mask(image_sizes, x.shape[-2:])
        x = ((x - m.pixel_mean) / m.pixel_std).masked_fill(mask[:, None], 0.0)
        features, masks = m.extract_batch_features(x, mask)
        scores, labels, boxes = m.select_detections(m.forward_head(features, masks), image_sizes)
        boxes = boxes_to_pixels(boxes, image_sizes)
        # clipped to the image, as detector_postprocess clips (x to [0, w], y to [0, h])
        limits = image_sizes.flip(-1).repeat(1, 2).to(boxes.dtype)[:, None]
        boxes = torch.minimum(boxes.clamp(min=0), limits)
        return boxes, scores, labels

"""Models of LazyConfig files for inference, as the tools under tools/ build them.

`Predictor` is the LazyConfig counterpart of d2's `DefaultPredictor`: the model of `cfg.model` with the
weights of `cfg.train.init_checkpoint`, fed like the test loader feeds it.
"""
import logging
from typing import Optional

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import Instances
from torch import nn

from .checkpointer import StrictCheckpointer

__all__ = ["load_checkpoint", "build_inference_model", "test_metadata", "Predictor"]

logger = logging.getLogger(__name__)


def load_checkpoint(model: nn.Module, path: str) -> None:
    """Loads the weights at `path` (a file, or a URL such as detectron2://...) into `model`, strictly (every
    weight of the model filled, every weight of the checkpoint used: `StrictCheckpointer`); an empty path
    keeps the random initialisation."""
    if not path:
        logger.warning("No checkpoint (train.init_checkpoint is empty): the model keeps its random initialisation")
        return
    StrictCheckpointer(model).load(path)


def build_inference_model(cfg, device: Optional[str] = None) -> nn.Module:
    """`cfg.model` on `device` (default: cfg.train.device) with the weights of cfg.train.init_checkpoint, in
    eval mode."""
    model = instantiate(cfg.model)
    model.to(device or cfg.train.device)
    load_checkpoint(model, cfg.train.init_checkpoint)
    return model.eval()


def test_metadata(cfg):
    """The metadata (class names, colours, dataset ids) of the first dataset of cfg.dataloader.test."""
    names = cfg.dataloader.test.dataset.names
    return MetadataCatalog.get(names if isinstance(names, str) else names[0])


class Predictor:
    """Detections of one image at a time, with the test loader's resize (cfg.dataloader.test.mapper).

    Attributes:
        model: from `build_inference_model(cfg, device)`.
        input_format: the channel order the model takes ("RGB" or "BGR"): read images in it.
        metadata: of the test dataset, for class names and dataset ids.
    """

    def __init__(self, cfg, device: Optional[str] = None):
        self.model = build_inference_model(cfg, device)
        mapper = instantiate(cfg.dataloader.test.mapper)
        self.augmentations = mapper.augmentations
        self.input_format = mapper.image_format
        self.metadata = test_metadata(cfg)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) -> (h, w, 3): the image as the test loader resizes it, the size the model sees."""
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        return aug_input.image

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Instances:
        """
        Args:
            image: (H, W, 3) uint8 in `input_format`.
        Returns:
            the detections, in the pixel coordinates of `image`, on the CPU.
        """
        height, width = image.shape[:2]
        tensor = torch.as_tensor(np.ascontiguousarray(self.resize(image).transpose(2, 0, 1)))
        outputs = self.model([{"image": tensor, "height": height, "width": width}])
        return outputs[0]["instances"].to("cpu")

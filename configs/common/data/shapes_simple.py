"""The embedded synthetic dataset of shapes.py with Detectron2's plain DatasetMapper (ResizeShortestEdge
and flip) and no worker processes: the quickest data for smoke tests of a model or of the training loop.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper

from .shapes import NUM_TRAIN_IMAGES, dataloader  # noqa: F401 (NUM_TRAIN_IMAGES: read by LazyConfig.load)

dataloader.train.mapper = L(DatasetMapper)(
    is_train=True,
    augmentations=[
        L(T.ResizeShortestEdge)(short_edge_length=[128, 160, 192], sample_style="choice", max_size=320),
        L(T.RandomFlip)(horizontal=True),
    ],
    image_format="RGB",
)
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.mapper = L(DatasetMapper)(
    is_train=False,
    augmentations=[L(T.ResizeShortestEdge)(short_edge_length=160, max_size=320)],
    image_format="${...train.mapper.image_format}",
)
dataloader.test.num_workers = 0

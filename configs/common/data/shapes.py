"""The embedded synthetic dataset ("shapes_train" / "shapes_val", see sam_detr/data/datasets/shapes.py),
generated on first use, in the COCO pipeline of coco_detr.py with a small-image DETR augmentation: flip,
then a DETR resize of the shorter side.

The images are 128-192 px a side, so the resize keeps their scale about the same while varying it.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from sam_detr.data import DetrResize
from sam_detr.data import datasets

from .coco_detr import dataloader

# Images per epoch, for epoch-based schedules (every image has objects; none is filtered).
NUM_TRAIN_IMAGES = datasets.SHAPES_SPLITS["shapes_train"].num_images

# read by the training tool to turn train.epochs into iterations
dataloader.train_images = NUM_TRAIN_IMAGES
dataloader.train.dataset.names = "shapes_train"
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(DetrResize)(short_edge_length=[128, 144, 160, 176, 192], max_size=320),
]
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 2
dataloader.test.dataset.names = "shapes_val"
dataloader.test.mapper.augmentations = [L(DetrResize)(short_edge_length=160, max_size=320)]
dataloader.test.num_workers = 2

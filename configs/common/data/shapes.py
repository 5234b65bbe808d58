"""The embedded synthetic dataset ("shapes_train" / "shapes_val", see sam_detr/data/datasets/shapes.py),
generated on first use, with a small-image DETR augmentation: flip, then a DETR resize of the shorter side.

The images are 128-192 px a side, so the resize keeps their scale about the same while varying it.
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator

from sam_detr.data import DetrDatasetMapper, DetrResize
from sam_detr.data import datasets

# Images per epoch, for epoch-based schedules (every image has objects; none is filtered).
NUM_TRAIN_IMAGES = datasets.SHAPES_SPLITS["shapes_train"].num_images

dataloader = OmegaConf.create()
# read by the training tool to turn train.epochs into iterations
dataloader.train_images = NUM_TRAIN_IMAGES

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_train", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.RandomFlip)(horizontal=True),
            L(DetrResize)(short_edge_length=[128, 144, 160, 176, 192], max_size=320),
        ],
        image_format="RGB",
    ),
    total_batch_size=8,
    num_workers=2,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        is_train=False,
        augmentations=[L(DetrResize)(short_edge_length=160, max_size=320)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=2,
)

dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
)

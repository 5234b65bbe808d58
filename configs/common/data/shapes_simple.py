"""The embedded synthetic dataset with Detectron2's plain DatasetMapper (ResizeShortestEdge and flip) and
no worker processes: the quickest data for smoke tests of a model or of the training loop.
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator

from sam_detr.data import datasets

NUM_TRAIN_IMAGES = datasets.SHAPES_SPLITS["shapes_train"].num_images

dataloader = OmegaConf.create()
# read by the training tool to turn train.epochs into iterations
dataloader.train_images = NUM_TRAIN_IMAGES

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_train", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=[128, 160, 192], sample_style="choice", max_size=320),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
    ),
    total_batch_size=4,
    num_workers=0,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=160, max_size=320)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=0,
)

dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
)

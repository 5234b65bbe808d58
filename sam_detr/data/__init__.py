"""Data of the DETR family on Detectron2: the official augmentation, the dataset mapper, the dataset checks,
the resumable train loader and the embedded synthetic dataset. Importing this package registers the
datasets of `sam_detr.data.datasets`."""
from . import datasets  # noqa: F401  (registers the datasets)
from .dataset_checks import check_dataset_dicts, checked_dataset_dicts
from .dataset_policies import DatasetError, Policies
from .detr_dataset_mapper import DetrDatasetMapper
from .image_checks import BadImageError
from .train_loader import TrainLoader
from .transforms import (
    DETR_CROP_SCALES,
    DETR_CROP_SIZE,
    DETR_MAX_SIZE,
    DETR_TEST_SCALE,
    DETR_TRAIN_SCALES,
    DetrResize,
    RandomSelect,
    RandomSizeCrop,
    detr_train_augmentation,
)

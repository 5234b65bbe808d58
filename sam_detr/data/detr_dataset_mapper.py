"""The dataset mapper of the DETR family: Detectron2 dataset dicts -> model inputs."""
import copy
import logging
import math
from typing import List, Union

import numpy as np
import torch
from fvcore.transforms.transform import CropTransform

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances

from .transforms import DETR_CROP_SCALES, DetrResize, detr_train_augmentation

__all__ = ["DetrDatasetMapper"]

_SUPPORTED_BOX_MODES = (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)


class DetrDatasetMapper:
    """
    Map a dataset dict in Detectron2's format to the input of a DETR model, the way the official DETR
    code prepares its targets:

    1. read the image (in `image_format`) and check its size against the dict;
    2. drop crowd annotations (the official code never matches them) and clamp the boxes to the image;
    3. apply the augmentations; boxes are clamped again after every crop, like the official `crop`;
    4. drop boxes left with no width or height.

    It returns the dict with "image" (a uint8 CxHxW tensor) and, in training, "instances" (`gt_boxes` in
    XYXY pixels of the augmented image, `gt_classes`), which may be empty: images without annotations are
    trained on, as in the official code. Annotations that cannot be right (a NaN coordinate, a negative
    width, an unknown box mode, ...) raise an error naming the image and the field instead of being
    dropped, because dropping them would silently change the training data.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[Union[T.Augmentation, T.Transform]],
        image_format: str = "RGB",
    ):
        """
        Args:
            is_train: whether the mapper is used in training (annotations are turned into "instances")
                or in inference (annotations are removed).
            augmentations: augmentations or deterministic transforms to apply, in order. Boxes follow
                flips, resizes and crops.
            image_format: an image format supported by :func:`detection_utils.read_image`; "RGB" for the
                models of this project, whose pixel mean and std are the torchvision ones.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        mode = "training" if is_train else "inference"
        logging.getLogger(__name__).info(f"[DetrDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        """
        For yacs configs: the official augmentation with the scales of `cfg.INPUT`. In training,
        `cfg.INPUT.CROP.ENABLED` adds the crop branch with `cfg.INPUT.CROP.SIZE` as (min, max) crop size,
        which must then have `cfg.INPUT.CROP.TYPE == "absolute_range"` (the meaning of the official crop).
        The sizes are choices, as in the official code: `cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING` must be "choice".
        """
        if is_train and cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING != "choice":
            sampling = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
            raise ValueError(f'DetrDatasetMapper needs INPUT.MIN_SIZE_TRAIN_SAMPLING "choice", got {sampling!r}')
        if is_train and cfg.INPUT.CROP.ENABLED:
            if cfg.INPUT.CROP.TYPE != "absolute_range":
                raise ValueError(
                    f'DetrDatasetMapper needs INPUT.CROP.TYPE "absolute_range", got {cfg.INPUT.CROP.TYPE!r}'
                )
            augmentations = detr_train_augmentation(
                cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, DETR_CROP_SCALES, tuple(cfg.INPUT.CROP.SIZE)
            )
        elif is_train:
            augmentations = [
                T.RandomFlip(horizontal=True),
                DetrResize(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN),
            ]
        else:
            augmentations = [DetrResize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
        return {"is_train": is_train, "augmentations": augmentations, "image_format": cfg.INPUT.FORMAT}

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): metadata of one image, in Detectron2's dataset format.

        Returns:
            dict: the format that the models of this project take.
        """
        dataset_dict = copy.deepcopy(dataset_dict)  # it will be modified below
        try:
            image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        except OSError as e:
            raise OSError(f"{_describe(dataset_dict)}: cannot read the image: {e}") from e
        utils.check_image_size(dataset_dict, image)
        if self.is_train:
            # Checked before augmenting, so that a bad annotation fails however the augmentation goes.
            boxes, classes = _read_annotations(dataset_dict, image.shape[:2])
        dataset_dict.pop("annotations", None)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.is_train:
            dataset_dict["instances"] = _transform_instances(boxes, classes, transforms, image.shape[:2])
        return dataset_dict


def _describe(dataset_dict) -> str:
    return f"image_id={dataset_dict.get('image_id')!r} ({dataset_dict.get('file_name')})"


def _read_annotations(dataset_dict, image_shape):
    """
    The non-crowd boxes of a dataset dict as float32 XYXY pixels clamped to the image, and their
    classes. Raises ValueError, naming the image, the annotation and the field, on an annotation that
    cannot be right.
    """
    if "annotations" not in dataset_dict:
        raise ValueError(
            f"{_describe(dataset_dict)}: no 'annotations' field; an image without objects needs an "
            "empty list, so that a dataset registered without annotations is not trained on as background"
        )
    boxes, is_xywh, classes = [], [], []
    for index, anno in enumerate(dataset_dict["annotations"]):
        where = f"{_describe(dataset_dict)}, annotation {index}"
        if anno.get("iscrowd", 0):
            continue
        for key in ("bbox", "bbox_mode", "category_id"):
            if key not in anno:
                raise ValueError(f"{where}: no '{key}' field")
        mode = anno["bbox_mode"]
        if mode not in _SUPPORTED_BOX_MODES:
            raise ValueError(f"{where}: unsupported bbox_mode {mode!r}; expected one of {list(_SUPPORTED_BOX_MODES)}")
        try:
            box = [float(v) for v in anno["bbox"]]
        except (TypeError, ValueError):
            box = []
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise ValueError(f"{where}: bbox must be 4 finite numbers, got {anno['bbox']!r}")
        xywh = mode == BoxMode.XYWH_ABS
        width, height = (box[2], box[3]) if xywh else (box[2] - box[0], box[3] - box[1])
        if width < 0 or height < 0:
            raise ValueError(f"{where}: bbox {anno['bbox']!r} ({BoxMode(mode).name}) has a negative width or height")
        category = anno["category_id"]
        if not isinstance(category, (int, np.integer)) or isinstance(category, bool) or category < 0:
            raise ValueError(f"{where}: category_id must be a non-negative integer, got {category!r}")
        boxes.append(box)
        is_xywh.append(xywh)
        classes.append(int(category))

    # float32 and the order of operations of the official code, so that the boxes match it bit for bit
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    is_xywh = np.asarray(is_xywh, dtype=bool)
    boxes[is_xywh, 2:] += boxes[is_xywh, :2]
    h, w = image_shape
    np.clip(boxes, 0, np.array([w, h, w, h], dtype=np.float32), out=boxes)
    return boxes, np.asarray(classes, dtype=np.int64)


def _transform_instances(boxes, classes, transforms, image_shape) -> Instances:
    for tfm in transforms.transforms:
        boxes = tfm.apply_box(boxes)
        if isinstance(tfm, CropTransform):
            np.clip(boxes, 0, np.array([tfm.w, tfm.h, tfm.w, tfm.h], dtype=np.float32), out=boxes)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    instances = Instances(image_shape)
    instances.gt_boxes = Boxes(torch.from_numpy(np.ascontiguousarray(boxes[keep])))
    instances.gt_classes = torch.from_numpy(classes[keep])
    return instances

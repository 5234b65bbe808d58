"""The dataset mapper of the DETR family: Detectron2 dataset dicts -> model inputs."""
import copy
import logging
from typing import List, Union

import numpy as np
import torch
from fvcore.transforms.transform import CropTransform
from PIL import Image

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from detectron2.utils.file_io import PathManager

from .dataset_checks import InvalidAnnotation, annotation_box, crowd_flag, describe_image
from .dataset_policies import Policies
from .image_checks import BadImageError, size_mismatch, unreadable
from .transforms import DETR_CROP_SCALES, DetrResize, detr_train_augmentation

__all__ = ["DetrDatasetMapper", "BadImageError"]

logger = logging.getLogger(__name__)

# PIL modes read as they are; the others (grayscale, with alpha, palette, 16-bit, CMYK...) are converted
_PLAIN_MODES = {"RGB": ("RGB", "BGR", "YUV-BT.601"), "L": ("L",)}
# bad images skipped in a row before the mapper gives up: the dataset is then broken, not an image
_MAX_SKIPPED_IN_A_ROW = 100


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
    dropped, because dropping them would silently change the training data (`checked_dataset_dicts`
    applies the policies of the dataset before this).

    Images: one that cannot be read (missing, corrupt, truncated) or whose size is not the dict's
    width/height raises a `BadImageError` naming the image, or with `bad_images="skip"` (training only)
    is skipped with a warning that names it and counts the skipped ones; the train loader then takes
    another image. Grayscale, 4-channel, palette and 16-bit images are converted to `image_format` by
    PIL, as Detectron2's `read_image` does, and each is logged once per process.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[Union[T.Augmentation, T.Transform]],
        image_format: str = "RGB",
        bad_images: str = "error",
    ):
        """
        Args:
            is_train: whether the mapper is used in training (annotations are turned into "instances")
                or in inference (annotations are removed).
            augmentations: augmentations or deterministic transforms to apply, in order. Boxes follow
                flips, resizes and crops.
            image_format: an image format supported by :func:`detection_utils.read_image`; "RGB" for the
                models of this project, whose pixel mean and std are the torchvision ones.
            bad_images: "error" or, in training only, "skip" (see the class docstring). An evaluation
                without some images would report a wrong AP: COCOEvaluator still counts their ground truth.
        """
        Policies(bad_images=bad_images, evaluation=not is_train)  # refuses a policy that is not one
        self.is_train = is_train
        self.bad_images = bad_images
        self._skipped = self._skipped_in_a_row = 0
        self._converted = set()
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
            image = self.read_image(dataset_dict)
        except BadImageError as e:
            if self.bad_images == "error":
                raise
            return self._skip(e)
        self._skipped_in_a_row = 0
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

    def read_image(self, dataset_dict) -> np.ndarray:
        """The image of a dataset dict, HxWxC in `image_format`, as Detectron2's `read_image` reads it (EXIF
        orientation applied); its width and height are set in the dict where absent. Raises BadImageError."""
        where = describe_image(dataset_dict)
        file_name = dataset_dict["file_name"]
        try:
            with PathManager.open(file_name, "rb") as f:
                pil = Image.open(f)
                mode = pil.mode
                image = utils.convert_PIL_to_numpy(utils._apply_exif_orientation(pil), self.image_format)
        # PIL raises many types (OSError, SyntaxError, ValueError, struct.error, ...), none naming the file
        except Exception as e:
            raise BadImageError(f"{where}: {unreadable(e)}") from e
        if self.image_format not in _PLAIN_MODES.get(mode, ()) and file_name not in self._converted:
            self._converted.add(file_name)
            logger.info(f"{where}: converted from PIL mode {mode!r} to {self.image_format}")
        h, w = image.shape[:2]
        mismatch = size_mismatch(dataset_dict, w, h)
        if mismatch:
            raise BadImageError(f"{where}: {mismatch}")
        dataset_dict["width"], dataset_dict["height"] = w, h
        return image

    def _skip(self, error: BadImageError) -> None:
        self._skipped += 1
        self._skipped_in_a_row += 1
        if self._skipped_in_a_row >= _MAX_SKIPPED_IN_A_ROW:
            raise BadImageError(f"{self._skipped_in_a_row} bad images in a row, the last: {error}") from error
        logger.warning(f"skipped {error} (bad_images='skip'; {self._skipped} skipped by this process)")
        return None


def _read_annotations(dataset_dict, image_shape):
    """
    The non-crowd boxes of a dataset dict as float32 XYXY pixels clamped to the image, and their
    classes. Raises ValueError, naming the image, the annotation and the field, on an annotation that
    cannot be right.
    """
    if "annotations" not in dataset_dict:
        raise ValueError(
            f"{describe_image(dataset_dict)}: no 'annotations' field; an image without objects needs an "
            "empty list, so that a dataset registered without annotations is not trained on as background"
        )
    boxes, classes = [], []
    for index, anno in enumerate(dataset_dict["annotations"]):
        try:
            if crowd_flag(anno):
                continue
            boxes.append(annotation_box(anno))
        except InvalidAnnotation as e:
            raise ValueError(f"{describe_image(dataset_dict)}, annotation {index}: {e}") from None
        classes.append(int(anno["category_id"]))
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
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

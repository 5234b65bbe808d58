"""The DETR augmentations as Detectron2 `Augmentation`s.

Every method in this project trains with the augmentation of the official DETR code
(`datasets/transforms.py` there): a horizontal flip, then with probability 0.5 either a random resize, or a
random resize, a random-size crop and a second random resize. Detectron2 has no equivalent of three of its
parts, which are here:

* `DetrResize`: DETR's resize rule, which is not `ResizeShortestEdge`'s (see `DetrResize.get_output_shape`).
* `RandomSizeCrop`: a crop whose width and height are drawn independently, in pixels.
* `RandomSelect`: one of two augmentation lists, chosen at random.

Sampling uses `np.random`, like Detectron2's own augmentations, so that Detectron2 seeds it in every data
loader worker.
"""
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from fvcore.transforms.transform import CropTransform, Transform
from PIL import Image

from detectron2.data import transforms as T

__all__ = [
    "DETR_TRAIN_SCALES",
    "DETR_CROP_SCALES",
    "DETR_CROP_SIZE",
    "DETR_MAX_SIZE",
    "DETR_TEST_SCALE",
    "DetrResize",
    "RandomSizeCrop",
    "RandomSelect",
    "detr_train_augmentation",
]

# The official COCO values, shared by all five official code bases.
DETR_TRAIN_SCALES = tuple(range(480, 801, 32))
DETR_CROP_SCALES = (400, 500, 600)
DETR_CROP_SIZE = (384, 600)
DETR_MAX_SIZE = 1333
DETR_TEST_SCALE = 800


class DetrResize(T.Augmentation):
    """
    Resize the shorter side to a length chosen uniformly from `short_edge_length`, keeping the aspect
    ratio, with the rounding of the official DETR code (the official `RandomResize`), so that the inputs
    of a ported model are bit-identical to the official ones.
    """

    def __init__(
        self,
        short_edge_length: Union[int, Sequence[int]],
        max_size: Optional[int] = None,
        interp=Image.BILINEAR,
    ):
        """
        Args:
            short_edge_length: the candidate lengths of the shorter side, or one length.
            max_size: the longer side is kept at most about this long (see `get_output_shape`);
                None for no limit.
            interp: PIL interpolation method. The official code resizes PIL images with bilinear
                interpolation, which `ResizeTransform` reproduces on uint8 images.
        """
        super().__init__()
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length,)
        short_edge_length = tuple(int(s) for s in short_edge_length)
        if not short_edge_length or min(short_edge_length) <= 0:
            raise ValueError(f"short_edge_length must be positive lengths, got {short_edge_length}")
        max_size = None if max_size is None else int(max_size)
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        size = self.short_edge_length[np.random.randint(len(self.short_edge_length))]
        new_h, new_w = self.get_output_shape(h, w, size, self.max_size)
        return T.ResizeTransform(h, w, new_h, new_w, self.interp)

    @staticmethod
    def get_output_shape(h: int, w: int, size: int, max_size: Optional[int]) -> Tuple[int, int]:
        """
        The official rule. It differs from `ResizeShortestEdge.get_output_shape`:

        * where the longer side would exceed `max_size`, the target of the *shorter* side is lowered to
          `int(round(max_size * short / long))` (Python's round: half to even), and the longer side
          then follows from it, so it can end up a little below `max_size`;
        * the longer side is floored, `int(size * long / short)`, not rounded;
        * an image whose shorter side already has the target length keeps its size.

        Returns:
            (new_h, new_w)
        """
        if max_size is not None:
            min_original_size = float(min(h, w))
            max_original_size = float(max(h, w))
            if max_original_size / min_original_size * size > max_size:
                size = int(round(max_size * min_original_size / max_original_size))
        if (w <= h and w == size) or (h <= w and h == size):
            return h, w
        if w < h:
            return int(size * h / w), size
        return size, int(size * w / h)


class RandomSizeCrop(T.Augmentation):
    """
    Crop a region whose width is drawn uniformly from [min_size, min(image width, max_size)] and whose
    height, independently, from [min_size, min(image height, max_size)], at a uniformly random position
    (the official `RandomSizeCrop`).

    The official code fails on an image side shorter than `min_size`; here the crop then keeps that
    whole side, so that small-image configurations cannot crash on an odd image. Everywhere else the
    sampling is the official one.
    """

    def __init__(self, min_size: int, max_size: int):
        """
        Args:
            min_size, max_size: bounds of the crop's width and height, in pixels.
        """
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"RandomSizeCrop needs 0 < min_size <= max_size, got {min_size}, {max_size}")
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        crop_w = self._sample_length(w)
        crop_h = self._sample_length(h)
        x0 = int(np.random.randint(w - crop_w + 1))
        y0 = int(np.random.randint(h - crop_h + 1))
        return CropTransform(x0, y0, crop_w, crop_h, orig_w=w, orig_h=h)

    def _sample_length(self, side: int) -> int:
        high = min(side, self.max_size)
        low = min(self.min_size, high)
        return int(np.random.randint(low, high + 1))


class RandomSelect(T.Augmentation):
    """
    Apply one of two augmentation lists: `augs_a` with probability `prob`, else `augs_b`
    (the official `RandomSelect`).
    """

    def __init__(
        self,
        augs_a: List[Union[T.Augmentation, Transform]],
        augs_b: List[Union[T.Augmentation, Transform]],
        prob: float = 0.5,
    ):
        """
        Args:
            augs_a, augs_b: the two augmentation lists; each is applied in order.
            prob: probability of choosing `augs_a`.
        """
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.augs_a = T.AugmentationList(augs_a)
        self.augs_b = T.AugmentationList(augs_b)
        self.prob = prob

    def __call__(self, aug_input) -> Transform:
        # Like AugmentationList, this has no get_transform: a later augmentation of a list may depend on
        # what an earlier one did to the input, so the transform is only known once the list is applied.
        chosen = self.augs_a if self._rand_range() < self.prob else self.augs_b
        return chosen(aug_input)


def detr_train_augmentation(
    scales: Sequence[int] = DETR_TRAIN_SCALES,
    max_size: Optional[int] = DETR_MAX_SIZE,
    crop_scales: Sequence[int] = DETR_CROP_SCALES,
    crop_size: Tuple[int, int] = DETR_CROP_SIZE,
    select_prob: float = 0.5,
    flip_prob: float = 0.5,
) -> List[T.Augmentation]:
    """
    The official DETR training augmentation: horizontal flip, then either `DetrResize(scales, max_size)`
    (with probability `select_prob`) or `DetrResize(crop_scales)` (no maximum) -> `RandomSizeCrop(*crop_size)`
    -> `DetrResize(scales, max_size)`. The defaults are the official COCO values; a configuration for
    small images scales them down.
    """
    return [
        T.RandomFlip(prob=flip_prob, horizontal=True, vertical=False),
        RandomSelect(
            [DetrResize(scales, max_size)],
            [DetrResize(crop_scales), RandomSizeCrop(*crop_size), DetrResize(scales, max_size)],
            prob=select_prob,
        ),
    ]

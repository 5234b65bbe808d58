"""COCO 2017 with the official DETR data pipeline (see sam_detr/data/transforms.py).

The datasets are Detectron2's builtin "coco_2017_train" / "coco_2017_val", read under $DETECTRON2_DATASETS,
checked with the policies of sam_detr/data/dataset_policies.py (fields of dataloader.{train,test}.dataset
and dataloader.train.mapper.bad_images; `tools/check_dataset.py --config-file` checks a config's data before
training), and the training stream resumes exactly
(sam_detr/data/train_loader.py).
"""
from omegaconf import OmegaConf

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import COCOEvaluator

from sam_detr.data import (
    DetrDatasetMapper,
    DetrResize,
    TrainLoader,
    checked_dataset_dicts,
    detr_train_augmentation,
)

# Images per epoch, for epoch-based schedules. The official code trains on every train2017 image,
# including the 1,021 with no (non-crowd) annotation, hence filter_empty=False below; Detectron2's default
# (filter_empty=True) would leave 117,266.
NUM_TRAIN_IMAGES = 118287

dataloader = OmegaConf.create()
# read by the training tool to turn train.epochs into iterations
dataloader.train_images = NUM_TRAIN_IMAGES

dataloader.train = L(TrainLoader)(
    # the policies: "error" or "skip" a missing image file or an annotation that cannot be right; "skip" or
    # "error" a box with no area (in the image)
    dataset=L(checked_dataset_dicts)(
        names="coco_2017_train", filter_empty=False, missing_images="error", bad_annotations="error", empty_boxes="skip"
    ),
    mapper=L(DetrDatasetMapper)(
        is_train=True,
        augmentations=L(detr_train_augmentation)(
            scales=list(range(480, 801, 32)),
            max_size=1333,
            crop_scales=[400, 500, 600],
            crop_size=[384, 600],
        ),
        image_format="RGB",
        # "error" or "skip" an image that cannot be read or is not the size its json says
        bad_images="error",
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    # nothing is skipped in evaluation: COCOEvaluator reads the ground truth from the json
    dataset=L(checked_dataset_dicts)(names="coco_2017_val", filter_empty=False, evaluation=True),
    mapper=L(DetrDatasetMapper)(
        is_train=False,
        augmentations=[L(DetrResize)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
)

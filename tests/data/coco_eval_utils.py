"""Helpers shared by the data tests that run COCOEvaluator."""
import torch

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances


def evaluate_ground_truth_as_predictions(dataset_name, dataset_dicts, class_offset=0):
    """COCOEvaluator's bbox results for the non-crowd ground truth of `dataset_dicts` fed back as
    detections (score 1), each (contiguous) class shifted by `class_offset`, modulo the number of classes."""
    num_classes = len(MetadataCatalog.get(dataset_name).thing_classes)
    evaluator = COCOEvaluator(dataset_name, tasks=("bbox",), distributed=False)
    evaluator.reset()
    for d in dataset_dicts:
        annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        instances = Instances((d["height"], d["width"]))
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.ones(len(annos))
        classes = [(a["category_id"] + class_offset) % num_classes for a in annos]
        instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
    return evaluator.evaluate()["bbox"]

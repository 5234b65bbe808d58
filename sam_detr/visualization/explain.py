"""What a DETR-style model looks at for each of its detections in an image (tools/visualize.py).

`explain` runs the model once on one image with forward hooks on one decoder layer (`layer_picture` picks
what to record from the layer's attention) and returns, for each kept detection, the picture of the query
that made it (sam_detr/visualization/pictures.py), in the pixels of the image as the model was fed it.
"""
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
from detectron2.data.detection_utils import convert_image_to_rgb, read_image
from torch import nn

from ..layers.box_ops import box_cxcywh_to_xyxy
from .layer_pictures import Geometry, LayerPicture, layer_picture

__all__ = ["DetectionExplanation", "ImageExplanation", "decoder_layers", "explain", "explain_file", "picture_of_layer"]


@dataclass
class DetectionExplanation:
    box: np.ndarray  # (4,) (x1, y1, x2, y2) in pixels of the image as fed
    score: float
    label: int  # the model's (contiguous) class
    query: int  # the decoder query that made it
    picture: object  # a picture of sam_detr.visualization.pictures


@dataclass
class ImageExplanation:
    image_size: Tuple[int, int]  # (height, width) of the image as fed, before padding
    detections: List[DetectionExplanation]
    method: str  # the model's class name
    layer: int  # the decoder layer shown, 0-based
    num_layers: int
    description: str  # what the pictures show


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The layers of the model's decoder: the `layers` of its one module named "decoder"."""
    found = [
        m.layers
        for name, m in model.named_modules()
        if name.rsplit(".", 1)[-1] == "decoder" and isinstance(getattr(m, "layers", None), nn.ModuleList)
    ]
    if len(found) != 1:
        raise ValueError(
            f"{type(model).__name__} has {len(found)} modules named 'decoder' with decoder layers; its pictures "
            "need one"
        )
    return found[0]


def picture_of_layer(model: nn.Module, layer: int) -> Tuple[int, LayerPicture]:
    """The 0-based index of decoder layer `layer` (negative: from the last) and its picture; a ValueError
    naming the range for a layer the model does not have, or the layer type that has no picture."""
    layers = decoder_layers(model)
    if not -len(layers) <= layer < len(layers):
        raise ValueError(
            f"--layer {layer}: {type(model).__name__}'s decoder has layers 0..{len(layers) - 1} (or -1 for the last)"
        )
    index = layer % len(layers)
    try:
        return index, layer_picture(layers[index])
    except ValueError as e:
        raise ValueError(f"{type(model).__name__}: {e}") from None


def match_queries(pred_boxes: torch.Tensor, boxes: torch.Tensor) -> List[int]:
    """The query of each detection: the one whose last-layer box is the detection's (the post-processing
    gathers the boxes by query, so they are equal).

    Args:
        pred_boxes: (Q, 4) every query's box, (x1, y1, x2, y2) in pixels, computed as the post-processing does.
        boxes: (N, 4) the detections' boxes.
    """
    queries = []
    for box in boxes:
        distance = (pred_boxes - box).abs().amax(-1)
        query = int(distance.argmin())
        if float(distance[query]) > 1e-3 * max(1.0, float(box.abs().max())):
            off = float(distance[query])
            raise RuntimeError(f"detection box {box.tolist()} is no query's box (the nearest is off by {off})")
        queries.append(query)
    return queries


@torch.no_grad()
def explain(
    model: nn.Module, image: torch.Tensor, layer: int = -1, topk: int = 3, threshold: float = 0.3
) -> ImageExplanation:
    """The pictures of one image's detections.

    Args:
        model: a `DETRBase` model in eval mode.
        image: (3, H, W) as the model takes it (the test-time resize done, its channel order, 0-255).
        layer: the decoder layer shown (negative: from the last).
        topk, threshold: the detections explained: those scoring at least `threshold`, the best `topk` of them.
    """
    if model.training:
        raise ValueError("explain needs the model in eval mode (model.eval()): training decodes other queries")
    index, kind = picture_of_layer(model, layer)
    with kind.recorder() as recorder:
        # DETRBase.forward, stopped before the detections are scaled to the image's original size
        images, mask = model.preprocess_image([{"image": image}])
        features, masks = model.extract_features(images, mask)
        outputs = model.forward_head(features, masks)
    image_size = tuple(images.image_sizes[0])
    instances = model.inference(outputs, [image_size])[0].to("cpu")
    order = torch.argsort(instances.scores, descending=True)
    order = order[instances.scores[order] >= threshold][:topk]
    instances = instances[order]

    h, w = image_size
    normalised = model.box_coder.normalised(outputs["pred_boxes"], [image_size])[0]
    pred_boxes = (box_cxcywh_to_xyxy(normalised) * normalised.new_tensor([w, h, w, h])).cpu()
    queries = match_queries(pred_boxes, instances.pred_boxes.tensor)
    geometry = Geometry(image_size, [tuple(f.shape[-2:]) for f in features])
    detections = [
        DetectionExplanation(
            box=instances.pred_boxes.tensor[i].double().numpy(),
            score=float(instances.scores[i]),
            label=int(instances.pred_classes[i]),
            query=query,
            picture=kind.picture(recorder, 0, query, geometry),
        )
        for i, query in enumerate(queries)
    ]
    return ImageExplanation(
        image_size=image_size,
        detections=detections,
        method=type(model).__name__,
        layer=index,
        num_layers=len(decoder_layers(model)),
        description=kind.description,
    )


def explain_file(predictor, path: str, layer: int = -1, topk: int = 3, threshold: float = 0.3):
    """`explain` on an image file, read and resized as `predictor` (sam_detr.engine.defaults.Predictor) feeds its
    model. Returns the explanation and the image as fed, (h, w, 3) uint8 RGB."""
    try:
        image = read_image(path, format=predictor.input_format)
    except Exception as e:  # PIL raises several types, none naming the file
        raise ValueError(f"cannot read image {path}: {e}") from e
    resized = predictor.resize(image)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    explanation = explain(predictor.model, tensor, layer, topk, threshold)
    return explanation, np.ascontiguousarray(convert_image_to_rgb(resized, predictor.input_format))

"""What every DETR-style detector shares: images -> padding masks -> backbone -> head -> losses or Instances."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.modeling import Backbone, detector_postprocess
from detectron2.structures import ImageList, Instances
from torch import nn

from ...config import lazy_model_arguments
from ...utils.precision import at_least_float32, half_dtype
from ..box_coder import BoxCoder, SigmoidBoxCoder, check_same_coder
from ..criterion import SetCriterion
from ..denoising import ContrastiveDenoising, check_denoising
from ..query_groups import QueryGroups
from ..transformer.box_refinement import BoxRefinement
from ..postprocess import Detections, detections_to_instances, image_sizes_tensor, softmax_detections, topk_detections
from ..transformer.levels import pad_levels, padding_mask, resize_mask

__all__ = ["DETRBase"]

# torchvision's ImageNet statistics in RGB on the 0-255 scale, as the official models normalise
IMAGENET_PIXEL_MEAN = (123.675, 116.28, 103.53)
IMAGENET_PIXEL_STD = (58.395, 57.12, 57.375)


class DETRBase(nn.Module):
    """Base of the DETR-style meta-architectures.

    It normalises and batches the images as the official code does (zero padding at the bottom/right up
    to the batch maximum, optionally rounded up to `size_divisibility`), runs the backbone and the method's
    input projection (`self.input_proj`, an `InputProjection` the method builds), builds one padding mask
    per level, turns `Instances` into normalised (cx, cy, w, h) targets, and returns the criterion's losses
    in training or `[{"instances": Instances}]` in inference. A method builds `self.input_proj` and
    implements `forward_head`.

    Batch-size-independent evaluation: in the official code (`batch_invariant=False`) the padding of a
    batch changes the backbone features of its smaller images (convolutions and normalisations see the
    padded zeros) and their masks (interpolated from the padded image mask), so an image's detections
    depend on the batch it is in. With `batch_invariant=True`, the backbone and the input projection run on
    each image at its own size; their outputs are padded afterwards, and every level's mask marks exactly
    each image's own feature size. The heads mask padding exactly (attention logits at -inf, zeroed
    deformable values) and read each image's own region where they sample a map (SAM-DETR's RoIAlign,
    Plain-DETR's proposal maps), so an image's detections are those it gets alone, up to rounding; the cost
    is one backbone pass per image.

    Args:
        backbone: a d2 backbone; `in_features` are the levels passed to the head, finest first.
        criterion: the set criterion; its `class_loss_type` also picks the post-processing (top-k over
            queries x classes for focal models, softmax arg-max for softmax models).
        pixel_mean, pixel_std: per-channel normalisation of the input images (RGB, 0-255).
        size_divisibility: pad the batch to a multiple of this (0: no rounding, as the official code).
        num_select: detections kept per image by the top-k post-processing.
        batch_invariant: compute the backbone and the input projection per image (see above), in
            training and inference.
        box_coder: the space boxes are predicted and supervised in (`sam_detr.modeling.box_coder`); the
            criterion must code alike.
        inference_dtype: None (float32), or "bfloat16" / "float16": inference autocasts the backbone and the
            head to it on the model's device (the post-processing stays in float32); training is not affected
            (train.amp is the training's).
        denoising: contrastive denoising queries added in training (DINO's CDN, any method whose
            `forward_head` passes its decoder inputs through `with_denoising`); the criterion needs a loss
            group for their outputs (key "dn_outputs", matched by `DenoisingMatcher`). None: none.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        in_features: Sequence[str],
        criterion: SetCriterion,
        pixel_mean: Sequence[float] = IMAGENET_PIXEL_MEAN,
        pixel_std: Sequence[float] = IMAGENET_PIXEL_STD,
        size_divisibility: int = 0,
        num_select: int = 100,
        batch_invariant: bool = False,
        box_coder: BoxCoder = SigmoidBoxCoder(),
        inference_dtype: Optional[str] = None,
        denoising: Optional[ContrastiveDenoising] = None,
    ):
        super().__init__()
        check_same_coder("the model", box_coder, [("its criterion", criterion.box_coder)])
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"in_features {missing} are not backbone outputs {list(shapes)}")
        self.backbone = backbone
        self.in_features = list(in_features)
        self.in_channels = [shapes[f].channels for f in in_features]
        self.criterion = criterion
        self.size_divisibility = size_divisibility
        self.num_select = num_select
        self.batch_invariant = batch_invariant
        self.box_coder = box_coder
        self.inference_dtype = inference_dtype
        half_dtype(inference_dtype)  # checks the name
        if denoising is not None:
            check_denoising(denoising, criterion, box_coder)
        self.denoising = denoising
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        """Every method's arguments for d2's `build_model(cfg)` (a method's `@configurable` constructor called
        with a yacs CfgNode): the model of the LazyConfig file that cfg.MODEL.DETR.CONFIG_FILE names, whose
        target must be this class (see `sam_detr.config.add_detr_config`)."""
        return lazy_model_arguments(cfg, cls)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def num_classes(self) -> int:
        return self.criterion.num_classes

    def class_agnostic_rows(self) -> Dict[str, int]:
        """Class-dependent state-dict entries -> how many of their first rows (along the class axis) are no class's
        (a two-stage proposal head's "object" logit, `heads.proposal_object_rows`): a fine-tuning on other classes
        keeps them by position (`sam_detr.engine.class_init`). None here; a method with such rows says so."""
        return {}

    def forward_head(
        self, features: List[torch.Tensor], masks: List[torch.Tensor], targets: Optional[List[Dict]] = None
    ) -> Dict:
        """The method itself.

        Args:
            features: per level of `self.input_proj`'s output (the `in_features` levels, then any extra
                ones), (B, C, H_l, W_l).
            masks: per level, (B, H_l, W_l) bool, True on padding.
            targets: in training, `prepare_targets`'s (what denoising queries are made from); else None.
        Returns:
            "pred_logits" (B, Q, K or K + 1) and "pred_boxes" (B, Q, 4) normalised (cx, cy, w, h) of the
            last decoder layer, "aux_outputs" (one such dict per earlier layer; `layer_outputs` builds them
            from every layer's predictions, `QueryGroups.outputs` for several query groups), and whatever
            else the method's criterion reads (e.g. "enc_outputs").
        """
        raise NotImplementedError

    def with_denoising(
        self,
        targets: Optional[List[Dict]],
        tgt: torch.Tensor,
        query_pos: Optional[torch.Tensor],
        reference: torch.Tensor,
        groups: QueryGroups,
        refinement: BoxRefinement,
        coder: Optional[BoxCoder] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, QueryGroups]:
        """The decoder's inputs, with the denoising queries of `targets` before them in training when the model
        has `denoising` (`DenoisingQueries.prepend`); as they are otherwise.

        Args:
            targets: `forward_head`'s.
            tgt, query_pos: (B, Q, C) content and position queries (query_pos may be None).
            reference: (B, Q, 2|4) what the method passes to `refinement.start`.
            groups: the method's query groups.
            refinement: the method's box refinement.
            coder: the batch's box coder (default: the model's).
        Returns:
            (tgt, query_pos, reference, groups).
        """
        if not self.training or self.denoising is None:
            return tgt, query_pos, reference, groups
        # the label embedding takes part in every training graph, even of a batch without targets (DDP)
        tgt = self.denoising.keep_in_graph(tgt)
        return self.denoising(targets).prepend(
            tgt, query_pos, reference, groups, refinement, coder or self.box_coder
        )

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: d2's format: per image, "image" (3, H, W) in RGB, "instances" (training),
                and "height"/"width", the size the detections are returned at.
        Returns:
            in training, a dict of weighted losses; in inference, `[{"instances": Instances}]`.
        """
        images, mask = self.preprocess_image(batched_inputs)
        targets = self.prepare_targets(batched_inputs) if self.training else None
        dtype = None if self.training else half_dtype(self.inference_dtype)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            features, masks = self.extract_features(images, mask)
            outputs = self.forward_head(features, masks, targets)
        if self.training:
            return self.criterion(outputs, targets)
        results = self.inference(at_least_float32(outputs), images.image_sizes)
        processed = []
        for result, inputs, image_size in zip(results, batched_inputs, images.image_sizes):
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

    def preprocess_image(self, batched_inputs: List[Dict]) -> Tuple[ImageList, torch.Tensor]:
        """Normalised images zero-padded into one batch, and the (B, H, W) mask, True on padding."""
        for i, x in enumerate(batched_inputs):
            if "image" not in x:
                raise KeyError(f"input {i} (image_id {x.get('image_id', '?')}) has no 'image'")
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        return images, padding_mask(image_sizes_tensor(images.image_sizes, self.device), images.tensor.shape[-2:])

    def project(self, images: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) normalised images -> per level, the projected features (B, C, H_l, W_l)."""
        features = self.backbone(images)
        return self.input_proj([features[f] for f in self.in_features])

    def extract_features(self, images: ImageList, mask: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """The projected feature levels of the batch and their (B, H_l, W_l) padding masks (see the class
        docstring for `batch_invariant`)."""
        if not self.batch_invariant:
            return self.extract_batch_features(images.tensor, mask)
        per_image = [self.project(images.tensor[i : i + 1, :, :h, :w]) for i, (h, w) in enumerate(images.image_sizes)]
        return pad_levels(per_image)

    def extract_batch_features(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """The official batching: the backbone and the input projection run on the padded batch (B, 3, H, W);
        each level's (B, H_l, W_l) mask is the image mask (B, H, W) resized (`resize_mask`)."""
        features = self.project(images)
        return features, [resize_mask(mask, f.shape[-2:]) for f in features]

    def prepare_targets(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """Per image, "labels" (T,) and "boxes" (T, 4) (cx, cy, w, h) in the box coder's space (normalised by
        the unpadded size, by default)."""
        targets = []
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise KeyError(f"training input {i} (image_id {x.get('image_id', '?')}) has no 'instances'")
            instances: Instances = x["instances"].to(self.device)
            boxes = self.box_coder.target_boxes(instances.gt_boxes.tensor, instances.image_size)
            targets.append({"labels": instances.gt_classes, "boxes": boxes})
        return targets

    def select_detections(self, outputs: Dict, image_sizes: torch.Tensor) -> Detections:
        """The method's post-processing, batched: top-k over queries x classes for focal models, each query's
        best class for softmax models (`sam_detr.modeling.postprocess`). image_sizes: (B, 2) int64, each
        image's (h, w). Returns scores (B, N), labels (B, N) and boxes (B, N, 4) normalised (cx, cy, w, h); N
        is fixed by the model (`num_select`, the queries)."""
        logits, boxes = outputs["pred_logits"], self.box_coder.normalised(outputs["pred_boxes"], image_sizes)
        if self.criterion.class_loss_type == "softmax":
            return softmax_detections(logits, boxes, self.num_select)
        return topk_detections(logits, boxes, self.num_select)

    def inference(self, outputs: Dict, image_sizes: List[Tuple[int, int]]) -> List[Instances]:
        sizes = image_sizes_tensor(image_sizes, self.device)
        return detections_to_instances(self.select_detections(outputs, sizes), sizes)

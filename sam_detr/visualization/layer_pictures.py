"""Which picture a decoder layer has, found by the attention it holds, and how its tensors are captured.

A `LayerPicture` names the modules of one decoder layer whose calls it records (`CallRecorder`) and turns
what they were given and returned into the picture of one query (sam_detr/visualization/pictures.py). The
kind is chosen by the layer's modules, not by the method: any decoder layer whose cross-attention is an
`MSDeformAttn` (Deformable DETR, MS-DETR, DINO, ...) gets the sampling points.

Shapes: B images, Q queries, M heads, S memory tokens, C channels; `Geometry` holds the image's size.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MSDeformAttn
from ..layers.box_ops import box_cxcywh_to_xyxy
from ..modeling.transformer.box_rpb import GlobalCrossAttention
from ..modeling.transformer.conditional_detr_decoder import ConditionalDETRDecoderLayer
from ..modeling.transformer.detr_transformer import TransformerDecoderLayer
from ..modeling.transformer.levels import valid_ratios
from ..modeling.transformer.semantics_aligner import SemanticsAligner
from .hooks import CallRecorder
from .pictures import AttentionMaps, MapPart, SalientPoints, SamplingPoints

__all__ = ["Geometry", "LayerPicture", "LAYER_PICTURES", "layer_picture"]


@dataclass
class Geometry:
    """The image the model was fed: its (height, width) before padding, and the (H_l, W_l) of every projected
    feature level (padded)."""

    image_size: Tuple[int, int]
    feature_shapes: List[Tuple[int, int]]

    @property
    def scale(self) -> torch.Tensor:
        """(2,) (w, h): from coordinates normalised to the image to its pixels."""
        h, w = self.image_size
        return torch.tensor([w, h], dtype=torch.float64)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


def _one(layer: nn.Module, kind: Type[nn.Module]) -> Optional[nn.Module]:
    """The layer's one module of type `kind` (the layer itself included), None if it has none."""
    found = [m for m in layer.modules() if isinstance(m, kind)]
    if len(found) > 1:
        raise ValueError(f"{type(layer).__name__} holds {len(found)} {kind.__name__} modules; its picture needs one")
    return found[0] if found else None


def level_valid_ratios(mask: Optional[torch.Tensor], shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """(B, S) padding mask over the flattened levels (None: no padding) -> (B, L, 2) the unpadded fraction (w,
    h) of each level, as the model computes it (`valid_ratios`)."""
    if mask is None:
        return torch.ones(1, len(shapes), 2, dtype=torch.float64)
    levels = mask.split([h * w for h, w in shapes], 1)
    return torch.stack([valid_ratios(m.view(-1, h, w)) for m, (h, w) in zip(levels, shapes)], 1).double()


def map_cells(values: torch.Tensor, mask: Optional[torch.Tensor], shape: Tuple[int, int]) -> np.ndarray:
    """(M, S) values over one flattened (H, W) map, (S,) its padding mask (None: none) -> (M, h, w) over the
    valid cells (padding is at the bottom/right)."""
    H, W = shape
    if values.shape[-1] != H * W:
        raise ValueError(f"the attention covers {values.shape[-1]} tokens, the feature map {H}x{W} = {H * W}")
    grid = values.reshape(-1, H, W)
    h, w = H, W
    if mask is not None:
        valid = ~mask.view(H, W)
        h, w = int(valid[:, 0].sum()), int(valid[0, :].sum())
    return _numpy(grid[:, :h, :w])


def _single_map_shape(geometry: Geometry, tokens: int) -> Tuple[int, int]:
    for shape in geometry.feature_shapes:
        if shape[0] * shape[1] == tokens:
            return tuple(shape)
    raise ValueError(f"no feature level of {geometry.feature_shapes} has the {tokens} tokens the layer attends to")


class LayerPicture:
    """The picture of one decoder layer. A subclass says which layers it applies to (`find`), which of their
    modules it records (`recorder`), and makes the picture of a query from the recorded calls (`picture`)."""

    #: what the picture shows, one sentence (the gallery's and the figure's caption)
    description = ""

    def __init__(self, layer: nn.Module, module: nn.Module):
        self.layer = layer
        self.module = module

    @classmethod
    def find(cls, layer: nn.Module) -> Optional[nn.Module]:
        """The module of `layer` the picture is made from, or None where it does not apply."""
        raise NotImplementedError

    def recorder(self) -> CallRecorder:
        raise NotImplementedError

    def picture(self, recorder: CallRecorder, image: int, query: int, geometry: Geometry):
        """The picture of query `query` of image `image` of the batch."""
        raise NotImplementedError


class DeformableSamplingPicture(LayerPicture):
    """The sampling points of a deformable cross-attention (`MSDeformAttn`), from the inputs of its op."""

    description = SamplingPoints.description

    @classmethod
    def find(cls, layer):
        return _one(layer, MSDeformAttn)

    def recorder(self):
        return CallRecorder({"attention": self.module, "op": self.module.op})

    def picture(self, recorder, image, query, geometry):
        attention, op = recorder.only("attention").inputs, recorder.only("op").inputs
        shapes = [tuple(s) for s in op["spatial_shapes"].tolist()]
        ratios = level_valid_ratios(attention["input_padding_mask"], shapes)[image]  # (L, 2)
        # the op's locations are normalised over each padded level: / valid ratio -> over the image
        locations = op["sampling_locations"][image, query].double()  # (M, L, P, 2)
        points = locations / ratios[None, :, None, :] * geometry.scale
        reference = attention["reference_points"][image, query, 0].double()  # (2|4,), over padded level 0
        reference = reference / (ratios[0] if reference.shape[-1] == 2 else ratios[0].repeat(2))
        box = None
        if reference.shape[-1] == 4:
            box = _numpy(box_cxcywh_to_xyxy(reference) * geometry.scale.repeat(2))
        return SamplingPoints(
            points=_numpy(points),
            weights=_numpy(op["attention_weights"][image, query]),
            reference=_numpy(reference[:2] * geometry.scale),
            reference_box=box,
            level_shapes=shapes,
        )


class SalientPointsPicture(LayerPicture):
    """SAM-DETR's salient points and RoIAlign box, from its Semantics Aligner's call."""

    description = SalientPoints.description

    @classmethod
    def find(cls, layer):
        return _one(layer, SemanticsAligner)

    def recorder(self):
        return CallRecorder({"aligner": self.module})

    def picture(self, recorder, image, query, geometry):
        call = recorder.only("aligner")
        # both normalised to the unpadded image, as the aligner takes and returns them
        box = call.inputs["boxes"][image, query].double()
        points = call.output.points[image, query].double()
        return SalientPoints(
            points=_numpy(points * geometry.scale), roi_box=_numpy(box_cxcywh_to_xyxy(box) * geometry.scale.repeat(2))
        )


def _masked_softmax(logits: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(M, S) logits, (S,) padding mask -> softmax over the valid tokens, 0 on padding."""
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    return F.softmax(logits, -1)


class ConditionalAttentionPicture(LayerPicture):
    """Conditional DETR's cross-attention, its spatial and content parts apart (the paper's Fig. 1 and 4).

    Each head h matches the concatenation [content | spatial] of its C / M channels of each, query against
    key (`ConditionalDETRDecoderLayer`), so its logit is the sum of two dot products, both scaled by the
    layer's (2C / M)^-1/2. Shown per head: spatial = softmax over the valid tokens of the scaled
    q_spatial . k_pos (the conditional spatial query against the key positions), content = that of
    q_content . k_content (in the first layer both content parts also carry the positions, as DETR's), and
    combined = the weights the layer used (the softmax of their sum), captured at its softmax.
    """

    description = (
        "the query's cross-attention weights over the feature map, per head (each cell in the colour of its "
        "strongest head): spatial = softmax(q_spatial . k_pos), content = softmax(q_content . k_content), both "
        "scaled as the layer scales them, and combined = the weights the layer used (the softmax of their sum)"
    )

    @classmethod
    def find(cls, layer):
        return layer if isinstance(layer, ConditionalDETRDecoderLayer) else None

    def recorder(self):
        return CallRecorder({"cross_attn": self.module.cross_attn, "softmax": self.module.cross_attn.softmax})

    def picture(self, recorder, image, query, geometry):
        attention = self.module.cross_attn
        call = recorder.only("cross_attn").inputs
        q, k, mask = call["query"][image, query], call["key"][image], call["key_padding_mask"]
        mask = None if mask is None else mask[image]
        M, E = attention.num_heads, attention.embed_dim
        d = E // M // 2  # channels of each part of a head
        scale = float(E // M) ** -0.5
        qh, kh = q.view(M, 2, d), k.view(-1, M, 2, d)
        content = torch.einsum("md,smd->ms", qh[:, 0], kh[:, :, 0]) * scale
        spatial = torch.einsum("md,smd->ms", qh[:, 1], kh[:, :, 1]) * scale
        weights = recorder.only("softmax").output
        combined = weights.view(-1, M, weights.shape[-2], weights.shape[-1])[image, :, query]
        shape = _single_map_shape(geometry, k.shape[0])
        parts = [
            MapPart("spatial", map_cells(_masked_softmax(spatial, mask), mask, shape)),
            MapPart("content", map_cells(_masked_softmax(content, mask), mask, shape)),
            MapPart("combined", map_cells(combined, mask, shape)),
        ]
        return AttentionMaps(parts, description=self.description)


class CrossAttentionPicture(LayerPicture):
    """DETR's decoder cross-attention (an `nn.MultiheadAttention`): its per-head weights, which the recorder
    has the call return."""

    description = (
        "the query's cross-attention weights over the feature map, per head (each cell in the colour of its "
        "strongest head), as the layer computed them"
    )

    @classmethod
    def find(cls, layer):
        return layer if isinstance(layer, TransformerDecoderLayer) else None

    def recorder(self):
        return CallRecorder({"cross_attn": self.module.multihead_attn}, attention_weights=["cross_attn"])

    def picture(self, recorder, image, query, geometry):
        call = recorder.only("cross_attn")
        weights = call.output[1][image, :, query]  # (M, S)
        mask = call.inputs["key_padding_mask"]
        mask = None if mask is None else mask[image]
        shape = _single_map_shape(geometry, weights.shape[-1])
        part = MapPart("cross-attention", map_cells(weights, mask, shape))
        return AttentionMaps([part], description=self.description)


class BoxRPBPicture(LayerPicture):
    """Plain-DETR's global cross-attention: the BoxRPB bias of the query's reference box (by the layer's own
    `box_rpb`, from the boxes it was given) and the attention weights it used, captured at its softmax."""

    description = (
        "the box relative position bias of the query's reference box (dashed white) over the feature map, mean "
        "over heads (blue < 0 < red), and the query's cross-attention weights, per head (each cell in the "
        "colour of its strongest head)"
    )

    @classmethod
    def find(cls, layer):
        return _one(layer, GlobalCrossAttention)

    def recorder(self):
        return CallRecorder({"cross_attn": self.module, "softmax": self.module.softmax})

    def picture(self, recorder, image, query, geometry):
        call = recorder.only("cross_attn").inputs
        H, W = call["size"]
        mask = call["padding_mask"]
        mask = None if mask is None else mask[image]
        weights = recorder.only("softmax").output[image, :, query]  # (M, S)
        parts = []
        box = call["boxes"][image, query]
        if self.module.rpe_type is not None:  # the APE baseline has no bias: its attention alone
            bias = self.module.box_rpb(box.view(1, 1, 4), H, W)[0, :, 0]  # (M, S)
            parts.append(MapPart("BoxRPB bias", map_cells(bias, mask, (H, W)), signed=True))
        parts.append(MapPart("cross-attention", map_cells(weights, mask, (H, W))))
        return AttentionMaps(parts, reference_box=_numpy(box), description=self.description)


# tried in this order; the first that finds its module in a decoder layer makes its picture (SAM-DETR's
# layer also holds a plain attention: the aligner comes first)
LAYER_PICTURES: Tuple[Type[LayerPicture], ...] = (
    SalientPointsPicture,
    DeformableSamplingPicture,
    BoxRPBPicture,
    ConditionalAttentionPicture,
    CrossAttentionPicture,
)


def layer_picture(layer: nn.Module) -> LayerPicture:
    """The picture of a decoder layer; a ValueError naming the layer where none applies."""
    for kind in LAYER_PICTURES:
        module = kind.find(layer)
        if module is not None:
            return kind(layer, module)
    known = ", ".join(k.__name__ for k in LAYER_PICTURES)
    raise ValueError(f"no picture for decoder layers of type {type(layer).__name__} (pictures exist: {known})")

"""Plain-DETR's decoder: pre-norm layers of global cross-attention (with BoxRPB) over one stride-16 map.

Batch-first: queries (B, Q, C); the memory is the flattened map (B, S, C), S = H * W.
"""
import copy
from functools import partial
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ...layers import FFN
from ...layers.init import trunc_normal_init_
from ...layers.box_ops import box_cxcywh_to_xyxy, delta_to_box
from .box_refinement import BoxRefinement
from .box_rpb import GlobalCrossAttention

__all__ = ["GlobalDecoderLayer", "GlobalDecoder", "GlobalDecoderOutput", "group_attention_mask"]


class GlobalDecoderOutput(NamedTuple):
    hs: torch.Tensor  # (L, B, Q, C) every layer's output after the final LayerNorm
    boxes: torch.Tensor  # (L, B, Q, 4) every layer's boxes (cx, cy, w, h), in [0, 1] or in pixels
    references: torch.Tensor  # (L, B, Q, 4) every layer's boxes its box head refined
    deltas: torch.Tensor  # (L, B, Q, 4) every layer's box-head output


def group_attention_mask(num_one2one: int, num_total: int, device=None) -> torch.Tensor:
    """(Q, Q) bool, True where query i may not attend to query j: the one-to-one queries [0, num_one2one)
    and the one-to-many ones [num_one2one, Q) do not see each other (H-DETR's hybrid matching)."""
    group = torch.arange(num_total, device=device) >= num_one2one
    return group[:, None] != group[None, :]


class GlobalDecoderLayer(nn.Module):
    """Pre-norm: self-attention among the queries, global cross-attention to the memory, FFN, each as
    `x + f(norm(x))`. Queries and keys of the self-attention and the cross-attention's queries carry the
    query position; the cross-attention's keys carry the memory position.

    Official names: `self_attn` with `norm2`, `cross_attn` with `norm1`, the FFN's `linear1`, `linear2`
    and `norm3` (here `ffn.*`).

    Args:
        d_model: C; d_ffn: the FFN's hidden width; dropout: of the residual branches and the FFN;
        n_heads: of both attentions; rpe_type, rpe_hidden_dim, feature_stride: see `GlobalCrossAttention`
            (rpe_type None: the APE baseline, no BoxRPB).
    """

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 2048,
        dropout: float = 0.0,
        n_heads: int = 8,
        rpe_type: Optional[str] = "linear",
        rpe_hidden_dim: int = 512,
        feature_stride: int = 16,
    ):
        super().__init__()
        self.d_model = d_model
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = GlobalCrossAttention(d_model, n_heads, rpe_type, rpe_hidden_dim, feature_stride)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, d_ffn, dropout, pre_norm=True)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        boxes: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        size: Tuple[int, int],
        padding_mask: torch.Tensor,
        self_attn_mask: Optional[torch.Tensor] = None,
        exact_padding: bool = False,
    ) -> torch.Tensor:
        """
        Args:
            tgt, query_pos: (B, Q, C). boxes: (B, Q, 4) reference boxes (x1, y1, x2, y2) in input pixels.
            memory, memory_pos: (B, S, C); size: (H, W); padding_mask: (B, S) bool, True on padding.
            self_attn_mask: (Q, Q) bool, True where query i may not attend to query j.
        Returns:
            (B, Q, C)
        """
        t = self.norm2(tgt)
        q = t + query_pos
        tgt = tgt + self.dropout2(self.self_attn(q, q, t, attn_mask=self_attn_mask, need_weights=False)[0])
        t = self.norm1(tgt)
        attn = self.cross_attn(t + query_pos, boxes, memory + memory_pos, memory, size, padding_mask, exact_padding)
        return self.ffn(tgt + self.dropout1(attn))


class GlobalDecoder(nn.Module):
    """Global decoder layers with per-layer box refinement and one final LayerNorm.

    Each layer's output goes through the shared `final_layer_norm` before the heads and the box
    refinement read it; the un-normed output feeds the next layer. A layer's reference boxes ((cx, cy, w,
    h) in [0, 1] of the unpadded image) enter the cross-attention as (x1, y1, x2, y2) in input pixels.
    With the box reparameterisation (`max_size` given) the boxes are in input pixels throughout, and a
    layer's box is `delta_to_box(reference, delta, max_size)` instead of `sigmoid(logit(reference) + delta)`.

    Args:
        layer: one decoder layer, deep-copied `num_layers` times.
    """

    def __init__(self, layer: GlobalDecoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.d_model = layer.d_model
        self.final_layer_norm = nn.LayerNorm(layer.d_model)

    def reset_parameters(self) -> None:
        """The official decoder re-initialisation (after the transformer-wide xavier): every Linear,
        including the attentions' output projections and the BoxRPB MLPs, trunc-normal(0.02) with zero bias,
        every LayerNorm (1, 0); the self-attentions' packed input projections keep their xavier init."""
        for m in self.modules():  # in this order, as the official code draws them
            trunc_normal_init_(m)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        size: Tuple[int, int],
        padding_mask: torch.Tensor,
        valid_ratios: torch.Tensor,
        bbox_embed: Sequence[nn.Module],
        refinement: BoxRefinement,
        self_attn_mask: Optional[torch.Tensor] = None,
        exact_padding: bool = False,
        max_size: Optional[torch.Tensor] = None,
    ) -> GlobalDecoderOutput:
        """
        Args:
            tgt, query_pos: (B, Q, C) content and position queries; reference: (B, Q, 4) boxes.
            memory, memory_pos: (B, S, C); size: (H, W); padding_mask: (B, S) bool, True on padding;
            valid_ratios: (B, 2) the unpadded fraction (w, h) of the map.
            bbox_embed: per layer, the box head (C -> 4); refinement: between the layers.
            self_attn_mask: (Q, Q) bool, True where blocked; exact_padding: see `GlobalCrossAttention`.
            max_size: (B, 1, 2) the (W, H) boxes are clipped to, in pixels: reparameterised boxes.
        """
        if len(bbox_embed) != len(self.layers):
            raise ValueError(f"got {len(bbox_embed)} box heads for {len(self.layers)} decoder layers")
        stride = self.layers[0].cross_attn.feature_stride
        H, W = size
        # normalised to the padded map first (as the official code), then to input pixels
        ratios = valid_ratios[:, None].repeat(1, 1, 2)  # (B, 1, 4)
        pixels = torch.tensor([W * stride, H * stride] * 2, dtype=memory.dtype, device=memory.device)
        decode = None if max_size is None else partial(delta_to_box, max_size=max_size)
        ref = refinement.start(reference)
        hs, boxes, references, deltas = [], [], [], []
        for layer, head in zip(self.layers, bbox_embed):
            if max_size is None:
                box_input = box_cxcywh_to_xyxy(ref.boxes * ratios) * pixels
            else:
                box_input = box_cxcywh_to_xyxy(ref.boxes)
            tgt = layer(
                tgt, query_pos, box_input, memory, memory_pos, size, padding_mask, self_attn_mask, exact_padding
            )
            normed = self.final_layer_norm(tgt)
            references.append(ref.head)
            deltas.append(head(normed))
            layer_boxes, ref = refinement.step(ref, deltas[-1], decode)
            hs.append(normed)
            boxes.append(layer_boxes)
        return GlobalDecoderOutput(torch.stack(hs), torch.stack(boxes), torch.stack(references), torch.stack(deltas))

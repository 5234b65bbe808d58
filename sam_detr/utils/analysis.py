"""FLOP and activation counts of sam_detr models, through fvcore's JIT tracing, in Detectron2's way.

`FlopCountAnalysis` is Detectron2's (d2 models take `list[dict]`; elementwise and reduction ops are
ignored by convention), plus the handles of the ops fvcore does not know: the compiled multi-scale
deformable attention (registered by `sam_detr.layers.ms_deform_attn`), `aten::baddbmm`, which
`nn.MultiheadAttention` uses for its attention logits whenever it is given a mask, and
`aten::scaled_dot_product_attention`, which it uses when no attention weights are asked for, and
`aten::mkldnn_convolution`, which the fast ResNet (`FrozenBNConv2d`) calls directly on the CPU.
"""
import math
from collections import Counter
from typing import Any, List

import fvcore.nn
from detectron2.export import TracingAdapter
from detectron2.utils.analysis import FlopCountAnalysis as _D2FlopCountAnalysis
from fvcore.nn.jit_handles import bmm_flop_jit, conv_flop_count, generic_activation_jit, get_shape

from ..layers.ms_deform_attn import FLOP_HANDLES as MS_DEFORM_ATTN_FLOP_HANDLES

__all__ = ["FlopCountAnalysis", "ActivationCountAnalysis", "FLOP_HANDLES", "ACTIVATION_HANDLES"]


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """`beta * input + alpha * batch1 @ batch2`: the product's multiply-adds, as fvcore counts `bmm`."""
    return bmm_flop_jit(inputs[1:3], outputs)


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """`softmax(q @ k^T) @ v` of q (..., L, E), k (..., S, E), v (..., S, Ev): the two products' multiply-adds."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def mkldnn_conv_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """oneDNN's convolution of x (N, C, H, W) by w (O, C / groups, kh, kw), never transposed: counted as
    fvcore counts `aten::_convolution`, in the same "conv" row."""
    x, w = (get_shape(v) for v in inputs[:2])
    return Counter({"conv": conv_flop_count(x, w, get_shape(outputs[0]), transposed=False)})


FLOP_HANDLES = {
    "aten::baddbmm": baddbmm_flop_jit,
    "aten::mkldnn_convolution": mkldnn_conv_flop_jit,
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    **MS_DEFORM_ATTN_FLOP_HANDLES,
}
# an op's activations are the elements of its output, as fvcore counts them for conv and linear
ACTIVATION_HANDLES = {name: generic_activation_jit() for name in FLOP_HANDLES}


class FlopCountAnalysis(_D2FlopCountAnalysis):
    """d2's `FlopCountAnalysis(model, inputs)` with `FLOP_HANDLES`; one multiply-add counts as one flop."""

    def __init__(self, model, inputs):
        super().__init__(model, inputs)
        self.set_op_handle(**FLOP_HANDLES)


class ActivationCountAnalysis(fvcore.nn.ActivationCountAnalysis):
    """fvcore's activation count of a d2 model on d2 inputs (`list[dict]`), with `ACTIVATION_HANDLES`."""

    def __init__(self, model, inputs):
        wrapper = TracingAdapter(model, inputs, allow_non_tensor=True)
        super().__init__(wrapper, wrapper.flattened_inputs)
        self.set_op_handle(**ACTIVATION_HANDLES)

"""The refining decoder's loop and hooks: each layer refines the previous layer's boxes, a final norm feeds
the heads (and the refinement, or not), positions from the reference, per-layer extras in the output."""
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
from torch import nn

from sam_detr.modeling.box_coder import SigmoidBoxCoder
from sam_detr.modeling.transformer import BoxRefinement, DecoderOutput, RefiningDecoder

CODER = SigmoidBoxCoder()


class ToyLayer(nn.Module):
    """The common call; its output mixes the queries, their positions and their reference boxes."""

    def __init__(self, d_model=8):
        super().__init__()
        self.d_model = d_model
        self.linear = nn.Linear(d_model + 4, d_model)
        self.calls = []

    def forward(self, tgt, query_pos, reference, memory, self_attn_mask=None):
        self.calls.append((query_pos, reference.boxes))
        pos = 0 if query_pos is None else query_pos
        return torch.tanh(self.linear(torch.cat([tgt + pos, reference.boxes], -1)))


def inputs(B=2, Q=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, Q, d, generator=g), torch.randn(B, Q, d, generator=g), torch.rand(B, Q, 4, generator=g)


def heads(n, d=8):
    torch.manual_seed(1)
    return nn.ModuleList(nn.Linear(d, 4) for _ in range(n))


def run(decoder_type, num_layers=3):
    """A seeded decoder of ToyLayers run on `inputs()` with plain refinement: (decoder, inputs, output)."""
    torch.manual_seed(0)
    decoder = decoder_type(ToyLayer(), num_layers)
    tgt, pos, ref = inputs()
    refinement = BoxRefinement()
    return decoder, (tgt, pos, ref), decoder(tgt, pos, refinement.start(ref, CODER), None, heads(num_layers), refinement)


def test_each_layer_refines_the_previous_layers_boxes():
    decoder, (tgt, pos, ref), out = run(RefiningDecoder)
    assert isinstance(out, DecoderOutput) and out.hs.shape == (3, 2, 3, 8) and out.boxes.shape == (3, 2, 3, 4)
    layers = decoder.layers
    assert torch.equal(layers[0].calls[0][1], ref)
    for l in (1, 2):  # layer l attends with layer l-1's boxes, detached, and refines them
        assert torch.equal(layers[l].calls[0][1], out.boxes[l - 1].detach())
        assert torch.equal(out.references[l], out.boxes[l - 1].detach())
        assert torch.allclose(out.boxes[l], CODER.decode(out.boxes[l - 1], out.deltas[l]))
    refinement = BoxRefinement()
    with pytest.raises(ValueError, match="got 2 box heads for 3 decoder layers"):
        decoder(tgt, pos, refinement.start(ref, CODER), None, heads(2), refinement)


class NormedDecoder(RefiningDecoder):
    """A final norm; positions from the reference (DINO's `ref_point_head(sine(reference))`)."""

    def __init__(self, layer, num_layers, refine_normed):
        super().__init__(layer, num_layers)
        self.norm = nn.LayerNorm(layer.d_model)
        self.ref_point_head = nn.Linear(4, layer.d_model)
        self.refine_normed = refine_normed

    def output_norm(self, tgt):
        return self.norm(tgt)

    def query_position(self, index, query_pos, reference, memory):
        return self.ref_point_head(reference.boxes)


@pytest.mark.parametrize("refine_normed", [True, False])
def test_final_norm_feeds_the_heads_and_the_refinement_reads_either_output(refine_normed):
    torch.manual_seed(0)
    decoder = NormedDecoder(ToyLayer(), 2, refine_normed)
    for p in decoder.norm.parameters():  # away from the identity-like init
        nn.init.normal_(p)
    tgt, _, ref = inputs()
    box_heads = heads(2)
    refinement = BoxRefinement(look_forward_twice=True)
    out = decoder(tgt, None, refinement.start(ref, CODER), None, box_heads, refinement)
    layers = decoder.layers
    raw = [torch.tanh(layers[0].linear(torch.cat([tgt + layers[0].calls[0][0], ref], -1)))]
    assert torch.allclose(out.hs[0], decoder.norm(raw[0]))
    assert torch.allclose(out.deltas[0], box_heads[0](out.hs[0]))
    refined_from = out.hs[0] if refine_normed else raw[0]
    next_reference = CODER.decode(ref, box_heads[0](refined_from))
    assert torch.allclose(layers[1].calls[0][1], next_reference.detach())
    # look-forward-twice: layer 1 predicts from the not-detached next reference
    assert torch.allclose(out.boxes[1], CODER.decode(next_reference, out.deltas[1]))
    # the positions come from the reference each layer attends with
    for layer in layers:
        query_pos, boxes = layer.calls[0]
        assert torch.allclose(query_pos, decoder.ref_point_head(boxes))


@dataclass
class ExtraOutput(DecoderOutput):
    side: Optional[torch.Tensor] = None


class ExtraDecoder(RefiningDecoder):
    output_type = ExtraOutput

    def layer_forward(self, index, tgt, query_pos, reference, memory, self_attn_mask):
        tgt, _ = super().layer_forward(index, tgt, query_pos, reference, memory, self_attn_mask)
        return tgt, {"side": tgt * index}


def test_per_layer_extras_are_stacked_into_the_output_type():
    _, _, out = run(ExtraDecoder)
    assert isinstance(out, ExtraOutput) and out.side.shape == (3, 2, 3, 8)
    assert torch.equal(out.side[2], out.hs[2] * 2)
    predictions = out.predictions([nn.Linear(8, 5)] * 3, CODER)
    assert set(predictions) == {"pred_logits", "pred_boxes"} and predictions["pred_logits"].shape == (3, 2, 3, 5)

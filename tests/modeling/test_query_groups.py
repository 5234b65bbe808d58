"""Query groups: the self-attention mask between groups (hybrid matching, denoising groups), the split of
every layer's predictions into the groups' outputs, and every decoder layer's self-attention honouring the
mask (a query's output does not change when queries it may not see change)."""
import pytest
import torch

from sam_detr.modeling.query_groups import QueryGroup, QueryGroups, layer_outputs


def test_hybrid_groups_do_not_see_each_other():
    groups = QueryGroups([QueryGroup(2), QueryGroup(3, "hybrid_outputs")])
    assert groups.num_queries == 5
    assert groups.attention_mask().tolist() == [[False, False, True, True, True]] * 2 + [
        [True, True, False, False, False]
    ] * 3


def test_denoising_blocks_see_the_matching_queries_which_do_not_see_them():
    # two denoising groups of 2 queries first, then 3 matching queries (DINO's layout)
    groups = QueryGroups([QueryGroup(4, "dn_outputs", blocks=2, sees=(None,)), QueryGroup(3)])
    T, F = True, False
    assert groups.attention_mask().tolist() == [
        [F, F, T, T, F, F, F],
        [F, F, T, T, F, F, F],
        [T, T, F, F, F, F, F],
        [T, T, F, F, F, F, F],
        [T, T, T, T, F, F, F],
        [T, T, T, T, F, F, F],
        [T, T, T, T, F, F, F],
    ]


def test_a_single_group_needs_no_mask():
    assert QueryGroups.single(4).attention_mask() is None
    assert QueryGroups([QueryGroup(4, blocks=2)]).attention_mask() is not None


def test_outputs_split_every_layer_by_group():
    L, B = 3, 2
    groups = QueryGroups([QueryGroup(2), QueryGroup(3, "hybrid_outputs")])
    logits, boxes = torch.randn(L, B, 5, 7), torch.rand(L, B, 5, 4)
    out = groups.outputs({"pred_logits": logits, "pred_boxes": boxes})
    assert torch.equal(out["pred_logits"], logits[-1, :, :2]) and torch.equal(out["pred_boxes"], boxes[-1, :, :2])
    assert [torch.equal(a["pred_boxes"], boxes[i, :, :2]) for i, a in enumerate(out["aux_outputs"])] == [True] * 2
    hybrid = out["hybrid_outputs"]
    assert torch.equal(hybrid["pred_logits"], logits[-1, :, 2:])
    assert torch.equal(hybrid["aux_outputs"][0]["pred_logits"], logits[0, :, 2:])
    assert layer_outputs({"pred_logits": logits})["pred_logits"].shape == (B, 5, 7)
    with pytest.raises(ValueError, match="predictions for 4 queries"):
        groups.outputs({"pred_logits": logits[:, :, :4]})


@pytest.mark.parametrize(
    "groups, message",
    [
        ([QueryGroup(2), QueryGroup(2)], "exactly one query group"),
        ([QueryGroup(2, "a"), QueryGroup(2, "a"), QueryGroup(1)], "distinct"),
        ([QueryGroup(3, "dn", blocks=2), QueryGroup(1)], "equal blocks"),
        ([QueryGroup(2, "dn", sees=("other",)), QueryGroup(1)], "not other groups"),
    ],
)
def test_bad_groups_are_named(groups, message):
    with pytest.raises(ValueError, match=message):
        QueryGroups(groups)


def hidden_group_is_unseen(run, Q=5, seen=2, d=16):
    """`run(tgt, self_attn_mask)` -> (B, Q, C): the first `seen` queries' outputs must not change when the
    other queries (which they may not see) change, and must equal those of the first queries alone."""
    torch.manual_seed(0)
    mask = QueryGroups([QueryGroup(seen), QueryGroup(Q - seen, "other")]).attention_mask()
    tgt = torch.randn(1, Q, d)
    other = tgt.clone()
    other[:, seen:] = torch.randn(1, Q - seen, d)
    with torch.no_grad():
        out, out_other = run(tgt, mask), run(other, mask)
    torch.testing.assert_close(out[:, :seen], out_other[:, :seen], rtol=0, atol=1e-6)
    assert not torch.allclose(out[:, seen:], out_other[:, seen:], atol=1e-6)


def refining_layers(d=16):
    """Every refining decoder layer (the common call), tiny."""
    from sam_detr.modeling.transformer import (
        DeformableTransformerDecoderLayer, GlobalDecoderLayer, MSDETRDecoderLayer, SAMDETRDecoderLayer,
    )

    return {
        "deformable": DeformableTransformerDecoderLayer(d, 2, 32, 0.0, n_levels=1, n_points=2),
        "ms_detr": MSDETRDecoderLayer(d, 2, 32, 0.0, n_levels=1, n_points=2),
        "plain_detr": GlobalDecoderLayer(d, 2, 32, 0.0, rpe_hidden_dim=8, feature_stride=4),
        "sam_detr": SAMDETRDecoderLayer(d, 2, 32, 0.0, smca=True),
    }


@pytest.mark.parametrize("name", ["deformable", "ms_detr", "plain_detr", "sam_detr"])
def test_refining_decoder_layers_honour_the_mask(name):
    from sam_detr.modeling.box_coder import SigmoidBoxCoder
    from sam_detr.modeling.transformer import BoxRefinement, flatten_levels

    torch.manual_seed(0)
    layer = refining_layers()[name].eval()
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[:, :, 3] = True
    memory = flatten_levels([torch.randn(1, 16, 3, 4)], [mask], [torch.randn(1, 16, 3, 4)])
    pos = torch.randn(1, 5, 16)
    reference = BoxRefinement().start(torch.rand(1, 5, 4) * 0.5 + 0.25, SigmoidBoxCoder())
    hidden_group_is_unseen(lambda tgt, attn_mask: layer(tgt, pos, reference, memory, attn_mask))


def test_detr_and_conditional_detr_decoder_layers_honour_the_mask():
    from sam_detr.modeling.transformer import ConditionalDETRDecoderLayer
    from sam_detr.modeling.transformer.detr_transformer import TransformerDecoderLayer

    torch.manual_seed(0)
    memory, memory_pos, pos = torch.randn(1, 12, 16), torch.randn(1, 12, 16), torch.randn(1, 5, 16)
    padding = torch.zeros(1, 12, dtype=torch.bool)
    conditional = ConditionalDETRDecoderLayer(16, 2, 32, 0.0).eval()
    sine = torch.randn(1, 5, 16)
    hidden_group_is_unseen(lambda tgt, m: conditional(tgt, memory, padding, memory_pos, pos, sine, m))
    detr = TransformerDecoderLayer(16, 2, 32, 0.0).eval()
    hidden_group_is_unseen(lambda tgt, m: detr(tgt, memory, padding, memory_pos, pos, self_attn_mask=m))

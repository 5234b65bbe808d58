"""The official Plain-DETR checkpoint converter, against the official key and shape listings."""
import pytest
import torch

from conftest import DETECTRON2_MISSING
from official_listings import (
    CONVERTER_TEST_MARKS, TIED_HEADS, assert_renamed, convert_and_load_strictly, fake_official, meta_model,
)

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)


from sam_detr.checkpoint import convert_plain_detr, dataset_class_ids, plain_detr_key  # noqa: E402

pytestmark = CONVERTER_TEST_MARKS

# listing -> config of the same official model
CONFIG_OF = {
    "plain_ape": "plain_detr_swinv2_small_sup_pt_ape.py",
    "plain_boxrpe": "plain_detr_swinv2_small_sup_pt_boxrpe.py",
    "plain_reparam": "plain_detr_swinv2_small_mim_pt_boxrpe_reparam.py",
}
TIED = TIED_HEADS
GEOMETRY = (".relative_coords_table", ".relative_position_index")


def model_for(listing: str, num_classes: int):
    return meta_model(CONFIG_OF[listing], num_classes)


@pytest.mark.parametrize("listing", sorted(CONFIG_OF))
def test_official_listing_converts_and_loads_strictly(listing):
    official = fake_official(listing)
    model = model_for(listing, num_classes=91)
    converted = convert_and_load_strictly(
        convert_plain_detr, official, model, dropped_prefixes=TIED, dropped_suffixes=GEOMETRY
    )
    expected = {
        "backbone.0.net.body.layers.3.blocks.1.attn.cpb_mlp.2.weight":
            "backbone.net.layers.3.blocks.1.attn.cpb_mlp.2.weight",
        "backbone.0.upsample.0.weight": "backbone.upsample.0.weight",
        "transformer.level_embed": "level_embed",
        "transformer.decoder.layers.2.norm3.weight": "decoder.layers.2.ffn.norm.weight",
        "transformer.decoder.layers.5.linear1.bias": "decoder.layers.5.ffn.linear1.bias",
        "transformer.decoder.layers.0.self_attn.in_proj_weight": "decoder.layers.0.self_attn.in_proj_weight",
        "transformer.decoder.layers.4.cross_attn.k.weight": "decoder.layers.4.cross_attn.k.weight",
        "transformer.decoder.final_layer_norm.bias": "decoder.final_layer_norm.bias",
        "transformer.enc_output_norm.weight": "proposals.enc_output_norm.weight",
        "transformer.pos_trans.bias": "proposals.pos_trans.bias",
        "transformer.enc_output_proj.3.1.ln.weight": "proposal_proj.3.1.ln.weight",
        "transformer.enc_output_proj.3.3.bias": "proposal_proj.3.3.bias",
        "query_embed.weight": "query_embed.weight",
        "class_embed.6.bias": "class_embed.6.bias",
    }
    if listing != "plain_ape":
        rpb = "decoder.layers.1.cross_attn.cpb_mlp2.0.weight"
        expected["transformer." + rpb] = rpb
    assert_renamed(expected, plain_detr_key, official, converted)


def test_class_heads_keep_the_coco_rows_and_the_proposal_head_its_objectness_row():
    official = fake_official("plain_boxrpe")
    ids = dataset_class_ids("coco_2017_val")
    converted = convert_plain_detr(official, model_for("plain_boxrpe", num_classes=80).state_dict(), class_ids=ids)
    assert torch.equal(converted["class_embed.3.weight"], official["class_embed.3.weight"][ids])
    assert torch.equal(converted["class_embed.6.bias"], official["class_embed.6.bias"][[0] + ids[1:]])


def test_errors_name_the_first_offending_key():
    official = fake_official("plain_boxrpe")
    # an APE checkpoint has no BoxRPB MLPs
    with pytest.raises(KeyError, match="'decoder.layers.0.cross_attn.cpb_mlp1.0.weight' is not filled"):
        convert_plain_detr(fake_official("plain_ape"), model_for("plain_boxrpe", num_classes=91).state_dict())
    rpb = "'transformer.decoder.layers.0.cross_attn.cpb_mlp1.0.weight'"
    with pytest.raises(KeyError, match=rpb + ".*not in the target"):
        convert_plain_detr(official, model_for("plain_ape", num_classes=91).state_dict())

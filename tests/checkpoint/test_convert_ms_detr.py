"""The official MS-DETR checkpoint converter, against the official key and shape listings."""

import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT
from official_listings import (
    CONVERTER_TEST_MARKS, TIED_HEADS, assert_renamed, convert_and_load_strictly, fake_official, meta_model,
)

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)


from sam_detr.checkpoint.official import convert_official  # noqa: E402
from sam_detr.checkpoint import convert_deformable_detr, convert_ms_detr, dataset_class_ids, ms_detr_key  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
pytestmark = CONVERTER_TEST_MARKS

# listing -> config of the same official model
CONFIG_OF = {"msdetr": "ms_detr_r50_12ep.py", "msdetr_pp": "ms_detr_pp_r50_12ep.py"}
TIED = TIED_HEADS


def model_for(listing: str, num_classes: int):
    return meta_model(CONFIG_OF[listing], num_classes)


@pytest.mark.parametrize("listing", sorted(CONFIG_OF))
def test_official_listing_converts_and_loads_strictly(listing):
    official = fake_official(listing)
    model = model_for(listing, num_classes=91)
    converted = convert_and_load_strictly(convert_ms_detr, official, model, dropped_prefixes=TIED)
    expected = {
        "transformer.decoder.layers.2.linear3.weight": "transformer.decoder.layers.2.aux_ffn.linear1.weight",
        "transformer.decoder.layers.5.linear4.bias": "transformer.decoder.layers.5.aux_ffn.linear2.bias",
        "transformer.decoder.layers.0.norm4.weight": "transformer.decoder.layers.0.aux_ffn.norm.weight",
        "transformer.decoder.layers.0.linear1.weight": "transformer.decoder.layers.0.ffn.linear1.weight",
        "transformer.decoder.layers.3.norm3.bias": "transformer.decoder.layers.3.ffn.norm.bias",
        "transformer.encoder.layers.1.linear2.weight": "transformer.encoder.layers.1.ffn.linear2.weight",
        "transformer.decoder.layers.4.norm1.bias": "transformer.decoder.layers.4.norm1.bias",
        "transformer.pos_trans.weight": "transformer.proposals.pos_trans.weight",
        "class_embed.6.bias": "class_embed.6.bias",
        "bbox_embed.6.layers.2.weight": "bbox_embed.6.layers.2.weight",
    }
    if listing == "msdetr_pp":  # the learned content queries of mixed selection
        expected["query_embed.weight"] = "query_embed.weight"
        assert converted["query_embed.weight"].shape == (300, 256)
    assert_renamed(expected, ms_detr_key, official, converted)


def test_deformable_detr_converter_refuses_the_auxiliary_ffn():
    official = fake_official("msdetr")
    with pytest.raises(KeyError, match="'transformer.decoder.layers.0.linear3.weight'.*not in the target"):
        convert_deformable_detr(official, model_for("msdetr", num_classes=91).state_dict())
    # a Deformable DETR++ checkpoint without mixed selection into the MS-DETR++ model
    with pytest.raises(KeyError, match="'query_embed.weight' is not filled"):
        convert_ms_detr(official, model_for("msdetr_pp", num_classes=91).state_dict())


def test_tool_picks_the_ms_detr_converter_and_keeps_the_coco_rows(tmp_path):
    official = fake_official("msdetr_pp")
    source = tmp_path / "official.pth"
    torch.save({"model": official, "epoch": 11}, source)
    out = convert_official(str(CONFIGS / "ms_detr_pp_r50_12ep.py"), str(source), "coco_2017_val")
    assert "MS-DETR" in out["__author__"]
    ids = dataset_class_ids("coco_2017_val")
    weights = out["model"]
    assert torch.equal(weights["class_embed.3.weight"], official["class_embed.3.weight"][ids])
    assert torch.equal(weights["class_embed.6.bias"], official["class_embed.6.bias"][[0] + ids[1:]])
    assert torch.equal(weights["transformer.decoder.layers.1.aux_ffn.norm.bias"],
                       official["transformer.decoder.layers.1.norm4.bias"])

"""The official Conditional DETR and DETR checkpoint converters, against the official key and shape listings."""

import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT
from official_listings import (
    CONVERTER_TEST_MARKS, assert_renamed, convert_and_load_strictly, fake_official, meta_model,
)

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)


from sam_detr.checkpoint.official import convert_official  # noqa: E402
from sam_detr.checkpoint import (  # noqa: E402
    conditional_detr_key, convert_conditional_detr, convert_detr, dataset_class_ids,
)

CONFIGS = REPO_ROOT / "configs"
pytestmark = CONVERTER_TEST_MARKS

# listing -> (config of the same official model, converter)
CONFIG_OF = {
    "cond": ("conditional_detr_r50_50ep.py", convert_conditional_detr),
    "cond_dc5": ("conditional_detr_r50_dc5_50ep.py", convert_conditional_detr),
    "detr": ("detr_r50_500ep.py", convert_detr),
}


def model_for(listing: str, num_classes: int):
    return meta_model(CONFIG_OF[listing][0], num_classes)


@pytest.mark.parametrize("listing", sorted(CONFIG_OF))
def test_official_listing_converts_and_loads_strictly(listing):
    official = fake_official(listing)
    model = model_for(listing, num_classes=91)
    converted = convert_and_load_strictly(CONFIG_OF[listing][1], official, model)
    expected = {
        "backbone.0.body.layer4.2.bn3.running_var": "backbone.res5.2.conv3.norm.running_var",
        "input_proj.weight": "input_proj.0.0.weight",
        "input_proj.bias": "input_proj.0.0.bias",
        "transformer.encoder.layers.5.linear1.weight": "transformer.encoder.layers.5.ffn.linear1.weight",
        "transformer.encoder.layers.2.norm2.bias": "transformer.encoder.layers.2.ffn.norm.bias",
        "transformer.encoder.layers.2.norm1.bias": "transformer.encoder.layers.2.norm1.bias",
        "transformer.decoder.layers.3.norm3.weight": "transformer.decoder.layers.3.ffn.norm.weight",
        "transformer.decoder.layers.3.norm2.weight": "transformer.decoder.layers.3.norm2.weight",
        "transformer.decoder.norm.bias": "transformer.decoder.norm.bias",
        "query_embed.weight": "query_embed.weight",
        "class_embed.bias": "class_embed.bias",
        "bbox_embed.layers.2.weight": "bbox_embed.layers.2.weight",
    }
    if listing.startswith("cond"):
        expected.update({
            "transformer.decoder.layers.0.ca_qpos_proj.weight": "transformer.decoder.layers.0.ca_qpos_proj.weight",
            "transformer.decoder.layers.4.sa_kpos_proj.bias": "transformer.decoder.layers.4.sa_kpos_proj.bias",
            "transformer.decoder.layers.5.cross_attn.out_proj.weight":
                "transformer.decoder.layers.5.cross_attn.out_proj.weight",
            "transformer.decoder.query_scale.layers.1.bias": "transformer.decoder.query_scale.layers.1.bias",
            "transformer.decoder.ref_point_head.layers.1.weight": "transformer.decoder.ref_point_head.layers.1.weight",
        })
    else:
        expected["transformer.decoder.layers.1.multihead_attn.in_proj_weight"] = (
            "transformer.decoder.layers.1.multihead_attn.in_proj_weight"
        )
    assert_renamed(expected, conditional_detr_key, official, converted)


def test_class_heads_keep_the_coco_rows_and_detr_its_no_object_row():
    ids = dataset_class_ids("coco_2017_val")
    official = fake_official("cond")
    converted = convert_conditional_detr(official, model_for("cond", num_classes=80).state_dict(), class_ids=ids)
    for suffix in ("weight", "bias"):
        assert torch.equal(converted[f"class_embed.{suffix}"], official[f"class_embed.{suffix}"][ids])
    official = fake_official("detr")
    converted = convert_detr(official, model_for("detr", num_classes=80).state_dict(), class_ids=ids)
    for suffix in ("weight", "bias"):
        assert torch.equal(converted[f"class_embed.{suffix}"], official[f"class_embed.{suffix}"][ids + [91]])


def test_errors_name_the_first_offending_key():
    official = fake_official("cond")
    target = model_for("cond", num_classes=91).state_dict()
    # ca_qpos_proj belongs to layer 0 only
    extra = {**official, "transformer.decoder.layers.1.ca_qpos_proj.bias": torch.zeros(256)}
    with pytest.raises(KeyError, match="'transformer.decoder.layers.1.ca_qpos_proj.bias'.*not in the target"):
        convert_conditional_detr(extra, target)
    missing = {k: v for k, v in official.items() if k != "transformer.decoder.query_scale.layers.0.bias"}
    with pytest.raises(KeyError, match="'transformer.decoder.query_scale.layers.0.bias' is not filled"):
        convert_conditional_detr(missing, target)
    # a DETR checkpoint into Conditional DETR
    with pytest.raises(KeyError, match="not in the target"):
        convert_conditional_detr(fake_official("detr"), target)


@pytest.mark.parametrize("config, listing, origin", [
    ("conditional_detr_r50_50ep.py", "cond", "ConditionalDETR"),
    ("detr_r50_500ep.py", "detr", "facebookresearch/detr"),
])
def test_tool_converts_official_checkpoints(tmp_path, config, listing, origin):
    official = fake_official(listing)
    source = tmp_path / "official.pth"
    torch.save({"model": official, "epoch": 49}, source)
    out = convert_official(str(CONFIGS / config), str(source), "coco_2017_val")
    assert origin in out["__author__"]
    assert out["model"]["class_embed.bias"].shape == (80 + (listing == "detr"),)
    assert torch.equal(out["model"]["input_proj.0.0.weight"], official["input_proj.weight"])

"""The official Deformable DETR checkpoint converter, against the official key and shape listings."""

import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT
from official_listings import (
    CONVERTER_TEST_MARKS, TIED_HEADS, assert_renamed, convert_and_load_strictly, fake_official, meta_model,
)

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)


from sam_detr.checkpoint.official import convert_official  # noqa: E402
from sam_detr.checkpoint import convert_deformable_detr, dataset_class_ids, deformable_detr_key  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
pytestmark = CONVERTER_TEST_MARKS

# listing -> config of the same official model
CONFIG_OF = {
    "ddetr_ss": "deformable_detr_r50_single_scale_50ep.py",
    "ddetr_ss_dc5": "deformable_detr_r50_single_scale_dc5_50ep.py",
    "ddetr": "deformable_detr_r50_50ep.py",
    "ddetr_refine": "deformable_detr_r50_refine_50ep.py",
    "ddetr_twostage": "deformable_detr_r50_two_stage_50ep.py",
}
TIED = TIED_HEADS


def model_for(listing: str, num_classes: int):
    return meta_model(CONFIG_OF[listing], num_classes)


@pytest.mark.parametrize("listing", sorted(CONFIG_OF))
def test_official_listing_converts_and_loads_strictly(listing):
    official = fake_official(listing)
    model = model_for(listing, num_classes=91)
    converted = convert_and_load_strictly(convert_deformable_detr, official, model, dropped_prefixes=TIED)
    expected = {
        "backbone.0.body.layer2.0.downsample.0.weight": "backbone.res3.0.shortcut.weight",
        "transformer.level_embed": "transformer.level_embed",
        "transformer.encoder.layers.5.self_attn.sampling_offsets.bias":
            "transformer.encoder.layers.5.self_attn.sampling_offsets.bias",
        "transformer.encoder.layers.2.norm2.weight": "transformer.encoder.layers.2.ffn.norm.weight",
        "transformer.decoder.layers.3.cross_attn.attention_weights.weight":
            "transformer.decoder.layers.3.cross_attn.attention_weights.weight",
        "transformer.decoder.layers.1.self_attn.in_proj_weight":
            "transformer.decoder.layers.1.self_attn.in_proj_weight",
        "transformer.decoder.layers.4.norm2.bias": "transformer.decoder.layers.4.norm2.bias",
        "transformer.decoder.layers.4.norm3.bias": "transformer.decoder.layers.4.ffn.norm.bias",
        "transformer.decoder.layers.0.linear2.weight": "transformer.decoder.layers.0.ffn.linear2.weight",
        "input_proj.0.1.weight": "input_proj.0.1.weight",
        "class_embed.5.bias": "class_embed.5.bias",
        "bbox_embed.5.layers.2.weight": "bbox_embed.5.layers.2.weight",
    }
    if listing == "ddetr_twostage":
        expected["transformer.enc_output.weight"] = "transformer.proposals.enc_output.weight"
        expected["transformer.pos_trans_norm.bias"] = "transformer.proposals.pos_trans_norm.bias"
        expected["class_embed.6.weight"] = "class_embed.6.weight"
    else:
        expected["transformer.reference_points.weight"] = "transformer.reference_points.weight"
        expected["query_embed.weight"] = "query_embed.weight"
    if listing == "ddetr":
        expected["input_proj.3.0.weight"] = "input_proj.3.0.weight"
    assert_renamed(expected, deformable_detr_key, official, converted)


def test_shared_heads_stay_shared_and_copies_stay_apart():
    """Without refinement one head serves every layer (also after loading); with it each layer has its own."""
    shared = model_for("ddetr", num_classes=91)
    assert shared.class_embed[0] is shared.class_embed[5] and shared.bbox_embed[0] is shared.bbox_embed[5]
    refine = model_for("ddetr_refine", num_classes=91)
    assert refine.class_embed[0] is not refine.class_embed[5]
    official = fake_official("ddetr_refine")
    converted = convert_deformable_detr(official, refine.state_dict())
    assert not torch.equal(converted["bbox_embed.1.layers.0.bias"], converted["bbox_embed.2.layers.0.bias"])
    tied = official["transformer.decoder.bbox_embed.1.layers.0.bias"]
    assert torch.equal(converted["bbox_embed.1.layers.0.bias"], tied)


def test_class_heads_keep_the_coco_rows_and_the_proposal_head_its_objectness_row():
    official = fake_official("ddetr_twostage")
    ids = dataset_class_ids("coco_2017_val")
    target = model_for("ddetr_twostage", num_classes=80).state_dict()
    converted = convert_deformable_detr(official, target, class_ids=ids)
    for i in range(6):
        assert torch.equal(converted[f"class_embed.{i}.weight"], official[f"class_embed.{i}.weight"][ids])
    # two-stage selects and trains the proposals on logit 0: it stays first
    rows = [0] + ids[1:]
    for suffix in ("weight", "bias"):
        assert torch.equal(converted[f"class_embed.6.{suffix}"], official[f"class_embed.6.{suffix}"][rows])
    assert converted["class_embed.6.bias"][0] == official["class_embed.6.bias"][0]


def test_errors_name_the_first_offending_key():
    official = fake_official("ddetr_twostage")
    target = model_for("ddetr_twostage", num_classes=91).state_dict()
    untied = {**official, "transformer.decoder.class_embed.6.bias": torch.zeros(91)}
    with pytest.raises(ValueError, match="'transformer.decoder.class_embed.6.bias' differs"):
        convert_deformable_detr(untied, target)
    missing = {k: v for k, v in official.items() if k != "transformer.pos_trans.bias"}
    with pytest.raises(KeyError, match="'transformer.proposals.pos_trans.bias' is not filled"):
        convert_deformable_detr(missing, target)
    # a one-stage checkpoint into the two-stage model
    with pytest.raises(KeyError, match="'transformer.reference_points.weight'.*not in the target"):
        convert_deformable_detr(fake_official("ddetr_refine"), target)


def test_tool_converts_a_two_stage_checkpoint(tmp_path):
    official = fake_official("ddetr_twostage")
    source = tmp_path / "official.pth"
    torch.save({"model": official, "epoch": 49}, source)
    out = convert_official(str(CONFIGS / "deformable_detr_r50_two_stage_50ep.py"), str(source), "coco_2017_val")
    assert "Deformable-DETR" in out["__author__"]
    assert out["model"]["class_embed.6.bias"].shape == (80,)
    assert torch.equal(out["model"]["transformer.proposals.enc_output_norm.bias"],
                       official["transformer.enc_output_norm.bias"])

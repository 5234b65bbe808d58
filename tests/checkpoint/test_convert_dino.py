"""The official DINO checkpoint converter, against the official key and shape listings (tests/checkpoint/listings,
built on CPU from IDEA-Research/DINO's config/DINO/DINO_{4,5}scale.py)."""
import pytest
import torch

from conftest import DETECTRON2_MISSING
from official_listings import (
    CONVERTER_TEST_MARKS, TIED_HEADS, assert_renamed, convert_and_load_strictly, fake_official, meta_model,
)

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from sam_detr.checkpoint.dino import convert_dino, dino_key  # noqa: E402

pytestmark = CONVERTER_TEST_MARKS
# listing -> config of the same official model
CONFIG_OF = {"dino_4scale": "dino_r50_4scale_12ep.py", "dino_5scale": "dino_r50_5scale_12ep.py"}


def model_for(listing: str, num_classes: int):
    return meta_model(CONFIG_OF[listing], num_classes)


@pytest.mark.parametrize("listing", sorted(CONFIG_OF))
def test_official_listing_converts_and_loads_strictly(listing):
    official = fake_official(listing)
    converted = convert_and_load_strictly(convert_dino, official, model_for(listing, 91), dropped_prefixes=TIED_HEADS)
    expected = {
        "backbone.0.body.layer3.5.conv2.weight": "backbone.res4.5.conv2.weight",
        "transformer.level_embed": "transformer.level_embed",
        "transformer.encoder.layers.5.self_attn.sampling_offsets.bias":
            "transformer.encoder.layers.5.self_attn.sampling_offsets.bias",
        "transformer.encoder.layers.1.norm2.weight": "transformer.encoder.layers.1.ffn.norm.weight",
        "transformer.decoder.layers.2.self_attn.in_proj_weight": "transformer.decoder.layers.2.self_attn.in_proj_weight",
        "transformer.decoder.layers.3.norm3.bias": "transformer.decoder.layers.3.ffn.norm.bias",
        "transformer.decoder.layers.0.linear1.weight": "transformer.decoder.layers.0.ffn.linear1.weight",
        "transformer.decoder.norm.weight": "transformer.decoder.norm.weight",
        "transformer.decoder.ref_point_head.layers.1.bias": "transformer.decoder.ref_point_head.layers.1.bias",
        "transformer.tgt_embed.weight": "transformer.tgt_embed.weight",
        "transformer.enc_output.weight": "transformer.proposals.enc_output.weight",
        "transformer.enc_output_norm.bias": "transformer.proposals.enc_output_norm.bias",
        "transformer.enc_out_class_embed.bias": "class_embed.6.bias",
        "transformer.enc_out_bbox_embed.layers.2.weight": "bbox_embed.6.layers.2.weight",
        "label_enc.weight": "denoising.label_enc.weight",
        "class_embed.5.weight": "class_embed.5.weight",
        "bbox_embed.0.layers.0.bias": "bbox_embed.0.layers.0.bias",
        "input_proj.3.0.weight": "input_proj.3.0.weight",
    }
    assert_renamed(expected, dino_key, official, converted)
    # 4 scales: C3-C5 + one strided level on C5; 5 scales: C2-C5 + one
    assert official["input_proj.0.0.weight"].shape[1] == (512 if listing == "dino_4scale" else 256)


def test_shared_heads_stay_shared_and_the_proposal_heads_apart():
    model = model_for("dino_4scale", 91)
    assert model.class_embed[0] is model.class_embed[5] and model.bbox_embed[0] is model.bbox_embed[5]
    assert model.class_embed[6] is not model.class_embed[0] and model.bbox_embed[6] is not model.bbox_embed[0]


def test_class_heads_and_label_embedding_keep_the_dataset_rows():
    official = fake_official("dino_4scale")
    ids = [1, 2, 3, 90, 7]  # any official class index per contiguous class
    converted = convert_dino(official, model_for("dino_4scale", len(ids)).state_dict(), class_ids=ids)
    for i in range(6):
        assert torch.equal(converted[f"class_embed.{i}.weight"], official[f"class_embed.{i}.weight"][ids])
    # the proposals' head is class-aware in DINO (top-k over its best class): the same rows
    assert torch.equal(converted["class_embed.6.bias"], official["transformer.enc_out_class_embed.bias"][ids])
    # the label embedding: the classes' rows, then its never-drawn last row
    assert torch.equal(converted["denoising.label_enc.weight"], official["label_enc.weight"][ids + [91]])


def test_errors_name_the_first_offending_key():
    official = fake_official("dino_4scale")
    target = model_for("dino_4scale", 91).state_dict()
    untied = {**official, "transformer.decoder.bbox_embed.3.layers.0.bias": torch.zeros(256)}
    with pytest.raises(ValueError, match="'transformer.decoder.bbox_embed.3.layers.0.bias' differs"):
        convert_dino(untied, target)
    # a 4-scale checkpoint into a 5-scale model
    with pytest.raises(ValueError, match=r"'transformer.level_embed'.*shape \(4, 256\).*\(5, 256\)"):
        convert_dino(official, model_for("dino_5scale", 91).state_dict())
    with pytest.raises(KeyError, match="not a DINO checkpoint"):
        convert_dino({"class_embed.0.weight": torch.zeros(2, 2)}, target)


def test_swin_backbone_keys_lose_the_joiner_index_and_the_geometry_buffers():
    """DINO-Swin-L's backbone keys (IDEA-Research/DINO swin_L_384_22k, as its state dict names them)."""
    official = {
        "backbone.0.patch_embed.proj.weight": torch.zeros(192, 3, 4, 4),
        "backbone.0.layers.2.blocks.17.attn.relative_position_bias_table": torch.ones(529, 24),
        "backbone.0.layers.2.blocks.17.attn.relative_position_index": torch.zeros(144, 144, dtype=torch.int64),
        "backbone.0.layers.0.downsample.reduction.weight": torch.full((384, 768), 2.0),
        "backbone.0.norm3.bias": torch.full((1536,), 3.0),
        "transformer.decoder.layers.0.norm1.weight": torch.ones(256),
    }
    target = {dino_key(k): v for k, v in official.items() if not k.endswith("relative_position_index")}
    converted = convert_dino(official, target)
    assert sorted(converted) == sorted([
        "backbone.patch_embed.proj.weight", "backbone.layers.2.blocks.17.attn.relative_position_bias_table",
        "backbone.layers.0.downsample.reduction.weight", "backbone.norm3.bias", "transformer.decoder.layers.0.norm1.weight",
    ])

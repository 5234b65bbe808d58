"""The official SAM-DETR checkpoint converter, against the official key and shape listings."""
import argparse

import official_listings
import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT
from official_listings import CONVERTER_TEST_MARKS, assert_renamed, convert_and_load_strictly

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402

from sam_detr.checkpoint.official import convert_official  # noqa: E402
from sam_detr.checkpoint import convert_sam_detr, dataset_class_ids, sam_detr_key  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
pytestmark = CONVERTER_TEST_MARKS

# listing -> (model graph, GroupNorm in input_proj, SMCA)
GRAPHS = {
    "e12": ("sam_detr_r50.py", True, False),
    "e50": ("sam_detr_r50.py", False, False),
    "smca_e12": ("sam_detr_r50.py", True, True),
    "ms": ("sam_detr_r50_ms.py", True, False),
    "ms_smca": ("sam_detr_r50_ms.py", True, True),
}


def fake_official(listing: str):
    return official_listings.fake_official(f"sam_{listing}")


def model_for(listing: str, num_classes: int):
    graph, norm, smca = GRAPHS[listing]
    model = LazyConfig.load(str(CONFIGS / "common" / "models" / graph)).model
    model.criterion.num_classes = num_classes
    model.input_proj_norm = norm
    model.transformer.decoder.layer.smca = smca
    with torch.device("meta"):
        return instantiate(model)


@pytest.mark.parametrize("listing", sorted(GRAPHS))
def test_official_listing_converts_and_loads_strictly(listing):
    official = fake_official(listing)
    model = model_for(listing, num_classes=91)
    converted = convert_and_load_strictly(
        convert_sam_detr, official, model, dropped_prefixes="transformer.decoder.bbox_embed."
    )
    layer = "transformer.decoder.layers"
    expected = {
        "backbone.0.body.conv1.weight": "backbone.stem.conv1.weight",
        "backbone.0.body.layer1.0.downsample.1.running_var": "backbone.res2.0.shortcut.norm.running_var",
        "backbone.0.body.layer4.2.bn3.bias": "backbone.res5.2.conv3.norm.bias",
        f"{layer}.3.point2.6.weight": f"{layer}.3.semantics_aligner.point2.6.weight",
        f"{layer}.5.attn2.bias": f"{layer}.5.semantics_aligner.attn2.bias",
        f"{layer}.2.ca_qpos_sine_proj.layers.1.weight": f"{layer}.2.ca_qpos_sine_proj.layers.1.weight",
        f"{layer}.1.norm2.weight": f"{layer}.1.norm2.weight",
        f"{layer}.1.norm3.weight": f"{layer}.1.ffn.norm.weight",
        f"{layer}.4.linear1.bias": f"{layer}.4.ffn.linear1.bias",
        "transformer.encoder.layers.2.linear2.weight": "transformer.encoder.layers.2.ffn.linear2.weight",
        "transformer.encoder.layers.3.norm2.bias": "transformer.encoder.layers.3.ffn.norm.bias",
        "transformer.encoder.layers.3.norm1.bias": "transformer.encoder.layers.3.norm1.bias",
        "input_proj.0.0.weight": "input_proj.0.0.weight",
        "query_embed.weight": "query_embed.weight",
        "bbox_embed.4.layers.2.bias": "bbox_embed.4.layers.2.bias",
    }
    if listing.startswith("ms"):
        expected["transformer.level_embed"] = "transformer.level_embed"
        expected["transformer.encoder.layers.1.self_attn.sampling_offsets.bias"] = (
            "transformer.encoder.layers.1.self_attn.sampling_offsets.bias"
        )
    assert_renamed(expected, sam_detr_key, official, converted)


def test_class_heads_keep_the_coco_rows_of_detectron2_classes():
    official = fake_official("e12")
    ids = dataset_class_ids("coco_2017_val")
    assert len(ids) == 80 and ids[:3] == [1, 2, 3] and ids[-1] == 90 and 12 not in ids
    converted = convert_sam_detr(official, model_for("e12", num_classes=80).state_dict(), class_ids=ids)
    for i in range(6):
        for suffix in ("weight", "bias"):
            key = f"class_embed.{i}.{suffix}"
            assert torch.equal(converted[key], official[key][ids])


def test_errors_name_the_first_offending_key():
    official = fake_official("e12")
    target = model_for("e12", num_classes=91).state_dict()

    extra = {**official, "transformer.decoder.layers.0.extra.weight": torch.zeros(1)}
    with pytest.raises(KeyError, match=r"'transformer.decoder.layers.0.extra.weight'.*not in the target"):
        convert_sam_detr(extra, target)
    with pytest.raises(KeyError, match="'backbone.0.body.fc.weight' is not a torchvision ResNet weight"):
        convert_sam_detr({**official, "backbone.0.body.fc.weight": torch.zeros(1)}, target)

    missing = dict(official)
    del missing["transformer.decoder.layers.4.norm2.bias"]
    with pytest.raises(KeyError, match="'transformer.decoder.layers.4.norm2.bias' is not filled"):
        convert_sam_detr(missing, target)

    reshaped = {**official, "query_embed.weight": torch.zeros(100, 4)}
    with pytest.raises(ValueError, match=r"'query_embed.weight'.*\(100, 4\).*\(300, 4\)"):
        convert_sam_detr(reshaped, target)
    with pytest.raises(ValueError, match="'class_embed.0.weight'.*shape"):
        convert_sam_detr(official, model_for("e12", num_classes=80).state_dict())

    untied = {**official, "transformer.decoder.bbox_embed.1.layers.0.bias": torch.zeros(256)}
    with pytest.raises(ValueError, match="'transformer.decoder.bbox_embed.1.layers.0.bias' differs"):
        convert_sam_detr(untied, target)


def test_tool_converts_a_checkpoint_for_a_config(tmp_path):
    official = fake_official("e50")
    source = tmp_path / "official.pth"
    torch.save({"model": official, "epoch": 49, "args": argparse.Namespace(epochs=50, lr=1e-4)}, source)
    out = convert_official(str(CONFIGS / "sam_detr_r50_50ep.py"), str(source), "coco_2017_val")
    assert out["matching_heuristics"] is False and "SAM-DETR" in out["__author__"]
    assert out["model"]["class_embed.5.bias"].shape == (80,)
    assert torch.equal(out["model"]["transformer.decoder.layers.0.semantics_aligner.point1.0.bias"],
                       official["transformer.decoder.layers.0.point1.0.bias"])

import pytest
import torch

from conftest import DETECTRON2_MISSING
from swin_v2_tiny import TINY_SWINV2, trained_like

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from sam_detr.checkpoint import KeyRules  # noqa: E402
from sam_detr.checkpoint.swin_v2 import (  # noqa: E402
    PLAIN_DETR_BACKBONE_RULES, convert_plain_detr_backbone, convert_swinv2_pretrained, drop_geometry_buffers,
    swinv2_pretrained_key, unwrap_state_dict,
)
from sam_detr.modeling import build_swinv2_backbone  # noqa: E402

def _model(seed):
    torch.manual_seed(seed)
    return trained_like(build_swinv2_backbone(**TINY_SWINV2, drop_path_rate=0.0), seed).eval()


def _geometry_buffers(model, prefix):
    """The coordinate buffers an official state dict has for each window block (none for global blocks)."""
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "relative_coords_table"):
            out[f"{prefix}{name}.relative_coords_table"] = module.relative_coords_table[None]
            out[f"{prefix}{name}.relative_position_index"] = module.relative_position_index
    return out


def _official_detection_state(model):
    """A Plain-DETR state dict as the official model lays it out: trunk under backbone.0.net.body., the
    upsampling layer under backbone.0.upsample., the coordinate buffers, and the detector's own keys."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("net."):
            state["backbone.0.net.body." + key[len("net.") :]] = value
        else:
            state["backbone.0." + key] = value
    state.update(_geometry_buffers(model.net, "backbone.0.net.body."))
    state["transformer.level_embed"] = torch.zeros(1, 256)
    return state


def _target(model):
    return {"backbone." + k: v for k, v in model.state_dict().items()}


def _load(model, converted):
    model.load_state_dict({k[len("backbone.") :]: v for k, v in converted.items()}, strict=True)


def test_detection_checkpoint_round_trip():
    source, dest = _model(0), _model(1)
    official = _official_detection_state(source)
    assert any(k.endswith("relative_position_index") for k in official)
    converted = convert_plain_detr_backbone(official, _target(dest))
    assert set(converted) == set(_target(dest))
    _load(dest, converted)
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        assert torch.equal(dest(x)["p4"], source(x)["p4"])


def test_detection_key_mapping():
    rename = KeyRules(PLAIN_DETR_BACKBONE_RULES, backbone_prefix=None)
    assert rename("backbone.0.net.body.layers.3.blocks.1.attn.cpb_mlp.2.weight") == (
        "backbone.net.layers.3.blocks.1.attn.cpb_mlp.2.weight"
    )
    assert rename("backbone.0.body.norm3.weight") == "backbone.net.norm3.weight"
    assert rename("backbone.0.upsample.0.bias") == "backbone.upsample.0.bias"
    buffers = {"backbone.0.net.body.layers.0.blocks.0.attn.relative_coords_table": 0,
               "backbone.0.net.body.layers.0.blocks.0.attn.relative_position_index": 0,
               "layers.0.blocks.1.attn_mask": 0, "backbone.0.upsample.0.bias": 1}
    assert drop_geometry_buffers(buffers) == {"backbone.0.upsample.0.bias": 1}


def test_detection_converter_names_the_offending_key():
    model = _model(0)
    target = _target(model)
    official = _official_detection_state(model)

    missing = dict(official)
    del missing["backbone.0.net.body.layers.2.blocks.1.attn.q_bias"]
    with pytest.raises(KeyError, match=r"layers\.2\.blocks\.1\.attn\.q_bias"):
        convert_plain_detr_backbone(missing, target)

    extra = dict(official, **{"backbone.0.net.body.layers.0.blocks.0.attn.k_bias": torch.zeros(8)})
    with pytest.raises(KeyError, match=r"layers\.0\.blocks\.0\.attn\.k_bias"):
        convert_plain_detr_backbone(extra, target)

    unknown = dict(official, **{"backbone.0.fpn.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"backbone\.0\.fpn\.weight"):
        convert_plain_detr_backbone(unknown, target)

    wrong = dict(official, **{"backbone.0.upsample.0.weight": torch.zeros(64, 16, 3, 3)})
    with pytest.raises(ValueError, match=r"backbone\.0\.upsample\.0\.weight.*\(64, 16, 3, 3\)"):
        convert_plain_detr_backbone(wrong, target)


def _classification_state(model):
    """A SwinV2 classification checkpoint: the trunk without its output norm, the classifier's final norm and
    head, and the coordinate buffers and shift masks of Microsoft's code."""
    state = {k[len("net.") :]: v for k, v in model.state_dict().items() if k.startswith("net.") and "norm3" not in k}
    state.update(_geometry_buffers(model.net, ""))
    state["layers.0.blocks.0.attn_mask"] = torch.zeros(4, 16, 16)
    state.update({"norm.weight": torch.ones(64), "norm.bias": torch.zeros(64)})
    state.update({"head.weight": torch.zeros(1000, 64), "head.bias": torch.zeros(1000)})
    return state


def _simmim_state(model):
    state = {"encoder." + k.replace(".cpb_mlp.", ".rpe_mlp."): v for k, v in _classification_state(model).items()
             if not k.startswith("head.")}
    state["encoder.mask_token"] = torch.zeros(1, 1, 8)
    state.update({"decoder.0.weight": torch.zeros(3072, 64, 1, 1), "decoder.0.bias": torch.zeros(3072)})
    return state


@pytest.mark.parametrize("make", [_classification_state, _simmim_state])
def test_pretrained_checkpoints_fill_the_trunk_but_its_output_norm(make):
    source, dest = _model(0), _model(1)
    norm3 = dest.net.norm3.weight.clone()
    converted = convert_swinv2_pretrained(unwrap_state_dict({"model": make(source)}), _target(dest))
    trunk = {k for k in _target(dest) if k.startswith("backbone.net.")}
    assert set(converted) == trunk - {"backbone.net.norm3.weight", "backbone.net.norm3.bias"}
    dest.load_state_dict({k[len("backbone.") :]: v for k, v in converted.items()}, strict=False)
    assert torch.equal(dest.net.norm3.weight, norm3)  # the official loader leaves it at its init too
    for key, value in converted.items():
        assert torch.equal(value, _target(source)[key])


def test_pretrained_converter_names_the_offending_key():
    model = _model(0)
    target = _target(model)
    with pytest.raises(KeyError, match="encoder.layers.0.blocks.0.gamma"):
        convert_swinv2_pretrained(dict(_simmim_state(model), **{"encoder.layers.0.blocks.0.gamma": torch.zeros(8)}),
                                  target)
    with pytest.raises(KeyError, match="'teacher.weight' is neither"):
        convert_swinv2_pretrained(dict(_simmim_state(model), **{"teacher.weight": torch.zeros(8)}), target)
    state = _classification_state(model)
    del state["layers.1.downsample.reduction.weight"]
    with pytest.raises(KeyError, match=r"backbone\.net\.layers\.1\.downsample\.reduction\.weight"):
        convert_swinv2_pretrained(state, target)
    # a pretraining with another number of heads in the last stage
    state = dict(_classification_state(model), **{"layers.3.blocks.0.attn.cpb_mlp.2.weight": torch.zeros(8, 512)})
    with pytest.raises(ValueError, match=r"layers\.3\.blocks\.0\.attn\.cpb_mlp\.2\.weight"):
        convert_swinv2_pretrained(state, target)
    assert swinv2_pretrained_key("encoder.layers.0.blocks.1.attn.rpe_mlp.0.bias", simmim=True) == (
        "layers.0.blocks.1.attn.cpb_mlp.0.bias"
    )
    assert swinv2_pretrained_key("head.weight", simmim=False) is None

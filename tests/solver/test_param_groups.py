import pickle

import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT
from swin_v2_tiny import TINY_SWINV2

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyCall as L  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402

from sam_detr.modeling import build_swinv2_backbone  # noqa: E402
from sam_detr.solver import (  # noqa: E402
    LRFactorByName, SwinLayerDecayLRFactor, WeightDecayFactorByName, param_groups_by_name,
)

# the names Plain-DETR's row configs exempt from weight decay (the official --wd_norm_names)
PLAIN_DETR_NO_WEIGHT_DECAY = tuple(
    LazyConfig.load(str(REPO_ROOT / "configs" / "plain_detr_swinv2_small_sup_pt_boxrpe.py"))
    .optimizer.params.weight_decay_factor_func["keys"]
)


class _Detector(torch.nn.Module):
    """A backbone and a few detector parameters, named as a Plain-DETR model's."""

    def __init__(self, **backbone):
        super().__init__()
        self.backbone = build_swinv2_backbone(**backbone)
        self.input_proj = torch.nn.Conv2d(self.backbone.output_shape()["p4"].channels, 16, 1)
        self.level_embed = torch.nn.Parameter(torch.zeros(1, 16))


def _layer_ids_by_enumeration(depths):
    """Patch embedding 0; blocks 1, 2, ... in order across the stages; a stage's downsample takes its last
    block's id; the output norm L + 1."""
    ids = {"patch_embed": 0}
    k = 0
    for s, depth in enumerate(depths):
        for b in range(depth):
            k += 1
            ids[f"layers.{s}.blocks.{b}"] = k
        ids[f"layers.{s}.downsample"] = k
    ids["norm3"] = sum(depths) + 1
    return ids


def test_layer_decay_of_swinv2_small():
    with torch.device("meta"):
        model = _Detector()
    rule = SwinLayerDecayLRFactor(depths=(2, 2, 18, 2), decay_rate=0.9)
    ids = _layer_ids_by_enumeration((2, 2, 18, 2))
    for name, _ in model.named_parameters():
        if name.startswith("backbone.net."):
            trunk_name = name[len("backbone.net.") :]
            unit = next(u for u in ids if trunk_name.startswith(u + "."))
            assert rule.layer_id(name) == ids[unit], name
            assert rule(name) == pytest.approx(0.9 ** (25 - ids[unit])), name
        else:  # the upsampling layer and the detector: full lr, as in the official code
            assert rule(name) == 1.0, name
    assert rule("backbone.net.patch_embed.proj.weight") == pytest.approx(0.9**25)
    assert rule("backbone.net.layers.1.downsample.reduction.weight") == pytest.approx(0.9**21)
    assert rule("backbone.net.layers.3.blocks.1.mlp.fc2.bias") == pytest.approx(0.9)
    others = SwinLayerDecayLRFactor(others=LRFactorByName({"input_proj": 0.5}))
    assert others("input_proj.weight") == 0.5 and others("level_embed") == 1.0
    with pytest.raises(ValueError, match="layers.0.mystery"):
        rule("backbone.net.layers.0.mystery.weight")


def test_no_weight_decay_names():
    rule = WeightDecayFactorByName(PLAIN_DETR_NO_WEIGHT_DECAY, 0.0)
    for name in (
        "backbone.net.layers.0.blocks.0.norm1.weight",
        "backbone.net.layers.0.blocks.0.attn.q_bias",
        "backbone.net.layers.0.blocks.0.attn.logit_scale",
        "backbone.net.layers.0.blocks.0.attn.cpb_mlp.0.weight",
        "transformer.decoder.layers.0.cross_attn.cpb_mlp1.0.weight",
        "transformer.level_embed",
        "backbone.upsample.0.bias",
    ):
        assert rule(name) == 0.0, name
    kept = ("backbone.net.layers.0.blocks.0.attn.qkv.weight", "backbone.upsample.0.weight", "input_proj.0.1.weight")
    for name in kept:
        assert rule(name) == 1.0, name


def test_param_groups_from_a_lazy_config_and_pickled_rules():
    model = _Detector(**TINY_SWINV2, drop_path_rate=0.0)
    cfg = L(torch.optim.AdamW)(
        params=L(param_groups_by_name)(
            base_lr="${..lr}",
            weight_decay="${..weight_decay}",
            lr_factor_func=L(SwinLayerDecayLRFactor)(depths=(1, 1, 2, 2), decay_rate=0.9),
            weight_decay_factor_func=L(WeightDecayFactorByName)(keys=PLAIN_DETR_NO_WEIGHT_DECAY, factor=0.0),
        ),
        lr=2e-4,
        weight_decay=0.05,
    )
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"optimizer": cfg})
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    seen = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen[id(p)] = (group["lr"], group["weight_decay"])
    lr_rule, wd_rule = SwinLayerDecayLRFactor(depths=(1, 1, 2, 2)), WeightDecayFactorByName(PLAIN_DETR_NO_WEIGHT_DECAY)
    names = dict(model.named_parameters())
    assert len(seen) == len(names)
    for name, p in names.items():
        assert seen[id(p)] == pytest.approx((2e-4 * lr_rule(name), 0.05 * wd_rule(name))), name
    assert seen[id(names["backbone.net.patch_embed.proj.weight"])] == pytest.approx((2e-4 * 0.9**7, 0.05))
    assert seen[id(names["level_embed"])] == (2e-4, 0.0)
    # groups are merged by their hyper-parameters
    assert len(optimizer.param_groups) == len({(g["lr"], g["weight_decay"]) for g in optimizer.param_groups})
    for rule in (lr_rule, wd_rule, SwinLayerDecayLRFactor(others=LRFactorByName({"x": 0.1}))):
        again = pickle.loads(pickle.dumps(rule))
        assert [again(n) for n in names] == [rule(n) for n in names]


def test_frozen_and_tied_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[1].weight = model[0].weight
    model[0].bias.requires_grad_(False)
    groups = param_groups_by_name(model, 1e-3, 0.1, weight_decay_factor_func=WeightDecayFactorByName(("bias",)))
    params = {id(p) for g in groups for p in g["params"]}
    assert params == {id(model[0].weight), id(model[1].bias)}
    assert {(g["lr"], g["weight_decay"], len(g["params"])) for g in groups} == {(1e-3, 0.1, 1), (1e-3, 0.0, 1)}


def test_config_adamw_is_fused_and_updates_as_the_loop_does():
    """configs/common/optim.py builds the fused AdamW (one kernel for all parameters); its step is the
    per-parameter loop's, groups with their lr factors included, up to float rounding."""
    from conftest import REPO_ROOT
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "common" / "optim.py"))
    torch.manual_seed(0)
    models = [torch.nn.ModuleDict({"backbone": torch.nn.Linear(5, 4), "head": torch.nn.Linear(4, 3)}) for _ in "ab"]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = []
    for model, fused in zip(models, (True, False)):
        cfg.AdamW.params.model = model
        cfg.AdamW.fused = fused
        optimizers.append(instantiate(cfg.AdamW))
    assert optimizers[0].defaults["fused"]
    assert sorted(g["lr"] for g in optimizers[0].param_groups) == pytest.approx([1e-5, 1e-4])
    x = torch.randn(7, 5)
    for _ in range(3):
        for model, optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            model["head"](model["backbone"](x)).square().sum().backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

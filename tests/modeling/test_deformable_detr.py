import math

import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from model_inputs import model_and_optimizer, train_step_and_inference, two_images  # noqa: E402

from sam_detr.layers import MSDeformAttn  # noqa: E402
from sam_detr.modeling import DeformableDETR, HungarianMatcher, SetCriterion, build_resnet_backbone  # noqa: E402
from sam_detr.modeling.transformer import (  # noqa: E402
    DeformableTransformer,
    DeformableTransformerDecoder,
    DeformableTransformerDecoderLayer,
    DeformableTransformerEncoder,
    DeformableTransformerEncoderLayer,
    TwoStageProposals,
)

CONFIGS = REPO_ROOT / "configs"
ROWS = sorted(p.name for p in CONFIGS.glob("deformable_detr_r50_*50ep.py"))  # the five published rows
LOSSES = ("loss_ce", "loss_bbox", "loss_giou")


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(ROWS))
def test_every_row_trains_a_step_and_infers(config):
    cfg = LazyConfig.load(str(CONFIGS / config))
    assert cfg.dataloader.train.total_batch_size == 32 and cfg.train.epochs == 50
    assert cfg.lr_multiplier.milestones == [40] and cfg.train.clip_grad.max_norm == 0.1
    assert cfg.optimizer.lr == 2e-4 and cfg.optimizer.weight_decay == 1e-4
    factors = cfg.optimizer.params.lr_factor_func.factors
    assert factors == {"backbone.": 0.1, "reference_points": 0.1, "sampling_offsets": 0.1}
    assert cfg.train.init_checkpoint == "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    two_stage = "two_stage" in config
    # smaller for speed: fewer queries and layers
    cfg.model.num_queries = 30
    cfg.model.transformer.encoder.num_layers = 1
    cfg.model.transformer.decoder.num_layers = 2
    model, optimizer = model_and_optimizer(cfg)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([2e-5, 2e-4])
    losses, out = train_step_and_inference(model, optimizer)
    assert set(losses) == {k + s for k in LOSSES for s in ["", "_0"] + (["_enc"] if two_stage else [])}
    assert [len(o["instances"]) for o in out] == [100, 100] and out[0]["instances"].image_size == (134, 186)


def tiny_deformable_detr(refine=False, two_stage=False, mixed=False, look_forward_twice=False, **kwargs):
    """res4 and res5 of a ResNet-18 and one extra level; a few channels and layers; the official structure
    otherwise."""
    d, levels = 32, 3
    transformer = DeformableTransformer(
        DeformableTransformerEncoder(DeformableTransformerEncoderLayer(d, 4, 64, 0.0, n_levels=levels, n_points=2), 1),
        DeformableTransformerDecoder(DeformableTransformerDecoderLayer(d, 4, 64, 0.0, n_levels=levels, n_points=2), 3),
        TwoStageProposals(d) if two_stage else None,
    )
    return DeformableDETR(
        backbone=build_resnet_backbone(18, out_features=["res4", "res5"], norm="BN", freeze_at=0),
        in_features=["res4", "res5"],
        transformer=transformer,
        num_queries=7,
        with_box_refine=refine,
        mixed_selection=mixed,
        look_forward_twice=look_forward_twice,
        criterion=SetCriterion(5, HungarianMatcher(2, 5, 2), {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}),
        **kwargs,
    )


VARIANTS = [
    {},
    {"refine": True},
    {"refine": True, "two_stage": True},
    {"refine": True, "two_stage": True, "mixed": True, "look_forward_twice": True},
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_step_and_inference(variant):
    torch.manual_seed(0)
    model = tiny_deformable_detr(**variant)
    losses, out = train_step_and_inference(model)
    suffixes = ["", "_0", "_1"] + (["_enc"] if variant.get("two_stage") else [])
    assert set(losses) == {k + s for k in LOSSES for s in suffixes}
    assert model.backbone.res4[0].conv1.weight.grad.abs().sum() > 0
    # the queries' positions reach the loss through the sampling offsets, whose weights start at 0
    assert model.transformer.encoder.layers[0].self_attn.sampling_offsets.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in model.named_parameters() if "input_proj" in n)
    if model.query_embed is not None:
        assert model.query_embed.weight.shape == (7, 32 if variant.get("mixed") else 64)
        assert model.query_embed.weight.grad.abs().sum() > 0
    assert out[0]["instances"].image_size == (134, 186) and len(out[0]["instances"]) == 7 * 5
    assert out[1]["instances"].pred_classes.max() < 5


def test_shared_heads_without_refinement_and_their_initialisation():
    torch.manual_seed(0)
    model = tiny_deformable_detr()
    assert all(h is model.class_embed[0] for h in model.class_embed)
    assert all(h is model.bbox_embed[0] for h in model.bbox_embed) and len(model.bbox_embed) == 3
    assert torch.equal(model.bbox_embed[0].layers[-1].bias, torch.tensor([0.0, 0.0, -2.0, -2.0]))
    assert (model.bbox_embed[0].layers[-1].weight == 0).all()
    assert torch.allclose(model.class_embed[0].bias, torch.full((5,), -math.log(99.0)))
    assert (model.transformer.reference_points.bias == 0).all()


def test_refinement_copies_and_two_stage_resets_the_box_bias():
    torch.manual_seed(0)
    refine = tiny_deformable_detr(refine=True)
    assert len({id(h) for h in refine.bbox_embed}) == 3 and len({id(h) for h in refine.class_embed}) == 3
    # -2 on the first copy only: the others were copied before
    assert torch.equal(refine.bbox_embed[0].layers[-1].bias, torch.tensor([0.0, 0.0, -2.0, -2.0]))
    assert all((h.layers[-1].bias == 0).all() for h in refine.bbox_embed[1:])
    assert torch.equal(refine.bbox_embed[0].layers[0].weight, refine.bbox_embed[2].layers[0].weight)
    two_stage = tiny_deformable_detr(refine=True, two_stage=True)
    assert len(two_stage.bbox_embed) == 4 and all((h.layers[-1].bias == 0).all() for h in two_stage.bbox_embed)
    assert two_stage.query_embed is None and not hasattr(two_stage.transformer, "reference_points")


def test_transformer_initialisation():
    torch.manual_seed(0)
    model = tiny_deformable_detr(refine=True, two_stage=True)
    t = model.transformer
    attn = [m for m in t.modules() if isinstance(m, MSDeformAttn)]
    assert len(attn) == 4  # 1 encoder + 3 decoder layers
    for m in attn:
        assert (m.sampling_offsets.weight == 0).all() and (m.attention_weights.weight == 0).all()
        assert (m.attention_weights.bias == 0).all() and (m.value_proj.bias == 0).all()
        assert torch.allclose(m.sampling_offsets.bias.view(4, 3, 2, 2)[0, :, 1], torch.tensor([2.0, 0.0]))
    # xavier over the transformer's matrices (their default init would be bounded by 1 / sqrt(fan_in))
    weight = t.proposals.pos_trans.weight
    bound = math.sqrt(6 / sum(weight.shape))
    assert weight.abs().max() <= bound and weight.abs().max() > 1 / math.sqrt(weight.shape[1])
    assert 0.5 < t.level_embed.std() < 1.5  # N(0, 1)
    for proj in model.input_proj:  # xavier, bias 0, GroupNorm
        assert (proj[0].bias == 0).all() and isinstance(proj[1], torch.nn.GroupNorm)
    assert model.input_proj[2][0].stride == (2, 2) and model.input_proj[2][0].in_channels == 512


def test_batch_invariant_two_stage_detects_the_same_alone_and_in_a_batch():
    torch.manual_seed(0)
    model = tiny_deformable_detr(refine=True, two_stage=True, batch_invariant=True).eval()
    images = two_images()
    with torch.no_grad():
        alone = [model([x])[0]["instances"] for x in images]
        batch = [o["instances"] for o in model(images)]
        model.batch_invariant = False
        official = [o["instances"] for o in model(images)]
    for a, b in zip(alone, batch):
        assert torch.allclose(a.scores, b.scores, atol=1e-4) and torch.equal(a.pred_classes, b.pred_classes)
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3)
    # without it the padding changes the smaller image's detections
    assert not torch.allclose(alone[1].scores, official[1].scores, atol=1e-4)


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="two-stage Deformable DETR needs with_box_refine"):
        tiny_deformable_detr(two_stage=True)
    with pytest.raises(ValueError, match="mixed_selection selects queries from two-stage proposals"):
        tiny_deformable_detr(refine=True, mixed=True)
    with pytest.raises(ValueError, match="look_forward_twice needs iterative"):
        tiny_deformable_detr(look_forward_twice=True)
    with pytest.raises(ValueError, match=r"the encoder reads 3 level\(s\), the decoder layers \[2\]"):
        DeformableTransformer(
            DeformableTransformerEncoder(DeformableTransformerEncoderLayer(32, 4, 64, 0.0, n_levels=3, n_points=2), 1),
            DeformableTransformerDecoder(DeformableTransformerDecoderLayer(32, 4, 64, 0.0, n_levels=2, n_points=2), 1),
        )
    cfg = LazyConfig.load(str(CONFIGS / "deformable_detr_r50_single_scale_50ep.py"))
    cfg.model.in_features = cfg.model.backbone.out_features = ["res4", "res5"]
    with pytest.raises(ValueError, match=r"in_features \['res4', 'res5'\] are more levels than the transformer's 1"):
        with torch.device("meta"):
            instantiate(cfg.model)
    cfg = LazyConfig.load(str(CONFIGS / "deformable_detr_r50_50ep.py"))
    cfg.model.criterion.class_loss_type = "softmax"
    with pytest.raises(ValueError, match="needs class_loss_type='focal'"):
        with torch.device("meta"):
            instantiate(cfg.model)

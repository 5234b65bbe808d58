import math

import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.structures import Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from model_inputs import two_images  # noqa: E402

from sam_detr.layers import MSDeformAttn, _ext  # noqa: E402
from sam_detr.modeling import SAMDETR, HungarianMatcher, SetCriterion, build_resnet_backbone  # noqa: E402
from sam_detr.modeling.transformer import (  # noqa: E402
    DeformableTransformerEncoder,
    DeformableTransformerEncoderLayer,
    SAMDETRDecoder,
    SAMDETRDecoderLayer,
    SAMDETRMultiScaleTransformer,
    SAMDETRTransformer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from sam_detr.modeling.transformer.semantics_aligner import SemanticsAligner  # noqa: E402
from sam_detr.modeling.transformer.smca import smca_gaussian_bias  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
DATA_CONFIG = CONFIGS / "common" / "data" / "coco_detr.py"


def tiny_sam_detr(smca=False, multiscale=False, num_classes=5):
    """A few channels and layers; the official structure otherwise."""
    d = 32
    decoder = SAMDETRDecoder(
        SAMDETRDecoderLayer(d, 4, 64, dropout=0.0, smca=smca),
        num_layers=3,
        layer_levels=[2, 1, 0] if multiscale else None,
    )
    if multiscale:
        encoder = DeformableTransformerEncoder(DeformableTransformerEncoderLayer(d, 4, 64, 0.0, n_levels=3, n_points=2), 1)
        transformer = SAMDETRMultiScaleTransformer(encoder, decoder)
        features = ["res3", "res4", "res5"]
    else:
        transformer = SAMDETRTransformer(TransformerEncoder(TransformerEncoderLayer(d, 4, 64, 0.0), 1), decoder)
        features = ["res5"]
    return SAMDETR(
        backbone=build_resnet_backbone(18, out_features=features, norm="BN", freeze_at=0),
        in_features=features,
        transformer=transformer,
        input_proj_norm=True,
        num_queries=7,
        criterion=SetCriterion(
            num_classes, HungarianMatcher(2, 5, 2), {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
        ),
    )


@pytest.mark.parametrize("smca,multiscale", [(False, False), (True, False), (True, True)])
def test_semantics_aligner_learns(smca, multiscale):
    """Every weight of the Semantics Aligner gets a gradient (the losses and inference of every method:
    tests/modeling/test_contract.py)."""
    torch.manual_seed(0)
    model = tiny_sam_detr(smca, multiscale).train()
    with EventStorage():
        losses = model(two_images())
    sum(losses.values()).backward()
    aligner = [p for n, p in model.named_parameters() if "semantics_aligner" in n]
    assert aligner and all(p.grad is not None and p.grad.abs().sum() > 0 for p in aligner)


def test_official_initialisation():
    torch.manual_seed(0)
    model = tiny_sam_detr(multiscale=True)
    layers = model.transformer.decoder.layers
    point_head = layers[0].semantics_aligner.point2[-1]
    # the official zero init of this weight is overwritten by the transformer's xavier pass; the bias stays 0
    assert (point_head.bias == 0).all()
    bound = math.sqrt(6 / sum(point_head.weight.shape))
    assert 0 < point_head.weight.abs().max() <= bound
    # the decoder layers are copies of one layer, re-initialised by xavier (weights only)
    assert torch.equal(layers[0].ffn.linear1.bias, layers[2].ffn.linear1.bias)
    assert not torch.equal(layers[0].ffn.linear1.weight, layers[2].ffn.linear1.weight)
    attn = [m for m in model.transformer.encoder.modules() if isinstance(m, MSDeformAttn)]
    assert attn and all((m.sampling_offsets.weight == 0).all() for m in attn)
    assert all((m.attention_weights.weight == 0).all() for m in attn)
    assert torch.allclose(model.class_embed[1].bias, torch.full((5,), -math.log(99.0)))
    assert all((h.layers[-1].weight == 0).all() and (h.layers[-1].bias == 0).all() for h in model.bbox_embed)
    assert torch.equal(model.class_embed[0].weight, model.class_embed[2].weight)


def _head_outputs(model):
    images, mask = model.preprocess_image(two_images())
    return model.forward_head(*model.extract_features(images, mask))


@pytest.mark.parametrize("smca", [False, True])
def test_reference_boxes_learn_through_layer_zero_only(smca):
    """Later references are detached, the sine embeddings and RoIAlign pass no gradient to the boxes; only
    SMCA's Gaussian does."""
    torch.manual_seed(0)
    model = tiny_sam_detr(smca)
    for head in model.bbox_embed:  # zero-initialised: no gradient would reach the decoder at all
        torch.nn.init.normal_(head.layers[-1].weight, std=0.1)
    out = _head_outputs(model)
    later = out["pred_boxes"].sum() + sum(o["pred_boxes"].sum() for o in out["aux_outputs"][1:])
    later.backward()
    grad = model.query_embed.weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == smca
    model.zero_grad()
    _head_outputs(model)["aux_outputs"][0]["pred_boxes"].sum().backward()
    assert model.query_embed.weight.grad.abs().sum() > 0


def test_each_layer_refines_the_previous_prediction():
    torch.manual_seed(0)
    model = tiny_sam_detr(multiscale=True).eval()
    seen = []
    for layer in model.transformer.decoder.layers:
        layer.register_forward_pre_hook(lambda m, args: seen.append((args[3].as_map().shape[-2:], args[2].boxes)))
    with torch.no_grad():
        out = _head_outputs(model)
    boxes = [o["pred_boxes"] for o in out["aux_outputs"]]
    assert torch.equal(seen[0][1], model.query_embed.weight.sigmoid()[None].expand(2, -1, -1))
    for (_, ref), prev in zip(seen[1:], boxes):
        torch.testing.assert_close(ref, prev, rtol=0, atol=1e-6)
    # layers 0, 1, 2 attend to the stride-32, 16 and 8 levels of a 67 x 101 batch
    assert [tuple(s) for s, _ in seen] == [(3, 4), (5, 7), (9, 13)]


def _aligner_inputs():
    """A tiny aligner, memory of two images (the second padded: 3/4 of the width, 1/2 of the height valid)
    and three small reference boxes each."""
    torch.manual_seed(0)
    aligner = SemanticsAligner(d_model=16, nhead=2, roi_size=3)
    tgt, memory = torch.randn(2, 3, 16), torch.randn(2, 16, 12, 16)
    boxes = torch.tensor([[[0.2, 0.3, 0.2, 0.2], [0.25, 0.25, 0.1, 0.3], [0.3, 0.2, 0.1, 0.1]]]).repeat(2, 1, 1)
    valid_ratio = torch.tensor([[1.0, 1.0], [0.75, 0.5]])
    return aligner, tgt, memory, boxes, valid_ratio


def test_aligner_reads_the_memory_inside_the_reference_boxes_only():
    """The content queries and salient points come from the memory under each image's boxes (scaled to its
    unpadded part): garbage outside them (one pixel of bilinear margin kept) changes nothing, inside it does."""
    aligner, tgt, memory, boxes, valid_ratio = _aligner_inputs()
    with torch.no_grad():
        out = aligner(tgt, memory, boxes, valid_ratio)
        H, W = memory.shape[-2:]
        inside = torch.zeros(2, H, W, dtype=torch.bool)
        for b in range(2):
            w, h = valid_ratio[b, 0] * W, valid_ratio[b, 1] * H
            for cx, cy, bw, bh in boxes[b].tolist():
                x1, x2 = int((cx - bw / 2) * w) - 1, int((cx + bw / 2) * w) + 2
                y1, y2 = int((cy - bh / 2) * h) - 1, int((cy + bh / 2) * h) + 2
                inside[b, max(y1, 0) : y2, max(x1, 0) : x2] = True
        assert inside.float().mean() < 0.25  # most of the memory is outside
        garbage = memory.masked_fill(~inside[:, None], 1e3)
        outside_changed = aligner(tgt, garbage, boxes, valid_ratio)
        inside_changed = aligner(tgt, memory.masked_fill(inside[:, None], 0.0), boxes, valid_ratio)
    for got, expected in zip(outside_changed, out):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.allclose(inside_changed.content, out.content)


def test_aligner_runs_the_package_roi_align(monkeypatch):
    """sam_detr.layers.roi_align: the compiled CPU kernel where built; without it (its warning) torchvision's,
    with the same queries."""
    aligner, *inputs = _aligner_inputs()
    with torch.no_grad():
        out = aligner(*inputs)
    monkeypatch.setattr(_ext, "kernel_available", lambda op, device: False)
    monkeypatch.setattr(_ext, "_warned", set())
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="roi_align"):
        fallback = aligner(*inputs)
    for got, expected in zip(fallback, out):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_smca_bias_equals_official_formula():
    torch.manual_seed(0)
    B, Q, M, H, W = 2, 5, 4, 3, 6
    points, scales = torch.rand(B, Q, M, 2), torch.randn(B, Q, M, 2)
    valid = torch.tensor([[1.0, 1.0], [4 / 6, 2 / 3]])
    # ZhangGongjie/SAM-DETR models/transformer_decoder.py, with its (Q, H*W, B*M, 2) distances
    grid_y, grid_x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    grid = torch.stack((grid_x, grid_y), 2).float().reshape(-1, 2).unsqueeze(1).repeat(1, B * M, 1)
    gau_point = points.permute(1, 0, 2, 3).clone()
    gau_point[..., 0] *= W
    gau_point[..., 1] *= H
    gau_point = (gau_point * valid.reshape(1, B, 1, 2)).reshape(Q, B * M, 2)
    distance = (gau_point.unsqueeze(1) - (grid + 0.5).unsqueeze(0)).pow(2)
    scale = (scales.permute(1, 0, 2, 3) ** 2).reshape(Q, -1, 2).unsqueeze(1)
    official = (-(distance * scale).sum(-1).abs() / 8.0).permute(2, 0, 1)
    torch.testing.assert_close(smca_gaussian_bias(points, scales, (H, W), valid), official, rtol=0, atol=0)


# (total batch size, epochs, lr drop, GroupNorm in input_proj, SMCA, DC5, multi-scale)
CONFIG_TABLE = {
    "sam_detr_r50.py": (16, 12, 10, True, False, False, False),
    "sam_detr_r50_12ep.py": (16, 12, 10, True, False, False, False),
    "sam_detr_r50_50ep.py": (16, 50, 40, False, False, False, False),
    "sam_detr_r50_smca_12ep.py": (16, 12, 10, True, True, False, False),
    "sam_detr_r50_smca_50ep.py": (16, 50, 40, False, True, False, False),
    "sam_detr_r50_dc5_12ep.py": (8, 12, 10, True, False, True, False),
    "sam_detr_r50_dc5_50ep.py": (8, 50, 40, False, False, True, False),
    "sam_detr_r50_smca_dc5_12ep.py": (8, 12, 10, True, True, True, False),
    "sam_detr_r50_smca_dc5_50ep.py": (8, 50, 40, False, True, True, False),
    "sam_detr_r50_ms_12ep.py": (16, 12, 10, True, False, False, True),
    "sam_detr_r50_ms_50ep.py": (16, 50, 40, True, False, False, True),
    "sam_detr_r50_smca_ms_12ep.py": (16, 12, 10, True, True, False, True),
    "sam_detr_r50_smca_ms_50ep.py": (16, 50, 40, True, True, False, True),
}


def test_every_sam_detr_config_is_tested():
    assert sorted(p.name for p in CONFIGS.glob("sam_detr*.py")) == sorted(CONFIG_TABLE)


@pytest.mark.slow
@pytest.mark.skipif(not DATA_CONFIG.is_file(), reason=f"{DATA_CONFIG} (the COCO data config) is absent")
@pytest.mark.parametrize("name", sorted(CONFIG_TABLE))
def test_config_trains_and_infers(name):
    batch, epochs, drop, norm, smca, dc5, ms = CONFIG_TABLE[name]
    cfg = LazyConfig.load(str(CONFIGS / name))
    assert cfg.dataloader.train.total_batch_size == batch
    assert (cfg.train.epochs, cfg.lr_multiplier.milestones) == (epochs, [drop])
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 1e-4 and cfg.train.clip_grad.max_norm == 0.1
    assert cfg.train.init_checkpoint == "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    assert (cfg.model.input_proj_norm, cfg.model.backbone.dc5, cfg.model.num_queries) == (norm, dc5, 300)
    assert cfg.model.transformer.decoder.layer.smca == smca
    # smaller for speed: fewer queries and layers (every level still visited)
    cfg.model.num_queries = 6
    cfg.model.transformer.encoder.num_layers = 1
    cfg.model.transformer.decoder.num_layers = 3 if ms else 2
    if ms:
        assert cfg.model.transformer.decoder.layer_levels == [2, 2, 1, 1, 0, 0]
        cfg.model.transformer.decoder.layer_levels = [2, 1, 0]
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert isinstance(model.transformer, SAMDETRMultiScaleTransformer) == ms
    assert len(model.input_proj) == (3 if ms else 1) and len(model.input_proj[0]) == (2 if norm else 1)
    with EventStorage():
        losses = model(two_images())
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        out = model(two_images()[:1])
    assert isinstance(out[0]["instances"], Instances) and len(out[0]["instances"]) == 100


def test_bad_arguments_are_explained():
    base = tiny_sam_detr()
    with pytest.raises(ValueError, match="focal"):
        SAMDETR(
            backbone=base.backbone, in_features=["res5"], transformer=base.transformer, input_proj_norm=False,
            criterion=SetCriterion(3, HungarianMatcher(), {"loss_ce": 1, "loss_bbox": 1, "loss_giou": 1},
                                   class_loss_type="softmax"),
        )
    with pytest.raises(ValueError, match="level"):
        SAMDETR(backbone=build_resnet_backbone(18, out_features=["res4", "res5"]), in_features=["res4", "res5"],
                transformer=base.transformer, input_proj_norm=False, criterion=base.criterion)
    with pytest.raises(ValueError, match="layer_levels"):
        SAMDETRDecoder(SAMDETRDecoderLayer(32, 4), num_layers=2, layer_levels=[0])

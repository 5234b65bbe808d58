"""MS-DETR's novelty: the one-to-many assigner's rules on hand-made cases, the decoder layer's order and its
one-to-many features, the one-to-many predictions' heads and references, the encoder matched on anchors, and
the three published rows (train a step, infer)."""
import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from model_inputs import model_and_optimizer, train_step_and_inference, two_images  # noqa: E402

from sam_detr.modeling import OneToManyMatcher  # noqa: E402
from sam_detr.modeling.box_coder import SigmoidBoxCoder  # noqa: E402
from sam_detr.modeling.transformer import BoxRefinement, MSDETRDecoderLayer, flatten_levels  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
ROWS = ["ms_detr_r50_12ep.py", "ms_detr_pp_r50_12ep.py", "ms_detr_pp_r50_900q_12ep.py"]
LOSSES = ("loss_ce", "loss_bbox", "loss_giou")


def pairs(indices):
    return list(zip(indices[0].tolist(), indices[1].tolist()))


def test_quality_mixes_iou_and_the_target_class_score():
    matcher = OneToManyMatcher()
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.55, 0.5, 0.2, 0.2]])
    logits = torch.zeros(2, 3)
    logits[1, 2] = 2.0
    C = matcher.quality(logits, boxes, torch.tensor([2]), torch.tensor([[0.5, 0.5, 0.2, 0.2]]))
    iou = (0.15 * 0.2) / (2 * 0.04 - 0.15 * 0.2)
    expected = [0.7 + 0.3 * 0.5, 0.7 * iou + 0.3 * torch.sigmoid(torch.tensor(2.0)).item()]
    assert C.shape == (1, 2) and torch.allclose(C[0], torch.tensor(expected))


def test_threshold_is_inclusive():
    matcher = OneToManyMatcher(threshold=0.4, k=6, positive_fraction=1.0)
    C = torch.tensor([[0.50, 0.40, 0.39, 0.10]])
    # q0 and q1 reach 0.4, q2 does not: the target gets its top-2
    assert pairs(matcher.match_image(C)) == [(1, 0), (0, 0)]


def test_top_k_is_taken_among_all_queries():
    matcher = OneToManyMatcher(threshold=0.4, k=6, positive_fraction=1.0)
    #                   q0    q1    q2
    C = torch.tensor([[0.45, 0.42, 0.80],
                      [0.10, 0.05, 0.90]])
    # q0, q1 choose gt0, q2 chooses gt1; gt0's 2 queries are its best two over all queries: q2 and q0 (not q1)
    assert pairs(matcher.match_image(C)) == [(0, 0), (2, 0), (2, 1)]


def test_low_quality_match_keeps_the_querys_own_best_target():
    matcher = OneToManyMatcher(threshold=0.4, k=6, positive_fraction=1.0)
    #                   q0    q1    q2
    C = torch.tensor([[0.10, 0.30, 0.05],    # gt0: nothing passes; its best query q1 becomes positive,
                      [0.20, 0.35, 0.38]])   # but stays matched to its own best target, gt1
    # gt1's best query q2 is positive too: gt1 counts 2 and takes its top-2; gt0 gets none; q0 stays negative
    assert pairs(matcher.match_image(C)) == [(1, 1), (2, 1)]


def test_top_k_per_target_and_the_positive_fraction():
    C = torch.linspace(0.5, 0.9, 10)[None]  # one target, every query passes
    top = OneToManyMatcher(k=6, positive_fraction=1.0).match_image(C)
    assert pairs(top) == [(q, 0) for q in range(4, 10)]  # the 6 best, ascending
    # at most int(0.25 * 10) = 2 positives survive the subsampling: the target gets its top-2
    assert pairs(OneToManyMatcher(k=6, positive_fraction=0.25).match_image(C)) == [(8, 0), (9, 0)]


def test_duplicates_are_sorted_so_the_best_target_comes_last():
    matcher = OneToManyMatcher(threshold=0.4, k=2, positive_fraction=1.0)
    #                   q0    q1    q2
    C = torch.tensor([[0.90, 0.80, 0.10],
                      [0.85, 0.30, 0.60]])
    # gt0 (best of q0, q1) takes q0, q1; gt1 (best of q2, 0.6 passes) takes its top-1 among all queries: q0
    result = pairs(matcher.match_image(C))
    assert result == [(1, 0), (0, 1), (0, 0)]
    # q0 appears under both targets; the class loss's scatter keeps the last pair, gt0 (quality 0.90)
    assert [gt for q, gt in result if q == 0][-1] == 0


def test_empty_targets_and_a_non_finite_prediction():
    matcher = OneToManyMatcher()
    outputs = {"pred_logits": torch.zeros(2, 4, 3), "pred_boxes": torch.full((2, 4, 4), 0.5)}
    outputs["pred_boxes"][1, 0] = float("nan")
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])}]
    empty, one = matcher(outputs, targets)
    assert pairs(empty) == []
    assert 0 not in one[0].tolist() and set(one[1].tolist()) == {0}


def decoder_inputs(d=16, levels=2, B=2, Q=5):
    torch.manual_seed(0)
    srcs = [torch.randn(B, d, 6, 7), torch.randn(B, d, 3, 4)]
    masks = [torch.zeros(B, 6, 7, dtype=torch.bool), torch.zeros(B, 3, 4, dtype=torch.bool)]
    memory = flatten_levels(srcs, masks, [torch.zeros_like(s) for s in srcs], torch.zeros(levels, d))
    reference = BoxRefinement().start(torch.rand(B, Q, 4) * 0.5 + 0.25, SigmoidBoxCoder())
    return torch.randn(B, Q, d), torch.randn(B, Q, d), reference, memory


def test_decoder_layer_attends_to_the_image_first_and_feeds_one_to_many_features_from_there():
    tgt, pos, ref, memory = decoder_inputs()
    layer = MSDETRDecoderLayer(16, 4, 32, 0.0, n_levels=2, n_points=2, use_aux_ffn=True).train()
    o2o, o2m = layer.forward_features(tgt, pos, ref, memory, one_to_many=True)
    points = ref.in_levels(memory.valid_ratios)
    attn = layer.cross_attn(tgt + pos, points, memory.src, memory.spatial_shapes, memory.level_start_index, memory.mask)
    x = layer.norm1(tgt + attn)
    assert torch.allclose(o2m, layer.aux_ffn(x), atol=1e-6)
    q = x + pos
    assert torch.allclose(o2o, layer.ffn(layer.norm2(x + layer.self_attn(q, q, x)[0])), atol=1e-6)
    # without the auxiliary FFN the one-to-many features are the cross-attention's output
    plain = MSDETRDecoderLayer(16, 4, 32, 0.0, n_levels=2, n_points=2, use_aux_ffn=False).train()
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("aux_ffn.")})
    assert torch.allclose(plain.forward_features(tgt, pos, ref, memory, one_to_many=True)[1], x, atol=1e-6)
    # the common call computes no one-to-many features, and the same one-to-one ones
    assert torch.equal(layer(tgt, pos, ref, memory), o2o)


def tiny_ms_detr(**overrides):
    cfg = LazyConfig.load(str(CONFIGS / "quickstart" / "ms_detr.py"))
    cfg.model.update(overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model)


@pytest.mark.parametrize("look_forward_twice", [False, True])
def test_one_to_many_predictions_share_heads_and_references(look_forward_twice):
    model = tiny_ms_detr(mixed_selection=True, look_forward_twice=look_forward_twice).train()
    seen = {}
    model.transformer.decoder.register_forward_hook(lambda m, a, out: seen.update(out=out))
    model.criterion.register_forward_hook(lambda m, a, out: seen.update(outputs=a[0]))
    with EventStorage():
        model(two_images())
    out, o2m = seen["out"], seen["outputs"]["o2m_outputs"]
    layers = [*o2m["aux_outputs"], o2m]
    assert len(layers) == len(out.hs_o2m) == len(model.transformer.decoder.layers)
    for l, predictions in enumerate(layers):
        boxes = SigmoidBoxCoder().decode(out.references[l], model.bbox_embed[l](out.hs_o2m[l]))
        assert torch.equal(predictions["pred_logits"], model.class_embed[l](out.hs_o2m[l]))
        assert torch.allclose(predictions["pred_boxes"], boxes)
    # the last layer's one-to-many boxes refine layer L-2's boxes: with look-forward-twice not detached
    grad = torch.autograd.grad(o2m["pred_boxes"].sum(), model.bbox_embed[len(layers) - 2].layers[-1].bias,
                               allow_unused=True)[0]
    assert (grad is not None and grad.abs().sum() > 0) == look_forward_twice


def test_encoder_proposals_are_matched_on_their_anchors():
    criterion = tiny_ms_detr().criterion
    anchors = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.7, 0.6, 0.3, 0.2], [0.5, 0.5, 0.9, 0.9]]])
    boxes = torch.tensor([[[0.7, 0.6, 0.3, 0.2], [0.25, 0.2, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5]]])
    K = criterion.num_classes
    enc = {"pred_logits": torch.zeros(1, 3, K), "pred_boxes": boxes, "anchors": anchors}
    outputs = {"pred_logits": torch.zeros(1, 3, K), "pred_boxes": boxes.clone(), "enc_outputs": enc}
    target = torch.tensor([0.7, 0.6, 0.3, 0.2])
    losses = criterion(outputs, [{"labels": torch.tensor([1]), "boxes": target[None]}])
    # anchor 1 equals the target; matching the predicted boxes would have picked box 0 (equal to it)
    assert torch.isclose(losses["loss_bbox_enc"], 5.0 * (boxes[0, 1] - target).abs().sum())
    assert torch.isclose(losses["loss_bbox"], torch.tensor(0.0))


@pytest.mark.slow
@pytest.mark.parametrize("config", ROWS)
def test_every_row_trains_a_step_and_infers(config):
    cfg = LazyConfig.load(str(CONFIGS / config))
    assert cfg.dataloader.train.total_batch_size == 16 and cfg.train.epochs == 12
    assert cfg.lr_multiplier.milestones == [11] and cfg.train.clip_grad.max_norm == 0.1
    assert cfg.optimizer.lr == 2e-4 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.train.init_checkpoint_partial is not None
    pp, queries = "pp" in config, (900 if "900q" in config else 300)
    assert (cfg.model.num_queries, cfg.model.num_select) == (queries, 300 if queries == 900 else 100)
    assert (cfg.model.mixed_selection, cfg.model.look_forward_twice) == (pp, pp)
    assert cfg.model.transformer.decoder.layer.dropout == (0.0 if pp else 0.1)
    weights = {g.get("suffix", ""): g.get("weight_dict") or cfg.model.criterion.weight_dict
               for g in cfg.model.criterion.groups}
    assert {s: w["loss_ce"] for s, w in weights.items()} == {"": 1.0, "_o2m": 2.0, "_enc": 2.0}
    # smaller for speed: fewer queries and layers
    cfg.model.num_queries = 30
    cfg.model.transformer.encoder.num_layers = 1
    cfg.model.transformer.decoder.num_layers = 2
    model, optimizer = model_and_optimizer(cfg)
    losses, out = train_step_and_inference(model, optimizer)
    assert set(losses) == {k + s for k in LOSSES for s in ["", "_0", "_o2m", "_0_o2m", "_enc"]}
    assert model.transformer.decoder.layers[1].aux_ffn.linear1.weight.grad.abs().sum() > 0
    assert [len(o["instances"]) for o in out] == [cfg.model.num_select] * 2

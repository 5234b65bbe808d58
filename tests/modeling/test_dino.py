"""DINO: every R50 row's optimisation, the denoising queries hidden from the matching ones, the decoder's
anchor positions and look-forward-twice refinement against their direct formula, the query selection."""
import pytest
import torch

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from model_inputs import model_and_optimizer, train_step_and_inference, two_images  # noqa: E402

from sam_detr.layers import anchor_sine_embed, inverse_sigmoid  # noqa: E402
from sam_detr.modeling.box_coder import SigmoidBoxCoder  # noqa: E402
from sam_detr.modeling.transformer import (  # noqa: E402
    BoxRefinement, DeformableTransformerDecoderLayer, DINODecoder, Reference, flatten_levels,
)

CONFIGS = REPO_ROOT / "configs"
ROWS = sorted(p.name for p in CONFIGS.glob("dino_r50_*.py"))  # 4- and 5-scale at 12, 24 and 36 epochs
LOSSES = ("loss_ce", "loss_bbox", "loss_giou")
DROP_EPOCH = {12: 11, 24: 20, 36: 30}


def small(cfg):
    """Fewer queries, layers and denoising groups, for speed."""
    cfg.model.transformer.num_queries = 30
    cfg.model.transformer.encoder.num_layers = 1
    cfg.model.transformer.decoder.num_layers = 2
    cfg.model.denoising.dn_number = 2
    return cfg


@pytest.mark.parametrize("config", ROWS)
def test_every_row_trains_a_step_and_infers(config):
    cfg = LazyConfig.load(str(CONFIGS / config))
    epochs = int(config.split("_")[-1][:-5])
    assert cfg.dataloader.train.total_batch_size == 16 and cfg.train.epochs == epochs
    assert cfg.lr_multiplier.milestones == [DROP_EPOCH[epochs]] and cfg.train.clip_grad.max_norm == 0.1
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.optimizer.params.lr_factor_func.factors == {"backbone.": 0.1}
    assert cfg.train.init_checkpoint == "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    assert cfg.model.in_features[0] == ("res2" if "5scale" in config else "res3")
    model, optimizer = model_and_optimizer(small(cfg))
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([1e-5, 1e-4])
    losses, out = train_step_and_inference(model, optimizer)
    suffixes = ["", "_0", "_dn", "_dn_0", "_interm"]
    assert set(losses) == {k + s for k in LOSSES for s in suffixes}
    assert [len(o["instances"]) for o in out] == [300, 300] and out[0]["instances"].image_size == (134, 186)


def quickstart_dino():
    cfg = LazyConfig.load(str(CONFIGS / "quickstart" / "dino.py"))
    torch.manual_seed(0)
    return instantiate(cfg.model)


def test_matching_queries_do_not_see_the_denoising_ones():
    """The matching queries' predictions are the same with or without the denoising queries beside them (which
    attend to the matching ones, not the reverse), and the denoising ones are supervised apart."""
    model = quickstart_dino().train()
    seen = []
    model.criterion.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    images = two_images()
    with EventStorage():
        model(images)
        model.denoising, denoising = None, model.denoising
        model(images)
    with_dn, without = seen
    assert "dn_outputs" in with_dn and "dn_outputs" not in without
    for a, b in zip(with_dn["aux_outputs"] + [with_dn], without["aux_outputs"] + [without]):
        torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=0, atol=1e-5)
        torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], rtol=0, atol=1e-6)
    # 2 targets at most: 2 positive and 2 negative slots per group, 20 groups (dn_number 10 < 50: 2 x 10)
    assert with_dn["dn_outputs"]["pred_logits"].shape[1] == 20 * 4 == denoising.dn_number * 8
    assert with_dn["interm_outputs"]["pred_boxes"].shape == (2, model.num_queries, 4)


def test_a_batch_without_targets_gives_zero_denoising_losses_and_trains_the_label_embedding():
    model = quickstart_dino().train()
    images = two_images()
    images[0]["instances"] = images[1]["instances"]
    with EventStorage():
        losses = model(images)
    dn = {k: v for k, v in losses.items() if "_dn" in k}
    assert dn and all(v == 0 for v in dn.values())
    sum(losses.values()).backward()
    assert model.denoising.label_enc.weight.grad is not None  # in the graph: DDP needs every parameter


def direct_decoder(decoder, tgt, anchors, memory, heads):
    """The official loop written out (IDEA-Research/DINO TransformerDecoder + DINO.forward)."""
    ratios = torch.cat([memory.valid_ratios, memory.valid_ratios], -1)[:, None]
    refs, boxes, ref = [anchors], [], anchors
    for layer, head in zip(decoder.layers, heads):
        ref_in = ref[:, :, None] * ratios
        pos = decoder.ref_point_head(anchor_sine_embed(ref_in[:, :, 0], decoder.d_model // 2))
        tgt = layer(tgt, pos, Reference(ref, ref, SigmoidBoxCoder(1e-3)), memory)
        new_ref = (head(tgt) + inverse_sigmoid(ref, 1e-3)).sigmoid()
        refs.append(new_ref)
        ref = new_ref.detach()
        boxes.append((head(decoder.norm(tgt)) + inverse_sigmoid(refs[-2], 1e-3)).sigmoid())
    return torch.stack(boxes)


def test_decoder_is_the_official_loop_and_looks_forward_twice():
    torch.manual_seed(0)
    d, levels = 16, 2
    layer = DeformableTransformerDecoderLayer(d, 4, 32, 0.0, n_levels=levels, n_points=2)
    decoder = DINODecoder(layer, 3).double()
    heads = [torch.nn.Linear(d, 4).double() for _ in range(3)]
    srcs = [torch.randn(2, d, 5, 7, dtype=torch.float64), torch.randn(2, d, 3, 4, dtype=torch.float64)]
    masks = [torch.zeros(2, 5, 7, dtype=torch.bool), torch.zeros(2, 3, 4, dtype=torch.bool)]
    masks[0][1, 3:] = True  # the second image is padded
    masks[1][1, 2:] = True
    memory = flatten_levels(srcs, masks, [torch.randn_like(s) for s in srcs])
    tgt = torch.randn(2, 6, d, dtype=torch.float64)
    anchors = torch.rand(2, 6, 4, dtype=torch.float64) * 0.5 + 0.2
    refinement, coder = BoxRefinement(look_forward_twice=True), SigmoidBoxCoder(1e-3)
    out = decoder(tgt, None, refinement.start(anchors, coder), memory, heads, refinement)
    torch.testing.assert_close(out.boxes, direct_decoder(decoder, tgt, anchors, memory, heads), rtol=0, atol=1e-12)
    assert out.hs.shape == (3, 2, 6, d)
    # layer 1's boxes train layer 0's box head (look-forward-twice), through its not-detached anchors
    grads = torch.autograd.grad(out.boxes[1].sum(), [heads[0].weight, decoder.layers[0].ffn.linear1.weight])
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0


def test_selection_takes_the_best_class_and_gives_the_decoder_its_anchors():
    model = quickstart_dino().eval()
    seen = {}
    real = model.transformer.decoder.forward

    def record(tgt, query_pos, reference, *args, **kwargs):
        seen["anchors"] = reference.boxes
        return real(tgt, query_pos, reference, *args, **kwargs)

    model.transformer.decoder.forward = record
    with torch.no_grad():
        # only the last class can score: the selection must read it (logit 0 is constant)
        head = model.class_embed[-1]
        head.weight[:-1] = 0.0
        head.bias[:-1] = -100.0
        images, mask = model.preprocess_image(two_images())
        outputs = model.forward_head(*model.extract_features(images, mask))
    interm = outputs["interm_outputs"]
    scores = interm["pred_logits"].max(-1).values
    assert torch.equal(interm["pred_logits"].argmax(-1), torch.full_like(scores, 4, dtype=torch.int64))
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # in decreasing order of the best class
    torch.testing.assert_close(seen["anchors"], interm["pred_boxes"])


def test_bad_configurations_are_named():
    cfg = LazyConfig.load(str(CONFIGS / "dino_r50_4scale_12ep.py"))
    cfg.model.criterion.class_loss_type = "softmax"
    with pytest.raises(ValueError, match="needs class_loss_type='focal'"), torch.device("meta"):
        instantiate(cfg.model)
    cfg = LazyConfig.load(str(CONFIGS / "dino_r50_4scale_12ep.py"))
    cfg.model.denoising.num_classes = 91
    with pytest.raises(ValueError, match="denoising has 91 classes, the criterion 80"), torch.device("meta"):
        instantiate(cfg.model)

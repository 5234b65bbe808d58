"""What every meta-architecture promises, checked on each quickstart config (configs/quickstart/*.py, found
automatically: a method that lands with a quickstart config is covered without editing this file) and on the
published models' parameter counts.

* A training step with empty ground truth (and with a mixed batch) gives finite losses: every loss group
  of the criterion that the head returns predictions for (final layer, each earlier decoder layer, a
  two-stage encoder, ...) has every weighted loss term, and every trained parameter gets a finite gradient (none is left out of the graph,
  which DistributedDataParallel without find_unused_parameters requires).
* Inference returns at most `num_select` detections per image, inside the image at its requested size,
  with scores in [0, 1] and classes of the model.
* An image's detections do not change when a larger image joins its batch, where the model promises it
  (`batch_invariant`); the official semantics (the backbone sees the batch's padding) are marked.
* The denoising switch (`sam_detr.config.denoising.add_denoising`; DINO has it on): in training it adds the
  "dn_outputs" losses of every layer, trains the label embedding, and leaves the matching queries' predictions
  as they are without it (they never see the denoising queries); a model whose queries cannot take it
  (`CANNOT_TAKE_DENOISING`) refuses it, saying why.
* The ResNet's fast path (`build_resnet_backbone(fast=True)`, the default: frozen BN folded into the
  convolutions, channels-last) gives the plain path's predictions, up to rounding.

`MARKS` holds per config and per check the marks of official-semantics cases, with their reasons.
"""
import inspect
from pathlib import Path

import pytest

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from model_inputs import two_images  # noqa: E402

from sam_detr.config.denoising import add_denoising  # noqa: E402

QUICKSTART_CONFIGS = sorted(p.name for p in (REPO_ROOT / "configs" / "quickstart").glob("*.py"))

# config name -> check name -> marks
MARKS = {}

NO_BATCH_INVARIANT_OPTION = (
    "the model has no batch_invariant option: the backbone sees the batch's zero padding, so an image's "
    "detections change with the batch it is in (the official semantics, detr#191)"
)

# published models, trainable and all parameters with the official 91 classes, as the official repositories
# build them (DETR: facebookresearch/detr; SAM-DETR: tests/checkpoint/listings/sd_sam_*.txt;
# Conditional DETR: sd_cond*.txt). R101 adds 17 bottlenecks to res4, 1,114,112 convolution weights each
# (the frozen BatchNorms are buffers): 18,939,904 parameters over R50, as the official models built with
# `--backbone resnet101` count. MS-DETR: sd_msdetr.txt, sd_msdetr_pp.txt, and Atten4Vis/MS-DETR built with
# the 900-query script's arguments.
PARAMETER_COUNTS = {
    "detr_r50_500ep.py": (41_302_368, 41_524_768),
    "detr_r50_50ep.py": (41_302_368, 41_524_768),
    "detr_r50_dc5_500ep.py": (41_302_368, 41_524_768),
    "detr_r101_500ep.py": (60_242_272, 60_464_672),
    "detr_r101_50ep.py": (60_242_272, 60_464_672),
    "detr_r101_dc5_500ep.py": (60_242_272, 60_464_672),
    "conditional_detr_r50_50ep.py": (43_196_001, 43_418_401),
    "conditional_detr_r50_dc5_50ep.py": (43_196_001, 43_418_401),
    "conditional_detr_r101_50ep.py": (62_135_905, 62_358_305),
    "conditional_detr_r101_dc5_50ep.py": (62_135_905, 62_358_305),
    "sam_detr_r50_12ep.py": (58_074_058, 58_296_458),
    "sam_detr_r50_50ep.py": (58_073_546, 58_295_946),
    "sam_detr_r50_smca_12ep.py": (58_123_306, 58_345_706),
    "sam_detr_r50_ms_12ep.py": (54_972_298, 55_194_698),
    "sam_detr_r50_smca_ms_12ep.py": (55_021_546, 55_243_946),
    # fundamentalvision/Deformable-DETR (tests/checkpoint/listings/sd_ddetr*.txt)
    "deformable_detr_r50_single_scale_50ep.py": (33_844_193, 34_066_593),
    "deformable_detr_r50_single_scale_dc5_50ep.py": (33_844_193, 34_066_593),
    "deformable_detr_r50_50ep.py": (39_847_265, 40_069_665),
    "deformable_detr_r50_refine_50ep.py": (40_627_260, 40_849_660),
    "deformable_detr_r50_two_stage_50ep.py": (40_959_129, 41_181_529),
    "ms_detr_r50_12ep.py": (53_571_225, 53_793_625),
    "ms_detr_pp_r50_12ep.py": (53_648_025, 53_870_425),
    "ms_detr_pp_r50_900q_12ep.py": (53_801_625, 54_024_025),
    # impiga/Plain-DETR (tests/checkpoint/listings/sd_plain_{ape,boxrpe,reparam}.txt; the SimMIM rows
    # differ from the supervised one only in the pretrained window sizes, which hold no parameters)
    "plain_detr_swinv2_small_sup_pt_ape.py": (62_644_691, 62_644_691),
    "plain_detr_swinv2_small_sup_pt_boxrpe.py": (62_712_275, 62_712_275),
    "plain_detr_swinv2_small_mim_pt_boxrpe.py": (62_712_275, 62_712_275),
    "plain_detr_swinv2_small_mim_pt_boxrpe_reparam.py": (62_712_275, 62_712_275),
    # IDEA-Research/DINO (tests/checkpoint/listings/sd_dino_{4,5}scale.txt): stem and res2 frozen in both
    "dino_r50_4scale_12ep.py": (46_670_782, 46_893_182),
    "dino_r50_4scale_24ep.py": (46_670_782, 46_893_182),
    "dino_r50_4scale_36ep.py": (46_670_782, 46_893_182),
    "dino_r50_5scale_12ep.py": (47_033_406, 47_255_806),
    "dino_r50_5scale_24ep.py": (47_033_406, 47_255_806),
    "dino_r50_5scale_36ep.py": (47_033_406, 47_255_806),
}


def test_quickstart_configs_are_found():
    assert {"detr.py", "sam_detr.py"} <= set(QUICKSTART_CONFIGS)


def marked(check: str):
    return [pytest.param(name, marks=MARKS.get(name, {}).get(check, ()), id=Path(name).stem)
            for name in QUICKSTART_CONFIGS]


def load(name: str):
    return LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / name))


def build(cfg, **overrides):
    cfg.model.update(overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model)


def empty_ground_truth(inputs):
    for x in inputs:
        x["instances"] = Instances(x["image"].shape[1:], gt_boxes=Boxes(torch.zeros(0, 4)),
                                   gt_classes=torch.zeros(0, dtype=torch.int64))
    return inputs


@pytest.mark.parametrize("name", marked("training"))
@pytest.mark.parametrize("batch", ["empty", "mixed"])
def test_training_step(name, batch):
    model = build(load(name)).train()
    seen = {}
    model.criterion.register_forward_hook(lambda module, args, out: seen.update(outputs=args[0]))
    inputs = empty_ground_truth(two_images()) if batch == "empty" else two_images()
    with EventStorage():
        losses = model(inputs)
    criterion = model.criterion
    expected = set()
    for group in criterion.groups:  # each group of predictions the head returned: every term, every layer
        outputs = seen["outputs"] if group.key is None else seen["outputs"].get(group.key)
        if outputs is None:
            if not group.zeros_when_absent:
                continue
            outputs = seen["outputs"]  # zeros for every layer of the top-level outputs
        weights = criterion.weight_dict if group.weight_dict is None else group.weight_dict
        suffixes = group.layer_suffixes(len(outputs.get("aux_outputs", [])))
        expected |= {term + suffix for term in weights for suffix in suffixes}
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in trained if p.grad is None] == []
    assert [n for n, p in trained if not torch.isfinite(p.grad).all()] == []


@pytest.mark.parametrize("name", marked("inference"))
@pytest.mark.parametrize("num_select", [None, 3])
def test_inference(name, num_select):
    cfg = load(name)
    model = build(cfg, **({} if num_select is None else {"num_select": num_select})).eval()
    inputs = two_images()
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == len(inputs)
    for x, out in zip(inputs, outputs):
        instances = out["instances"]
        height, width = x.get("height", x["image"].shape[1]), x.get("width", x["image"].shape[2])
        assert instances.image_size == (height, width)
        assert 0 < len(instances) <= model.num_select
        boxes = instances.pred_boxes.tensor
        assert torch.isfinite(boxes).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert ((instances.scores >= 0) & (instances.scores <= 1)).all()
        assert ((instances.pred_classes >= 0) & (instances.pred_classes < model.num_classes)).all()


# quickstart configs whose queries cannot take denoising queries (the reasons: their models' errors)
CANNOT_TAKE_DENOISING = {"detr.py", "conditional_detr.py"}


def with_denoising(name: str):
    cfg = load(name)
    if "denoising" not in cfg.model:
        add_denoising(cfg.model, d_model=load("detr.py").model.transformer.d_model, dn_number=3)
    return cfg


@pytest.mark.parametrize("name", QUICKSTART_CONFIGS)
def test_denoising_switch(name):
    if name in CANNOT_TAKE_DENOISING:
        with pytest.raises(ValueError, match="queries cannot take denoising queries"):
            build(with_denoising(name))
        return
    model = build(with_denoising(name)).train()  # the quickstart models have no dropout
    seen, inputs = [], two_images()
    model.criterion.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with EventStorage():
        losses = model(inputs)
        sum(losses.values()).backward()
        model.denoising, denoising = None, model.denoising
        with torch.no_grad():
            model(inputs)
    with_dn, without = seen
    layers = len(with_dn["aux_outputs"]) + 1
    expected = {f"loss_ce_dn_{i}" for i in range(layers - 1)} | {"loss_ce_dn", "loss_bbox_dn", "loss_giou_dn"}
    assert expected <= set(losses)
    assert all(losses[k] > 0 for k in losses if "_dn" in k)
    assert with_dn["dn_outputs"]["pred_logits"].shape[1] > 0
    assert denoising.label_enc.weight.grad.abs().sum() > 0
    for a, b in zip([with_dn] + with_dn["aux_outputs"], [without] + without["aux_outputs"]):
        torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], rtol=1e-4, atol=1e-5)


def promises_batch_invariance(cls) -> bool:
    """Whether the class, or a base that it passes its keyword arguments to, takes `batch_invariant`."""
    return any("batch_invariant" in inspect.signature(c.__init__).parameters
               for c in cls.__mro__ if "__init__" in vars(c))


@pytest.mark.parametrize("name", marked("batch_invariance"))
def test_detections_do_not_depend_on_the_batch(name, request):
    cfg = load(name)
    if promises_batch_invariance(cfg.model._target_):
        model = build(cfg, batch_invariant=True)
    else:
        request.applymarker(pytest.mark.xfail(reason=NO_BATCH_INVARIANT_OPTION, strict=False))
        model = build(cfg)
    model.eval()
    small, large = two_images()[1], two_images()[0]  # 45x101, and 67x93: the batch pads the first to 67x101
    with torch.no_grad():
        alone = model([small])[0]["instances"]
        batched = model([small, large])[0]["instances"]
    assert_same_detections(batched, alone)


def assert_same_detections(a: Instances, b: Instances, tol: float = 1e-4) -> None:
    """The same detections, to `tol`, in any order (an untrained model gives many equal scores, which top-k
    may order differently)."""
    assert len(a) == len(b)
    left = list(range(len(b)))
    for i in range(len(a)):
        same = [j for j in left if a.pred_classes[i] == b.pred_classes[j]
                and abs(a.scores[i] - b.scores[j]) <= tol
                and (a.pred_boxes.tensor[i] - b.pred_boxes.tensor[j]).abs().max() <= tol]
        assert same, f"detection {i} (class {int(a.pred_classes[i])}, score {float(a.scores[i]):.6f}, box " \
                     f"{a.pred_boxes.tensor[i].tolist()}) has no counterpart"
        left.remove(same[0])


@pytest.mark.parametrize("name", marked("fast_backbone"))
def test_fast_backbone_gives_the_plain_outputs(name):
    predictions = []
    for fast in (False, True):
        cfg = load(name)
        assert "fast" in inspect.signature(cfg.model.backbone._target_).parameters, "not build_resnet_backbone"
        cfg.model.backbone.update(norm="FrozenBN", freeze_at=2, fast=fast)  # frozen BN: folded when fast
        model = build(cfg).eval()
        with torch.no_grad():
            images, mask = model.preprocess_image(two_images())
            outputs = model.forward_head(*model.extract_features(images, mask))
        predictions.append((outputs["pred_logits"], outputs["pred_boxes"]))
    (plain_logits, plain_boxes), (fast_logits, fast_boxes) = predictions
    torch.testing.assert_close(fast_logits, plain_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_boxes, plain_boxes, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_published_parameter_counts(name):
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / name))
    cfg.model.criterion.num_classes = 91
    with torch.device("meta"):
        model = instantiate(cfg.model)
    counts = (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))
    assert counts == PARAMETER_COUNTS[name]

"""What every meta-architecture promises, checked on every model the configs define, all found automatically
(a method or a published row that lands with its config is covered without editing this file):

* each quickstart config (configs/quickstart/*.py), as it is;
* the tiny twin of each published config (configs/*.py): the config's own graph, every module and option of
  the row (SMCA, multi-scale, DC5, refinement, two-stage, one-to-many queries and auxiliary FFN, mixed
  selection, look-forward-twice, APE, BoxRPB, reparameterisation, the softmax head, ...), shrunk to test size
  by `sam_detr.config.tiny_twin`. Rows whose twins are equal (the R50 and R101 rows, or the 12- and
  50-epoch rows of one model) run once, under one id naming them all;

and on the published models' parameter counts.

* A training step with empty ground truth (and with a mixed batch) gives finite losses: every loss group
  of the criterion that the head returns predictions for (final layer, each earlier decoder layer, a
  two-stage encoder, ...) has every weighted loss term, and every trained parameter gets a finite gradient (none is left out of the graph,
  which DistributedDataParallel without find_unused_parameters requires); the config's optimizer (its
  parameter groups) steps them to finite values.
* Inference returns at most `num_select` detections per image, inside the image at its requested size,
  with scores in [0, 1] and classes of the model.
* An image's detections do not change when a larger image joins its batch, where the model promises it
  (`batch_invariant`): each of its detections (every query and class: no top-k cut for near-equal scores to
  cross) has a partner of the same class, score within `SCORE_TOLERANCE` and box within `BOX_TOLERANCE`
  pixels; the official semantics (the backbone sees the batch's padding) are marked.
* The denoising switch (`sam_detr.config.denoising.add_denoising`; DINO has it on): in training it adds the
  "dn_outputs" losses of every layer, trains the label embedding, and leaves the matching queries' predictions
  as they are without it (they never see the denoising queries); a model whose queries cannot take it
  (`CANNOT_TAKE_DENOISING`) refuses it, saying why.
* The ResNet's fast path (`build_resnet_backbone(fast=True)`, the default: frozen BN folded into the
  convolutions, channels-last) gives the plain path's predictions, up to rounding (quickstart configs; the
  twins of the ResNet rows run the fast path throughout).

`MARKS` holds per model id and per check the marks of official-semantics cases, with their reasons.
"""
import inspect
import re
from pathlib import Path
from typing import List, NamedTuple

import pytest

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from model_inputs import model_and_optimizer, two_images  # noqa: E402

from sam_detr.config.denoising import add_denoising  # noqa: E402
from sam_detr.config.tiny_twin import tiny_twin  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
# 53 rows: Plain-DETR's stride-64 proposal map is made from its stride-16 map by two stride-2 convolutions,
# which need 4 rows (49 image rows or more)
SECOND_IMAGE = (53, 101)
# Float32 rounding of the different reduction lengths of a padded batch moves every model's scores by at most
# 4.1e-8 under `batch_invariant` (and boxes by 7.6e-6 pixels); 1e-6 leaves 25 times that, and is 100 to 1000
# times below the padding-dependent scores that issue 26 found in SAM-DETR's rows (1e-4 to 1e-3; up to 1e-5
# in its DC5 rows): a test at the earlier 1e-4 missed them.
SCORE_TOLERANCE = 1e-6
BOX_TOLERANCE = 1e-4


class Subject(NamedTuple):
    """A model to check: a quickstart config, or the tiny twin of one or more published configs."""

    id: str
    configs: List[Path]
    twin: bool

    def load(self):
        """The config, its model made a tiny twin where the subject is one."""
        cfg = LazyConfig.load(str(self.configs[0]))
        if self.twin:
            tiny_twin(cfg.model)
        return cfg

    def config(self):
        """The LazyConfig node of the model (cfg.model)."""
        return self.load().model


def find_subjects() -> List[Subject]:
    quickstarts = [Subject(p.stem, [p], False) for p in sorted((CONFIGS / "quickstart").glob("*.py"))]
    twins = {}
    for path in sorted(CONFIGS.glob("*.py")):
        twins.setdefault(repr(tiny_twin(LazyConfig.load(str(path)).model)), []).append(path)
    return quickstarts + [Subject("+".join(p.stem for p in paths), paths, True) for paths in twins.values()]


SUBJECTS = find_subjects()

# model id -> check name -> marks
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


def test_every_config_is_checked():
    assert {"detr", "sam_detr"} <= {m.id for m in SUBJECTS if not m.twin}
    assert sorted(p for m in SUBJECTS if m.twin for p in m.configs) == sorted(CONFIGS.glob("*.py"))


def marked(check: str, *values, quickstarts_only: bool = False):
    """The subjects (with `values`, further arguments) as parameters, with their marks for `check`."""
    return [pytest.param(m, *values, marks=MARKS.get(m.id, {}).get(check, ()), id="-".join([m.id, *map(str, values)]))
            for m in SUBJECTS if not (quickstarts_only and m.twin)]


def build(subject: Subject, **overrides):
    cfg = subject.config()
    cfg.update(overrides)
    torch.manual_seed(0)
    return instantiate(cfg)


def batch_of_two():
    return two_images(SECOND_IMAGE)


def empty_ground_truth(inputs):
    for x in inputs:
        x["instances"] = Instances(x["image"].shape[1:], gt_boxes=Boxes(torch.zeros(0, 4)),
                                   gt_classes=torch.zeros(0, dtype=torch.int64))
    return inputs


@pytest.mark.parametrize("subject", marked("training"))
@pytest.mark.parametrize("batch", ["empty", "mixed"])
def test_training_step(subject, batch):
    model, optimizer = model_and_optimizer(subject.load())  # the config's optimizer and parameter groups
    model.train()
    seen = {}
    model.criterion.register_forward_hook(lambda module, args, out: seen.update(outputs=args[0]))
    inputs = empty_ground_truth(batch_of_two()) if batch == "empty" else batch_of_two()
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
    optimizer.step()
    assert [n for n, p in trained if not torch.isfinite(p).all()] == []


# a smaller num_select (the base's post-processing) on the quickstart configs
@pytest.mark.parametrize("subject, num_select", marked("inference", None) + marked("inference", 3, quickstarts_only=True))
def test_inference(subject, num_select):
    model = build(subject, **({} if num_select is None else {"num_select": num_select})).eval()
    inputs = batch_of_two()
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


# quickstart models whose queries cannot take denoising queries (the reasons: their models' errors)
CANNOT_TAKE_DENOISING = {"detr", "conditional_detr"}
QUICKSTARTS = [m for m in SUBJECTS if not m.twin]


def with_denoising(subject: Subject):
    """The subject's model config with the denoising switch on (DINO has it already)."""
    cfg = subject.config()
    if "denoising" not in cfg:
        d_model = LazyConfig.load(str(CONFIGS / "quickstart" / "detr.py")).model.transformer.d_model
        add_denoising(cfg, d_model=d_model, dn_number=3)
    return cfg


def build_config(cfg):
    torch.manual_seed(0)
    return instantiate(cfg)


@pytest.mark.parametrize("subject", QUICKSTARTS, ids=[m.id for m in QUICKSTARTS])
def test_denoising_switch(subject):
    if subject.id in CANNOT_TAKE_DENOISING:
        with pytest.raises(ValueError, match="queries cannot take denoising queries"):
            build_config(with_denoising(subject))
        return
    model = build_config(with_denoising(subject)).train()  # the quickstart models have no dropout
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


@pytest.mark.parametrize("subject", marked("batch_invariance"))
def test_detections_do_not_depend_on_the_batch(subject, request):
    # every (query, class) pair of the focal models, every query of the softmax ones: no top-k boundary
    every_detection = 10**6
    if promises_batch_invariance(subject.config()._target_):
        model = build(subject, batch_invariant=True, num_select=every_detection)
    else:
        request.applymarker(pytest.mark.xfail(reason=NO_BATCH_INVARIANT_OPTION, strict=False))
        model = build(subject, num_select=every_detection)
    model.eval()
    # 53x101 and 67x93: the batch pads the first to 67x101, the second to 67x101
    small, large = batch_of_two()[1], batch_of_two()[0]
    with torch.no_grad():
        alone = model([small])[0]["instances"]
        batched = model([small, large])[0]["instances"]
    assert_same_detections(batched, alone)


def assert_same_detections(
    a: Instances, b: Instances, score_tol: float = SCORE_TOLERANCE, box_tol: float = BOX_TOLERANCE
) -> None:
    """The same detections, scores to `score_tol` and boxes to `box_tol`, in any order (an untrained model
    gives many near-equal scores, which top-k may order differently)."""
    assert len(a) == len(b)
    # (len(a), len(b)): which detections of b may be the partner of each detection of a
    close = ((a.pred_classes[:, None] == b.pred_classes[None])
             & ((a.scores[:, None] - b.scores[None]).abs() <= score_tol)
             & ((a.pred_boxes.tensor[:, None] - b.pred_boxes.tensor[None]).abs().amax(-1) <= box_tol))
    taken = torch.zeros(len(b), dtype=torch.bool)
    for i, row in enumerate(close):
        free = (row & ~taken).nonzero()
        if len(free) == 0:
            nearest = (a.scores[i] - b.scores).abs().masked_fill(a.pred_classes[i] != b.pred_classes, float("inf"))
            raise AssertionError(
                f"detection {i} (class {int(a.pred_classes[i])}, score {float(a.scores[i]):.8f}, box "
                f"{a.pred_boxes.tensor[i].tolist()}) has no counterpart; the nearest score of its class differs "
                f"by {float(nearest.min()):.2e}"
            )
        taken[free[0, 0]] = True


@pytest.mark.parametrize("subject", marked("fast_backbone", quickstarts_only=True))
def test_fast_backbone_gives_the_plain_outputs(subject):
    predictions = []
    for fast in (False, True):
        cfg = subject.config()
        assert "fast" in inspect.signature(cfg.backbone._target_).parameters, "not build_resnet_backbone"
        cfg.backbone.update(norm="FrozenBN", freeze_at=2, fast=fast)  # frozen BN: folded when fast
        torch.manual_seed(0)
        model = instantiate(cfg).eval()
        with torch.no_grad():
            images, mask = model.preprocess_image(batch_of_two())
            outputs = model.forward_head(*model.extract_features(images, mask))
        predictions.append((outputs["pred_logits"], outputs["pred_boxes"]))
    (plain_logits, plain_boxes), (fast_logits, fast_boxes) = predictions
    torch.testing.assert_close(fast_logits, plain_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_boxes, plain_boxes, rtol=1e-4, atol=1e-5)


def module_names(model: torch.nn.Module) -> set:
    """The model's state-dict keys outside the backbone, layer indices dropped."""
    return {re.sub(r"\.\d+(?=\.|$)", ".N", k) for k in model.state_dict() if not k.startswith("backbone.")}


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_published_models(name):
    """The parameter counts of the official models, and a tiny twin with every module of the published one."""
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / name))
    cfg.model.criterion.num_classes = 91
    with torch.device("meta"):
        model = instantiate(cfg.model)
        twin = instantiate(tiny_twin(cfg.model))
    counts = (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))
    assert counts == PARAMETER_COUNTS[name]
    assert module_names(twin) == module_names(model)
    assert type(twin.backbone) is type(model.backbone)

"""Mixed precision (train.amp): a bfloat16 step of every quickstart method against float32 on the CPU (the same
Hungarian assignment, losses within a stated tolerance), AMPTrainer on the CPU and on CUDA (float16 with gradient
scaling, bfloat16 without), and the float32 regions: the criterion's costs and losses, the deformable sampling.

Tolerance: every loss term of the one-to-one predictions (the final and auxiliary decoder layers) within 10% of
its float32 value (relative to |value| + 0.05), at a model fitted to the batch first (in float32, until its loss
is a fifth of the first step's): a model at its random initialisation predicts near-equal boxes for every query,
among which bfloat16 rounding picks another match. Terms of other groups (two-stage proposals, one-to-many) need
only be finite: MS-DETR's one-to-many assigner thresholds an IoU at 0.4, which bfloat16's rounding of the boxes
moves boxes across."""
import itertools
import math
import re

import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from sam_detr.engine.train_net import build_trainer  # noqa: E402
from sam_detr.layers import MSDeformAttn  # noqa: E402
from sam_detr.modeling import HungarianMatcher, SetCriterion  # noqa: E402

QUICKSTARTS = sorted(p.stem for p in (REPO_ROOT / "configs" / "quickstart").glob("*.py"))
TOLERANCE = 0.10
FIT_STEPS, FIT_FACTOR = 200, 0.2


def one_image(device="cpu"):
    """A 64x96 image with three objects of three classes, each a flat patch on noise."""
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[8.0, 8, 40, 32], [50, 36, 90, 60], [60, 4, 90, 24]])
    for (x1, y1, x2, y2), value in zip(boxes.int().tolist(), (250, 20, 128)):
        image[:, y1:y2, x1:x2] = value
    instances = Instances((64, 96), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 2, 4]))
    return [{"image": image.to(device), "instances": instances.to(device)}]


def fitted(name: str, device="cpu", dtype=None):
    """The quickstart model fitted to `one_image` in float32, and its config. With `dtype`, a step under
    autocast to it first, at the initialisation: finite losses."""
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / f"{name}.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train()
    if dtype is not None:
        losses, _ = step(model, dtype, device)
        assert all(math.isfinite(v) for v in losses.values()), losses
    cfg.optimizer.params.model = model
    cfg.optimizer.lr = 1e-3
    optimizer = instantiate(cfg.optimizer)
    inputs, first = one_image(device), None
    with EventStorage():
        for _ in range(FIT_STEPS):
            loss = sum(model(inputs).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            first = first or loss.item()
            if loss.item() < FIT_FACTOR * first:
                break
    return model, cfg


def step(model, dtype=None, device="cpu"):
    """The losses of one forward of `model` on `one_image` (autocast to `dtype` if given) and the Hungarian
    assignments of its one-to-one predictions, layer by layer."""
    matched, seen = [], {}
    original = HungarianMatcher.forward

    def recording(self, outputs, targets):
        indices = original(self, outputs, targets)
        matched.append([(q.tolist(), t.tolist()) for q, t in indices])
        return indices

    hook = model.criterion.register_forward_hook(lambda module, args, out: seen.update(outputs=args[0]))
    HungarianMatcher.forward = recording
    try:
        with EventStorage(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            losses = model(one_image(device))
    finally:
        HungarianMatcher.forward = original
        hook.remove()
    layers = 1 + len(seen["outputs"].get("aux_outputs", []))  # the first group: matched first, layer by layer
    return {k: v.item() for k, v in losses.items()}, matched[:layers]


def one_to_one_terms(model, losses):
    suffix = model.criterion.groups[0].suffix
    others = {g.suffix for g in model.criterion.groups[1:]}
    # a group's terms end with its suffix, or with its suffix and a layer index (DINO's "loss_ce_dn_1")
    def of(key, s):
        return re.search(re.escape(s) + r"(_\d+)?$", key) is not None

    return [k for k in losses if of(k, suffix) and not any(s and of(k, s) for s in others)]


def assert_close_to_float32(model, low, full):
    assert all(math.isfinite(v) for v in low.values()), low
    for key in one_to_one_terms(model, full):
        assert abs(low[key] - full[key]) <= TOLERANCE * (abs(full[key]) + 0.05), (key, low[key], full[key])


@pytest.mark.parametrize("name", QUICKSTARTS)
def test_bfloat16_step_on_cpu_matches_float32(name):
    model, _ = fitted(name, dtype=torch.bfloat16)
    full, full_matches = step(model)
    low, low_matches = step(model, torch.bfloat16)
    assert low_matches == full_matches
    assert_close_to_float32(model, low, full)


def run_trainer(cfg, model, precision: str, iterations=4):
    """`iterations` steps of the trainer of cfg.train with AMP in `precision` (float16's GradScaler skips the
    first steps, whose scaled gradients overflow, halving its scale)."""
    cfg.train.amp.enabled = True
    cfg.train.amp.precision = precision
    cfg.optimizer.params.model = model
    trainer = build_trainer(cfg, model, itertools.repeat(one_image(model.device)), instantiate(cfg.optimizer))
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train(0, iterations)
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return trainer, changed


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_amp_trainer_on_cpu(precision):
    """train.amp.enabled=True on the CPU: autocast there, gradients scaled in float16 only, clipping after
    unscaling; the weights step."""
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / "deformable_detr.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    trainer, changed = run_trainer(cfg, model, precision)
    assert trainer.grad_scaler.is_enabled() == (precision == "float16")
    assert changed > 0
    assert math.isfinite(trainer.storage.history("total_loss").latest())
    assert math.isfinite(trainer.storage.history("grad_norm").latest())


def focal_criterion():
    return SetCriterion(5, HungarianMatcher(2.0, 5.0, 2.0), {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0})


def test_huge_half_precision_logits_give_finite_float32_losses():
    """Logits at float16's largest: the focal loss summed over every query and class overflows float16 (inf),
    not in the criterion, which computes it in float32 and gives float32's value."""
    torch.manual_seed(0)
    logits = torch.full((2, 300, 5), 6e4)
    boxes = torch.rand(2, 300, 4) * 0.5 + 0.25
    targets = [{"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.3]])},
               {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    criterion = focal_criterion()
    full = criterion({"pred_logits": logits, "pred_boxes": boxes}, targets)
    half = criterion({"pred_logits": logits.half(), "pred_boxes": boxes.half()}, targets)
    assert torch.isinf((logits.half() * 0.75).sum())  # what a float16 sum of the terms would give
    for key, value in half.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), key
        torch.testing.assert_close(value, full[key], rtol=1e-3, atol=1e-3)


def test_half_precision_costs_keep_the_assignment():
    """Confident logits in float16: the focal cost's `log(p + 1e-8)` needs the 1e-8, which float16 rounds to 0
    (log 0 = -inf: the pair would be matched last). The criterion matches in float32: float32's assignment."""
    logits = torch.full((1, 4, 5), -30.0)
    logits[0, 2, 1] = 30.0  # query 2 is sure of class 1, the others of nothing
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05], [0.5, 0.5, 0.2, 0.2]]])
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    matcher = HungarianMatcher(2.0, 5.0, 2.0)
    outputs = {"pred_logits": logits.half(), "pred_boxes": boxes.half()}
    with torch.no_grad():
        naive = matcher.class_cost(logits[0].half(), targets[0]["labels"])
    assert not torch.isfinite(naive).all()  # float16 alone loses query 2's cost
    seen = []
    original = matcher.forward
    matcher.forward = lambda outputs, targets: seen.append(original(outputs, targets)) or seen[-1]
    criterion = SetCriterion(5, matcher, {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0})
    criterion(outputs, targets)
    expected = HungarianMatcher(2.0, 5.0, 2.0)({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert seen[0][0][0].tolist() == expected[0][0].tolist() == [2]


def test_deformable_sampling_in_float32_under_cpu_autocast():
    """The sampling locations and weights reach the op in float32 under bfloat16 autocast, and the output is
    bfloat16's rounding of float32's."""
    torch.manual_seed(0)
    attention = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2)
    shapes = torch.tensor([[12, 16], [6, 8]])
    start = torch.tensor([0, 12 * 16])
    memory = torch.randn(2, 12 * 16 + 6 * 8, 32)
    query = torch.randn(2, 7, 32)
    reference = torch.rand(2, 7, 2, 2)
    seen = []

    def record(op, args, output):
        seen.append((args[3].dtype, args[4].dtype))  # the sampling locations and weights

    attention.op.register_forward_hook(record)
    full = attention(query, reference, memory, shapes, start)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attention(query, reference.bfloat16(), memory, shapes, start)
    assert seen[1] == (torch.float32, torch.float32)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), full, rtol=0.05, atol=0.05)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", QUICKSTARTS)
def test_amp_on_cuda(name, precision):
    """On the first GPU: a fitted quickstart's step under autocast has float32's one-to-one assignment and losses
    within the tolerance; AMPTrainer steps (float16 with a GradScaler, bfloat16 without)."""
    dtype = getattr(torch, precision)
    model, cfg = fitted(name, "cuda", dtype)
    full, full_matches = step(model, device="cuda")
    low, low_matches = step(model, dtype, device="cuda")
    assert low_matches == full_matches
    assert_close_to_float32(model, low, full)
    trainer, changed = run_trainer(cfg, model, precision)
    assert trainer.grad_scaler.is_enabled() == (precision == "float16")
    assert changed > 0
    assert math.isfinite(trainer.storage.history("total_loss").latest())


def test_bfloat16_inference_on_cpu():
    """model.inference_dtype="bfloat16": the backbone's convolutions (the fast ResNet's oneDNN path included) and
    the head run in bfloat16, the detections come back in float32, near float32's."""
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "deformable_detr_r50_50ep.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    inputs = [{"image": one_image()[0]["image"], "height": 64, "width": 96}]
    seen = []
    model.backbone.register_forward_hook(lambda module, args, out: seen.append(out["res5"].dtype))
    with torch.no_grad():
        full = model(inputs)[0]["instances"]
        model.inference_dtype = "bfloat16"
        low = model(inputs)[0]["instances"]
    assert seen == [torch.float32, torch.bfloat16]
    assert low.scores.dtype == low.pred_boxes.tensor.dtype == torch.float32
    # the best detection: the same class, its score and box near float32's (boxes in pixels of a 64x96 image)
    assert low.pred_classes[0] == full.pred_classes[0]
    torch.testing.assert_close(low.scores[0], full.scores[0], atol=0.02, rtol=0.05)
    torch.testing.assert_close(low.pred_boxes.tensor[0], full.pred_boxes.tensor[0], atol=1.5, rtol=0.02)
    with pytest.raises(ValueError, match="dtype must be one of"):
        model.inference_dtype = "half"
        model(inputs)

"""Initialising a model for other classes from a checkpoint (train.reinit_classes): which weights depend on the
classes (found from the config, for every quickstart method), what they start from, and the refusals: a checkpoint
of another class count without re-initialisation, a checkpoint of another method."""
import logging

import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402

from sam_detr.engine import CheckpointError, StrictCheckpointer  # noqa: E402
from sam_detr.engine.checkpointer import checkpoint_metadata  # noqa: E402
from sam_detr.engine.class_init import ClassInit, class_dimensions  # noqa: E402
from sam_detr.modeling.meta_arch.detr_base import DETRBase  # noqa: E402

QUICKSTARTS = sorted(p.stem for p in (REPO_ROOT / "configs" / "quickstart").glob("*.py"))
COCO_FIRST = ["person", "bicycle", "car", "motorcycle", "airplane", "bus"]


def model_cfg(name: str, num_classes=None):
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / "quickstart" / f"{name}.py")).model
    if num_classes is not None:
        cfg.criterion.num_classes = num_classes
    return cfg


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return instantiate(cfg)


@pytest.mark.parametrize("name", QUICKSTARTS)
def test_class_dependent_weights_are_found_from_the_config(name):
    """Every weight whose shape follows the class count, and only those, along the axis of the classes."""
    cfg = model_cfg(name, num_classes=7)
    with torch.device("meta"):
        model = instantiate(cfg)
    dims = class_dimensions(cfg, model)
    assert dims
    # the rows that are no class's (a two-stage proposal head's object score) are among them
    assert set(model.class_agnostic_rows()) <= set(dims)
    with torch.device("meta"):
        other = instantiate(model_cfg(name, num_classes=3)).state_dict()
    for key, value in model.state_dict().items():
        if key in dims:
            extra = value.shape[dims[key]] - 7  # DETR's no-object row
            assert extra in (0, 1) and other[key].shape[dims[key]] == 3 + extra, key
        else:
            assert other[key].shape == value.shape, key
    # the final classifier is among them: its output is the class logits
    assert any(value.shape[dims[k]] in (7, 8) for k, value in model.state_dict().items() if k in dims)


def checkpoint_of(model, directory, classes, config="detr.py"):
    """`model` saved as the training and the converter save it: with its metadata and class names."""
    checkpointer = StrictCheckpointer(model, str(directory), metadata=checkpoint_metadata(model, config, classes))
    checkpointer.save("source")
    return str(directory / "source.pth")


@pytest.mark.parametrize("name", ["detr", "deformable_detr"])
def test_reinit_keeps_the_rows_of_classes_found_by_name(name, tmp_path, package_log):
    """Every other weight loads as it is (the frozen BatchNorm statistics of the published models' ResNet too); the
    two-stage proposal head's "object" row (Deformable DETR's quickstart is two-stage) is kept by position."""
    source_cfg = model_cfg(name, num_classes=len(COCO_FIRST))
    source_cfg.backbone.norm = "FrozenBN"
    source = build(source_cfg, seed=1)
    path = checkpoint_of(source, tmp_path, COCO_FIRST, f"{name}.py")
    classes = ["Car", "widget", "person"]
    cfg = model_cfg(name, num_classes=len(classes))
    cfg.backbone.norm = "FrozenBN"
    model = build(cfg, seed=2)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    dims = class_dimensions(cfg, model)
    agnostic = model.class_agnostic_rows()
    assert bool(agnostic) == (name == "deformable_detr") and set(agnostic) <= set(dims)
    init = ClassInit(dims, classes, "mine", reinit=True, agnostic=agnostic)
    StrictCheckpointer(model).load_partial(path, class_init=init)
    loaded, expected = model.state_dict(), source.state_dict()
    for key, value in loaded.items():
        if key not in dims:
            assert torch.equal(value, expected[key]), key
            continue
        d, rows = dims[key], expected[key]
        # car (checkpoint class 2) and person (0) keep their rows; widget starts as the model initialises it; the
        # proposal head's row 0 scores "object", whatever class 0 is
        assert torch.equal(value.narrow(d, 0, 1), rows.narrow(d, 0 if key in agnostic else 2, 1)), key
        assert torch.equal(value.narrow(d, 2, 1), rows.narrow(d, 0, 1)), key
        assert torch.equal(value.narrow(d, 1, 1), fresh[key].narrow(d, 1, 1)), key
        if value.shape[d] == len(classes) + 1:  # DETR's no-object row
            assert torch.equal(value.narrow(d, 3, 1), rows.narrow(d, len(COCO_FIRST), 1)), key
    lines = [r.getMessage() for r in package_log.records if "re-initialised" in r.getMessage()]
    assert len(lines) == 1
    assert all(key in lines[0] for key in dims)
    assert "matched by name: Car, person; new: widget" in lines[0]
    assert ("no-object" in lines[0]) == (name == "detr")
    if agnostic:
        head = sorted(agnostic)[0].rsplit(".", 1)[0]  # class_embed.{last}
        assert (f"kept by position the rows that are no class's (a proposal head's object score): {head}.weight "
                f"row 0, {head}.bias row 0") in lines[0]


def test_focal_heads_start_from_the_prior_probability(tmp_path):
    """A class with no row in the checkpoint gets the method's initialisation: the focal prior bias."""
    source = build(model_cfg("deformable_detr", num_classes=6), seed=1)
    for p in source.parameters():
        p.data.add_(1.0)  # nothing of the checkpoint looks like an initialisation
    path = checkpoint_of(source, tmp_path, COCO_FIRST, "deformable_detr.py")
    cfg = model_cfg("deformable_detr", num_classes=2)
    model = build(cfg)
    dims = class_dimensions(cfg, model)
    StrictCheckpointer(model).load_partial(path, class_init=ClassInit(dims, ["cat", "dog"], "pets", reinit=True))
    prior = -torch.log(torch.tensor((1 - 0.01) / 0.01))
    biases = [v for k, v in model.state_dict().items() if k in dims and k.endswith("bias")]
    assert biases and all(torch.allclose(b, prior.expand_as(b)) for b in biases)


def test_another_class_count_is_refused_without_reinit(tmp_path):
    path = checkpoint_of(build(model_cfg("detr", num_classes=6)), tmp_path, COCO_FIRST)
    cfg = model_cfg("detr", num_classes=3)
    model = build(cfg)
    init = ClassInit(class_dimensions(cfg, model), ["a", "b", "c"], "mine", reinit=False)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} predicts 6 classes \(class_embed.weight \(7, 128\)\), "
                                              r"the model 3, the classes of dataset 'mine' \(a, b, c\): set "
                                              r"train.reinit_classes=True"):
        StrictCheckpointer(model).load_partial(path, class_init=init)


def test_same_count_other_names_loads_with_a_warning(tmp_path, package_log):
    path = checkpoint_of(build(model_cfg("detr", num_classes=3), seed=1), tmp_path, ["a", "b", "c"])
    cfg = model_cfg("detr", num_classes=3)
    model = build(cfg)
    init = ClassInit(class_dimensions(cfg, model), ["a", "x", "c"], "mine", reinit=False)
    StrictCheckpointer(model).load_partial(path, class_init=init)
    assert any("class 1: 'b' there, 'x' here" in r.getMessage() and r.levelno == logging.WARNING
               for r in package_log.records)


def test_a_checkpoint_of_another_method_is_refused_naming_both(tmp_path):
    path = checkpoint_of(build(model_cfg("detr")), tmp_path, None, "detr.py")
    model = build(model_cfg("sam_detr"))
    checkpointer = StrictCheckpointer(model, metadata=checkpoint_metadata(model, "sam_detr.py"))
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is a checkpoint of another method: DETR \(config "
                                              r"detr.py\); the model is SAMDETR \(config sam_detr.py\)"):
        checkpointer.load_partial(path)
    # the same without the metadata (a checkpoint saved by Detectron2's checkpointer): told by its keys
    state = torch.load(path, weights_only=False)
    del state["sam_detr"]
    torch.save(state, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match=r"It lacks weights of the model and holds others: a checkpoint "
                                              r"of another method or variant\? The model is SAMDETR"):
        checkpointer.load_partial(str(tmp_path / "plain.pth"))


def test_a_variant_of_the_same_method_is_refused_naming_both_configs(tmp_path):
    """A one-stage and a two-stage Deformable DETR are one meta-architecture: the configs tell them apart."""
    one_stage = model_cfg("deformable_detr")
    one_stage.transformer.proposals = None
    path = checkpoint_of(build(one_stage), tmp_path, None, "deformable_detr_one_stage.py")
    model = build(model_cfg("deformable_detr"))
    assert isinstance(model, DETRBase)
    checkpointer = StrictCheckpointer(model, metadata=checkpoint_metadata(model, "deformable_detr.py"))
    with pytest.raises(CheckpointError, match=r"The checkpoint is of DeformableDETR \(config deformable_detr_one_stage"
                                              r"\.py\), the model DeformableDETR \(config deformable_detr.py\)"):
        checkpointer.load_partial(path)


def test_class_weights_missing_from_the_checkpoint_are_refused(tmp_path):
    """Re-initialisation fits the class weights a checkpoint has; one without them is still incomplete."""
    source = build(model_cfg("detr", num_classes=6))
    path = checkpoint_of(source, tmp_path, COCO_FIRST)
    state = torch.load(path, weights_only=False)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("class_embed.")}
    torch.save(state, tmp_path / "headless.pth")
    cfg = model_cfg("detr", num_classes=3)
    model = build(cfg)
    init = ClassInit(class_dimensions(cfg, model), ["a", "b", "c"], "mine", reinit=True)
    with pytest.raises(CheckpointError, match=r"2 model weight\(s\) missing from it: class_embed.weight, class_embed.bias"):
        StrictCheckpointer(model).load_partial(str(tmp_path / "headless.pth"), class_init=init)

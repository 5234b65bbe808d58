"""Strict checkpoint loading: a checkpoint that leaves weights unfilled or holds unused ones is refused unless the
load is declared partial (the ImageNet backbone initialisation); a truncated file gets a named error."""
import pickle
import re

import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
import torchvision  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402

from sam_detr.engine import IMAGENET_BACKBONE, CheckpointError, StrictCheckpointer  # noqa: E402
from sam_detr.engine.defaults import load_checkpoint  # noqa: E402

QUICKSTART = REPO_ROOT / "configs" / "quickstart"


def quickstart_model(name, **backbone):
    cfg = LazyConfig.load(str(QUICKSTART / f"{name}.py"))
    cfg.model.backbone.update(backbone)
    if "out_features" in backbone:
        cfg.model.in_features = backbone["out_features"]
    torch.manual_seed(0)
    return instantiate(cfg.model)


@pytest.fixture(scope="module")
def detr_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    DetectionCheckpointer(quickstart_model("detr"), str(directory)).save("detr")
    return directory / "detr.pth"


def test_another_models_checkpoint_is_refused_naming_the_keys(detr_checkpoint):
    """The issue's case: --eval-only of the SAM-DETR quickstart with the DETR quickstart's checkpoint."""
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(quickstart_model("sam_detr"), str(detr_checkpoint))
    message = str(error.value)
    assert f"checkpoint {detr_checkpoint} does not fit the model" in message
    assert re.search(r"\d+ model weight\(s\) missing from it: transformer\.decoder\.layers\.0\.\w+", message)
    assert re.search(r"\d+ weight\(s\) the model does not have: transformer\.decoder\.\w+", message)
    assert "query_embed.weight (10, 128) in the checkpoint, (10, 4) in the model" in message
    assert "only a training's initialisation may be partial (train.init_checkpoint_partial)" in message


def test_the_same_models_checkpoint_loads_exactly(detr_checkpoint):
    model = quickstart_model("detr")
    for p in model.parameters():
        p.data.zero_()
    StrictCheckpointer(model).load(str(detr_checkpoint))
    expected = torch.load(detr_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_another_shape_is_refused(detr_checkpoint, tmp_path):
    state = torch.load(detr_checkpoint, weights_only=True)
    state["model"]["class_embed.weight"] = torch.zeros(9, 128)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"1 weight\(s\) of another shape: class_embed.weight \(9, 128\) in the "
                                              r"checkpoint, \(6, 128\) in the model"):
        StrictCheckpointer(quickstart_model("detr")).load(str(tmp_path / "shape.pth"))


def test_truncated_and_missing_files_are_named(detr_checkpoint, tmp_path):
    data = detr_checkpoint.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path}/cut.pth cannot be read \(truncated"):
        StrictCheckpointer(quickstart_model("detr")).load(str(tmp_path / "cut.pth"))
    with pytest.raises(FileNotFoundError, match=rf"checkpoint {tmp_path}/none.pth not found"):
        StrictCheckpointer(quickstart_model("detr")).load(str(tmp_path / "none.pth"))


@pytest.fixture(scope="module")
def imagenet_pkl(tmp_path_factory):
    """torchvision's ImageNet ResNet-18 as d2's tools/convert-torchvision-to-d2.py writes it (R-50.pkl is this
    for ResNet-50): torchvision names made d2's by string replacement, the classifier kept as stem.fc.*, and
    name-matching heuristics on."""
    state = torchvision.models.resnet18().state_dict()
    converted = {}
    for key, value in state.items():
        k = key if "layer" in key else "stem." + key
        for t in (1, 2, 3, 4):
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        k = k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        converted[k] = value.numpy()
    path = tmp_path_factory.mktemp("imagenet") / "R-18.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": converted, "__author__": "torchvision", "matching_heuristics": True}, f)
    return path, state


def test_imagenet_backbone_initialisation_is_a_declared_partial_load(imagenet_pkl):
    path, state = imagenet_pkl
    model = quickstart_model("detr", out_features=["res5"])
    StrictCheckpointer(model).load_partial(str(path), IMAGENET_BACKBONE)
    torch.testing.assert_close(model.backbone.res3[0].conv1.weight, state["layer2.0.conv1.weight"], rtol=0, atol=0)
    # the same file, not declared partial: refused, naming what it leaves unfilled and what it holds unused
    with pytest.raises(CheckpointError, match=r"missing from it: .*; 2 weight\(s\) the model does not have: stem.fc"):
        StrictCheckpointer(model).load(str(path))
    # declared partial, but a backbone weight is missing too: refused, naming it
    with open(path, "rb") as f:
        data = pickle.load(f)
    del data["model"]["res2.0.conv1.weight"]
    with open(path.with_name("cut.pkl"), "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(CheckpointError, match=r"1 model weight\(s\) missing from it: backbone.res2.0.conv1.weight"):
        StrictCheckpointer(model).load_partial(str(path.with_name("cut.pkl")), IMAGENET_BACKBONE)


def test_configs_that_load_imagenet_weights_declare_it():
    for path in sorted(REPO_ROOT.glob("configs/*.py")):
        train = LazyConfig.load(str(path)).train
        partial = train.get("init_checkpoint_partial", None)
        # d2's ImageNet models, or a torchvision ResNet converted by tools/convert_torchvision_resnet.py (R-101)
        if "ImageNetPretrained" in train.init_checkpoint or train.init_checkpoint.endswith("_torchvision.pth"):
            assert partial == IMAGENET_BACKBONE, path.name
        elif train.init_checkpoint:
            assert partial is None, path.name  # any other checkpoint is a whole model: loaded strictly
        # no init_checkpoint (Plain-DETR's SwinV2 pretraining is the user's to convert): its rule may be declared

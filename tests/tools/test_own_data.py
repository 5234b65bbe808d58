"""Training on your own data, end to end on real images: the COCO mini images registered from the command line as a
3-class dataset (person, car, chair: COCO ids 1, 3, 62, so not contiguous), fine-tuned from a converted checkpoint
of COCO's classes with its class-dependent weights re-initialised for the three (their COCO rows kept), then
evaluated. In this process (every weight checked as training starts) and through tools/lazyconfig_train_net.py as a
user runs it.

The official checkpoint is one of a tiny quickstart model (random weights as the model initialises them): the
official keys of the method's state-dict listing (tests/checkpoint/listings) that the tiny model has, 91 rows of
COCO category ids in its class heads; tools/convert_official_weights.py converts it for COCO's 80 classes, as the
README's first command does."""
import json
import math

import pytest
from conftest import COCO_MINI, DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.engine import HookBase  # noqa: E402
from tool_helpers import QUICKSTART, datasets_root, load_tool, run_tool, tool_env, train_in_process  # noqa: E402

from checkpoint.official_listings import official_for  # noqa: E402
from sam_detr.checkpoint import conditional_detr_key, deformable_detr_key, official_class_names  # noqa: E402
from sam_detr.engine import train_net  # noqa: E402
from sam_detr.engine.defaults import build_inference_model  # noqa: E402
from sam_detr.evaluation.inference_dtype import evaluate_dtypes  # noqa: E402

pytestmark = pytest.mark.coco_mini

QUICKSTART_DEFORMABLE = str(REPO_ROOT / "configs" / "quickstart" / "deformable_detr.py")
CLASSES = {1: "person", 3: "car", 62: "chair"}
# the quickstart Deformable DETR made tiny (ResNet-18 as the quickstart, a 32-wide 1 + 2 layer transformer)
TINY_DEFORMABLE = [
    *(f"model.transformer.{part}.layer.{key}" for part in ("encoder", "decoder") for key in ("d_model=32", "dim_feedforward=64")),
    "model.transformer.encoder.num_layers=1",
    "model.transformer.decoder.num_layers=2",
    "model.transformer.proposals.d_model=32",
    "model.backbone.norm=FrozenBN",  # the official models' (their checkpoints hold no BatchNorm counters)
]
TINY_DETR = [
    "model.transformer.d_model=32",
    "model.transformer.dim_feedforward=64",
    "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=1",
    "model.backbone.norm=FrozenBN",
]


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """The COCO mini set as a user's 3-class dataset: train (all 158 images, the annotations of the three classes)
    and val (its first 8 images with one of them), written as jsons into a temporary folder."""
    directory = tmp_path_factory.mktemp("own_data")
    coco = json.loads((COCO_MINI / "annotations" / "instances_val2017.json").read_text())
    annotations = [a for a in coco["annotations"] if a["category_id"] in CLASSES]
    categories = [c for c in coco["categories"] if c["id"] in CLASSES]
    assert [c["name"] for c in categories] == list(CLASSES.values())
    train = {"images": coco["images"], "annotations": annotations, "categories": categories}
    with_objects = {a["image_id"] for a in annotations}
    val_images = [i for i in coco["images"] if i["id"] in with_objects][:8]
    val_ids = {i["id"] for i in val_images}
    val = {"images": val_images, "annotations": [a for a in annotations if a["image_id"] in val_ids],
           "categories": categories}
    for name, content in (("train", train), ("val", val)):
        (directory / f"{name}.json").write_text(json.dumps(content))
    return directory


def own_data_overrides(directory, suffix: str):
    """The command-line fields that register the two splits (new names per test: d2's catalogs are global)."""
    images = COCO_MINI / "val2017"
    return [
        f"dataloader.train.dataset.names=mine_train_{suffix}",
        f"dataloader.train.dataset.json_file={directory / 'train.json'}",
        f"dataloader.train.dataset.image_root={images}",
        f"dataloader.test.dataset.names=mine_val_{suffix}",
        f"dataloader.test.dataset.json_file={directory / 'val.json'}",
        f"dataloader.test.dataset.image_root={images}",
        # small images, few of them: a test, not a training
        "dataloader.train.mapper.augmentations.1.short_edge_length=[96,112,128]",
        "dataloader.train.mapper.augmentations.1.max_size=192",
        "dataloader.test.mapper.augmentations.0.short_edge_length=128",
        "dataloader.test.mapper.augmentations.0.max_size=192",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "train.log_period=1",
        "train.checkpointer.period=100",
    ]


def converted_official_checkpoint(config: str, overrides, listing: str, official_key, path, env=None):
    """The first command of the README's two on a tiny model: a randomly initialised official checkpoint of the
    model of `config` + `overrides` (official keys from the listing `sd_<listing>.txt`, 91 rows of COCO
    category ids in its class heads), converted for COCO's 80 classes into `path` by
    tools/convert_official_weights.py (in a subprocess with `env`, else in this process). Returns the official
    model's weights under this package's names (class heads of 91 rows) and the class of each row."""
    official_cfg = LazyConfig.apply_overrides(LazyConfig.load(config), overrides)
    official_cfg.model.criterion.num_classes = 91
    torch.manual_seed(1)
    state = instantiate(official_cfg.model).state_dict()
    source = path.parent / f"official_{path.name}"
    torch.save({"model": official_for(listing, official_key, state), "epoch": 49}, source)
    argv = ["--config-file", config, "--source", str(source), "--output", str(path), *overrides,
            "model.criterion.num_classes=80"]
    if env is None:
        load_tool("convert_official_weights").main(argv)
    else:
        run_tool("convert_official_weights", *argv, env=env)
    return state, official_class_names("coco_2017_val", 91)


def losses(output_dir):
    with open(output_dir / "metrics.json") as f:
        return [r["total_loss"] for r in map(json.loads, f) if "total_loss" in r]


def copypaste_results(log: str):
    return [line.split("copypaste: ", 1)[1] for line in log.splitlines() if "copypaste: " in line]


def test_fine_tune_on_three_coco_classes_in_process(own_data, tmp_path, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    source, names = converted_official_checkpoint(QUICKSTART_DEFORMABLE, TINY_DEFORMABLE, "ddetr_twostage",
                                                  deformable_detr_key, tmp_path / "converted.pth")
    # the model as training starts (after the initialisation, before the first step)
    at_start = {}
    build_trainer = train_net.build_trainer

    def capturing(cfg, model, data_loader, optimizer):
        trainer = build_trainer(cfg, model, data_loader, optimizer)

        class Capture(HookBase):
            def before_train(self):
                at_start.update({k: v.detach().clone() for k, v in model.state_dict().items()})

        trainer.register_hooks([Capture()])
        return trainer

    monkeypatch.setattr(train_net, "build_trainer", capturing)
    out = tmp_path / "run"
    train_in_process(QUICKSTART_DEFORMABLE, *TINY_DEFORMABLE, *own_data_overrides(own_data, "inproc"),
                     f"train.init_checkpoint={tmp_path / 'converted.pth'}", "train.reinit_classes=True",
                     "train.max_iter=10", "optimizer.lr=5e-4", f"train.output_dir={out}")

    # the class rows of the three are the init checkpoint's (COCO's 80 classes) rows of their names; every other
    # weight is the official checkpoint's
    converted = torch.load(tmp_path / "converted.pth", weights_only=False)
    coco = converted["sam_detr"]["thing_classes"]
    rows = torch.tensor([coco.index(name) for name in CLASSES.values()])
    class_keys = [k for k in at_start if at_start[k].shape != source[k].shape]
    assert class_keys, "no weight changed its class count"
    for key, value in at_start.items():
        if key in class_keys:
            # the classes axis is the one of 80 rows in the checkpoint, 3 in the model
            init = converted["model"][key]
            axis = next(d for d, (a, b) in enumerate(zip(value.shape, init.shape)) if (a, b) == (3, 80))
            assert torch.equal(value, init.index_select(axis, rows)), key
        else:
            assert torch.equal(value, source[key]), key
    # a decoder layer's classifier: the official rows of COCO ids 1, 3, 62
    official_rows = torch.tensor([names.index(name) for name in CLASSES.values()])
    assert official_rows.tolist() == list(CLASSES)
    assert torch.equal(at_start["class_embed.0.weight"], source["class_embed.0.weight"][official_rows])
    trained = losses(out)
    assert len(trained) == 10 and all(math.isfinite(x) for x in trained)
    assert sum(trained[-3:]) < sum(trained[:3]), trained
    results = copypaste_results(capsys.readouterr().out)
    assert results and results[0] == "Task: bbox" and results[1].startswith("AP,AP50")
    saved = torch.load(out / "model_final.pth", weights_only=False)
    assert saved["sam_detr"]["thing_classes"] == list(CLASSES.values())

    # the fine-tuned model evaluated at float32 and in bfloat16 (tools/benchmark_dtype.py's AP path)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(QUICKSTART_DEFORMABLE), [
        *TINY_DEFORMABLE, *own_data_overrides(own_data, "inproc"), f"train.init_checkpoint={out / 'model_final.pth'}"])
    results = evaluate_dtypes(build_inference_model(cfg), cfg)
    assert set(results) == {"float32", "bfloat16"}
    for figures in results.values():
        assert 0 <= figures["AP"] <= 100 and figures["cpu"] > 0 and figures["wall"] > 0


def test_fine_tune_on_three_coco_classes_with_the_train_tool(own_data, tmp_path, tmp_path_factory):
    """The README's command, as a user runs it: DETR from a checkpoint converted at COCO's 80 classes."""
    env = tool_env(tmp_path_factory)
    converted_official_checkpoint(QUICKSTART, TINY_DETR, "detr", conditional_detr_key, tmp_path / "converted.pth", env)
    out = tmp_path / "run"
    proc = run_tool("lazyconfig_train_net", "--config-file", QUICKSTART, *TINY_DETR,
                    *own_data_overrides(own_data, "tool"), f"train.init_checkpoint={tmp_path / 'converted.pth'}",
                    "train.reinit_classes=True", "train.max_iter=4", f"train.output_dir={out}", env=env)
    log = proc.stdout + proc.stderr
    assert "1 -> 0 (person), 3 -> 1 (car), 62 -> 2 (chair)" in log
    line = next(x for x in log.splitlines() if "re-initialised" in x)
    assert "re-initialised 2 class-dependent weight(s)" in line
    assert "class_embed.weight (axis 0), class_embed.bias (axis 0)" in line
    assert "matched by name: person, car, chair; new: none; kept the 1 row(s) past the classes (no-object)" in line
    assert all(math.isfinite(x) for x in losses(out))
    results = copypaste_results(log)
    assert results and results[0] == "Task: bbox" and results[1].startswith("AP,AP50")


def test_check_dataset_with_the_training_fields(own_data, capsys):
    """tools/check_dataset.py --config-file with the training command's key=value fields: it registers the dataset
    as the training does and reports on it."""
    status = load_tool("check_dataset").main(["--no-progress", "--skip-images", "--config-file", QUICKSTART,
                                              *own_data_overrides(own_data, "check")[:3]])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "Checked dataset 'mine_train_check'" in out and "158 image(s), 444 annotation(s), 3 class(es)" in out
    assert "OK: training accepts this data" in out

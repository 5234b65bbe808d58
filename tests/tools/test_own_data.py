"""Training on your own data, end to end on real images: the COCO mini images registered from the command line as a
3-class dataset (person, car, chair: COCO ids 1, 3, 62, so not contiguous), fine-tuned from a converted checkpoint
of COCO's classes with its class-dependent weights re-initialised for the three (their COCO rows kept), then
evaluated. In this process (every weight checked as training starts) and through tools/lazyconfig_train_net.py as a
user runs it.

The "converted official checkpoint" is a tiny quickstart model at the official class count (91, or Detectron2's 80)
with random weights, saved with the metadata tools/convert_official_weights.py writes (method, config, the class of
each row): the converter itself is tested against the official state-dict listings in tests/checkpoint."""
import json
import math

import pytest
from conftest import COCO_MINI, DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.engine import HookBase  # noqa: E402
from tool_helpers import QUICKSTART, datasets_root, load_tool, run_tool, tool_env, train_in_process  # noqa: E402

from sam_detr.checkpoint import official_class_names  # noqa: E402
from sam_detr.engine import StrictCheckpointer, train_net  # noqa: E402
from sam_detr.engine.checkpointer import checkpoint_metadata  # noqa: E402
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
]
TINY_DETR = [
    "model.transformer.d_model=32",
    "model.transformer.dim_feedforward=64",
    "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=1",
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


def converted_checkpoint(config: str, overrides, num_classes: int, path):
    """A randomly initialised model of `config` at the official class count, saved as the converter saves it."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), overrides)
    cfg.model.criterion.num_classes = num_classes
    torch.manual_seed(1)
    model = instantiate(cfg.model)
    if num_classes == 91:
        names = official_class_names("coco_2017_val", 91)
    else:
        names = MetadataCatalog.get("coco_2017_val").thing_classes
    metadata = checkpoint_metadata(model, config, names)
    StrictCheckpointer(model, str(path.parent), metadata=metadata).save(path.stem)
    return {k: v.clone() for k, v in model.state_dict().items()}, names


def losses(output_dir):
    with open(output_dir / "metrics.json") as f:
        return [r["total_loss"] for r in map(json.loads, f) if "total_loss" in r]


def copypaste_results(log: str):
    return [line.split("copypaste: ", 1)[1] for line in log.splitlines() if "copypaste: " in line]


def test_fine_tune_on_three_coco_classes_in_process(own_data, tmp_path, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    source, names = converted_checkpoint(QUICKSTART_DEFORMABLE, TINY_DEFORMABLE, 91, tmp_path / "converted.pth")
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

    rows = [names.index(name) for name in CLASSES.values()]  # 1, 3, 62: the official rows of the three
    class_keys = [k for k in at_start if at_start[k].shape != source[k].shape]
    assert class_keys, "no weight changed its class count"
    for key, value in at_start.items():
        if key in class_keys:
            # the classes axis is the one of 91 rows in the checkpoint, 3 in the model
            axis = next(d for d, (a, b) in enumerate(zip(value.shape, source[key].shape)) if (a, b) == (3, 91))
            assert torch.equal(value, source[key].index_select(axis, torch.tensor(rows))), key
        else:
            assert torch.equal(value, source[key]), key
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
    converted_checkpoint(QUICKSTART, TINY_DETR, 80, tmp_path / "converted.pth")
    out = tmp_path / "run"
    proc = run_tool("lazyconfig_train_net", "--config-file", QUICKSTART, *TINY_DETR,
                    *own_data_overrides(own_data, "tool"), f"train.init_checkpoint={tmp_path / 'converted.pth'}",
                    "train.reinit_classes=True", "train.max_iter=4", f"train.output_dir={out}",
                    env=tool_env(tmp_path_factory))
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

"""What the tests of tools/ share: a tiny quickstart DETR, and running a tool as a script or a module."""
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch
from conftest import REPO_ROOT

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart" / "detr.py")

# The quickstart DETR made tiny, on 64 px images of shapes_val only (shapes_train would be generated too)
TINY_DETR = [
    "model.transformer.d_model=32",
    "model.transformer.dim_feedforward=64",
    "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=1",
    "model.num_queries=5",
    "dataloader.train.dataset.names=shapes_val",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "dataloader.train.mapper.augmentations.1.short_edge_length=[64]",
    "dataloader.test.mapper.augmentations.0.short_edge_length=64",
]
TINY_NUM_QUERIES = 5
# The same for the quickstart SAM-DETR (configs/quickstart/sam_detr.py), with two decoder layers
TINY_SAM_DETR = [
    *(f"model.transformer.{part}.layer.{key}" for part in ("encoder", "decoder")
      for key in ("d_model=32", "dim_feedforward=64")),
    "model.transformer.encoder.num_layers=1",
    "model.transformer.decoder.num_layers=2",
    "model.num_queries=5",
] + [o for o in TINY_DETR if o.startswith("dataloader.")]


def save_tiny_detr(directory: Path) -> str:
    """Saves a randomly initialised (seed 0) tiny quickstart DETR as `directory/tiny.pth`; returns its path."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    model = instantiate(LazyConfig.apply_overrides(LazyConfig.load(QUICKSTART), TINY_DETR).model)
    DetectionCheckpointer(model, str(directory)).save("tiny")
    return str(directory / "tiny.pth")


# training runs of a few iterations: a checkpoint every 2, a line of metrics at each, no evaluation at the end
SHORT_RUN = ["train.checkpointer.period=2", "train.log_period=1", "dataloader.evaluator=null"]


def datasets_root(tmp_path_factory) -> Path:
    """One $SAM_DETR_DATASETS for the whole session, so that shapes_val is generated once."""
    return tmp_path_factory.getbasetemp() / "sam_detr_datasets"


def tool_env(tmp_path_factory) -> dict:
    """The environment of a tool run by a test: this checkout first, the session's datasets, and one thread
    (the tiny models gain nothing from more, and oversubscribed threads spin on a busy machine)."""
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        SAM_DETR_DATASETS=str(datasets_root(tmp_path_factory)),
        OMP_NUM_THREADS="1",
    )


def run_tool(name: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    """Runs tools/<name>.py as a user does; fails the test with its output when it fails."""
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / f"{name}.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"tools/{name}.py failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return proc


def train_in_process(config: str, *argv: str) -> None:
    """tools/lazyconfig_train_net.py's flow in this process (one process: d2's launch calls main directly)."""
    from detectron2.engine import default_argument_parser

    from sam_detr.engine.train_net import launch_main

    launch_main(default_argument_parser().parse_args(["--config-file", config, *argv]))


def final_weights(output_dir) -> dict:
    return torch.load(Path(output_dir) / "model_final.pth", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    """Bit for bit, naming the first weight that differs and by how much."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key}: max difference {(a[key].double() - b[key].double()).abs().max()}"


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py as a module (tools/ is not a package), to call its functions."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reset_loggers():
    """d2's setup_logger is cached, and its handlers write to the stdout of the test that first called it,
    which capsys has closed since."""
    from detectron2.utils.logger import setup_logger

    setup_logger.cache_clear()
    for name in ("detectron2", "d2", "fvcore", "sam_detr"):
        logging.getLogger(name).handlers.clear()


def tool_main_in_process(name: str, tmp_path_factory, monkeypatch):
    """For a fixture (`yield from`): tools/<name>.py's main, to call in the test's process with the session's
    datasets and one-line errors (no SAM_DETR_TRACEBACK), between fresh loggers."""
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    monkeypatch.delenv("SAM_DETR_TRACEBACK", raising=False)
    reset_loggers()
    yield load_tool(name).main
    reset_loggers()

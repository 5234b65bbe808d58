"""What the tests of tools/ share: a tiny quickstart DETR, and running a tool as a script or a module."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py as a module (tools/ is not a package), to call its functions."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

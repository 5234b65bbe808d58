"""Shared test configuration.

Markers (see pyproject.toml): `detectron2` tests are skipped where detectron2 is not installed, `cuda`
tests without a CUDA device, `coco_mini` tests where ../shared/data/coco_val2017_mini is absent.
A module that imports detectron2 at its top starts with
`pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)` (import it from conftest).
"""
import importlib.util
import logging
import os
from pathlib import Path

import pytest
import torch

# One intra-op and one inter-op thread in every test process and the processes it starts: the tiny test
# models gain nothing from more, and more threads spin against any other busy process on the machine (a
# test that needs several threads sets them itself and restores them, as the determinism tests of the
# compiled ops do).
torch.set_num_threads(1)
torch.set_num_interop_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = Path(os.environ.get("SAM_DETR_COCO_MINI", REPO_ROOT.parent / "shared" / "data" / "coco_val2017_mini"))

HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
DETECTRON2_MISSING = (
    "detectron2 is not installed; it is not on PyPI: install it from "
    "https://github.com/facebookresearch/detectron2 (see README.md, Install)"
)
HAS_CUDA = torch.cuda.is_available()
DEPLOY_MODULES = ("onnx", "onnxscript", "onnxruntime")


def importorskip_deploy() -> None:
    """Skips the calling test module, naming the deploy extra, where one of its modules is missing."""
    for module in DEPLOY_MODULES:
        pytest.importorskip(module, reason=f"{module} is not installed: the deploy extra (pip install -e .[deploy])")


def pytest_collection_modifyitems(config, items):
    skips = {
        "detectron2": (not HAS_DETECTRON2, DETECTRON2_MISSING),
        "cuda": (not HAS_CUDA, "no CUDA device"),
        "coco_mini": (not (COCO_MINI / "annotations" / "instances_val2017.json").is_file(), f"{COCO_MINI} is absent"),
    }
    for item in items:
        for name, (skip, reason) in skips.items():
            # the marker itself: item.keywords also holds the names of the parent folders (a checkout in a
            # folder named "cuda" would skip everything)
            if skip and item.get_closest_marker(name) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def coco_mini_dir() -> Path:
    return COCO_MINI


def _compiled_extension():
    from sam_detr.layers import _ext  # imported here: only the compiled-op tests need it

    return _ext.get_extension()


def pytest_generate_tests(metafunc):
    if "cpu_isa" in metafunc.fixturenames:
        ext = _compiled_extension()
        # without the extension the tests that use the fixture skip; one parameter keeps them listed
        names = ext.cpu_isas() if ext is not None and hasattr(ext, "cpu_isas") else ["default"]
        metafunc.parametrize("cpu_isa", names, indirect=True)


@pytest.fixture
def cpu_isa(request):
    """Runs a test once per instruction set the CPU kernels of sam_detr._C can use here (selected for
    every op through sam_detr._C.set_cpu_isa, then restored)."""
    ext = _compiled_extension()
    previous = ext.set_cpu_isa(request.param)
    yield request.param
    ext.set_cpu_isa(previous)


@pytest.fixture
def package_log(caplog):
    """caplog for the loggers of sam_detr, also where d2's setup_logger (called by a training in this process)
    has stopped them propagating to the root logger that caplog listens to."""
    logger = logging.getLogger("sam_detr")
    propagate, level = logger.propagate, logger.level
    logger.addHandler(caplog.handler)
    logger.propagate = False  # each record once
    logger.setLevel(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.propagate, logger.level = propagate, level

"""Every config file in configs/ goes through what tools/lazyconfig_train_net.py does with it before training:
d2's `default_setup` saves it as YAML into the output folder, and the YAML loads back to the same config."""
import pytest

from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from detectron2.config import LazyConfig  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

CONFIGS = sorted(
    str(p.relative_to(REPO_ROOT / "configs"))
    for p in (REPO_ROOT / "configs").rglob("*.py")
    if "common" not in p.parts and p.name != "__init__.py"
)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_file_saves_and_loads_back(name, tmp_path):
    cfg = LazyConfig.load(str(REPO_ROOT / "configs" / name))
    # every interpolation resolves where the node stands (a node also reachable from a module-level name, e.g. a
    # loop variable, is saved there too, and its relative interpolations do not resolve from there)
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    again = LazyConfig.load(str(tmp_path / "config.yaml"))
    LazyConfig.save(again, str(tmp_path / "again.yaml"))
    assert (tmp_path / "again.yaml").read_text() == (tmp_path / "config.yaml").read_text()

"""Detectron2's `build_model(cfg)` for the meta-architectures, from the LazyConfigs.

The LazyConfig files under configs/ are this package's one model description. A yacs `CfgNode` names one of
them instead of repeating its fields as keys, so that every method and variant (MS-DETR included) builds
the same way and no second set of defaults can drift from the configs:

    cfg = get_cfg(); add_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "SAMDETR"
    cfg.MODEL.DETR.CONFIG_FILE = "sam_detr_r50_12ep.py"        # relative: also looked up under configs/
    cfg.MODEL.DETR.OVERRIDES = ["model.criterion.num_classes=91"]
    model = build_model(cfg)
"""
from pathlib import Path
from typing import Dict

from detectron2.config import CfgNode as CN
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.registry import locate

__all__ = ["add_detr_config", "lazy_model_arguments", "CONFIGS_DIR"]

# the repository's configs/ (a source checkout or an editable install)
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


def add_detr_config(cfg: CN) -> CN:
    """Adds cfg.MODEL.DETR.CONFIG_FILE (a LazyConfig file whose `model` is built) and cfg.MODEL.DETR.OVERRIDES
    ("key=value" strings, keys from the config's root as on the tools' command line: "model.num_queries=100"),
    and sets the input format the models expect."""
    cfg.INPUT.FORMAT = "RGB"  # read by d2's DatasetMapper and DefaultPredictor; the models take RGB images
    cfg.MODEL.DETR = CN()
    cfg.MODEL.DETR.CONFIG_FILE = ""
    cfg.MODEL.DETR.OVERRIDES = []
    return cfg


def _config_path(name: str) -> Path:
    """`name` as given (absolute, or relative to the working directory), else under the repository's configs/."""
    if not name:
        raise ValueError("cfg.MODEL.DETR.CONFIG_FILE is empty: name a LazyConfig file (e.g. 'detr_r50_500ep.py')")
    candidates = [Path(name)]
    if not Path(name).is_absolute():
        candidates.append(CONFIGS_DIR / name)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"cfg.MODEL.DETR.CONFIG_FILE {name!r}: no such file (tried {', '.join(map(str, candidates))})")


def lazy_model_arguments(cfg: CN, cls: type) -> Dict:
    """The keyword arguments of `cls` (a meta-architecture) from the `model` node of the LazyConfig that
    cfg.MODEL.DETR names, after cfg.MODEL.DETR.OVERRIDES: every argument instantiated as `instantiate(model)`
    would, in the same order. The node's target must be `cls` (the class cfg.MODEL.META_ARCHITECTURE
    registers)."""
    if "DETR" not in cfg.MODEL or "CONFIG_FILE" not in cfg.MODEL.DETR:
        raise KeyError("cfg.MODEL.DETR.CONFIG_FILE is missing: call sam_detr.config.add_detr_config(cfg) first")
    path = _config_path(cfg.MODEL.DETR.CONFIG_FILE)
    lazy = LazyConfig.load(str(path))
    overrides = list(cfg.MODEL.DETR.OVERRIDES)
    outside = [o for o in overrides if not o.startswith("model.")]
    if outside:
        raise ValueError(f"cfg.MODEL.DETR.OVERRIDES {outside}: only the model is built, keys must start with 'model.'")
    LazyConfig.apply_overrides(lazy, overrides)
    node = lazy.get("model")
    if node is None or "_target_" not in node:
        raise KeyError(f"{path}: no `model = L(SomeDetector)(...)` node")
    target = node._target_
    if isinstance(target, str):
        target = locate(target)
    if target is not cls:
        name = getattr(target, "__qualname__", str(target))
        raise TypeError(
            f"{path} builds {name}, not {cls.__name__}: set cfg.MODEL.META_ARCHITECTURE = {name!r} or name a "
            f"{cls.__name__} config in cfg.MODEL.DETR.CONFIG_FILE"
        )
    return {key: instantiate(value) for key, value in node.items() if key != "_target_"}

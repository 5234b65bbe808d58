"""A published model's tiny twin: the graph of its config (every module and option: SMCA, multi-scale, DC5,
refinement, two-stage, one-to-many queries, BoxRPB, ...) at the size of a unit test, so that the test suite
runs every published row's distinctive modules (tests/modeling/test_contract.py)."""
import inspect
from typing import Any

from omegaconf import DictConfig, ListConfig

from ..modeling.backbone.resnet import build_resnet_backbone
from ..modeling.backbone.swin_v2 import build_swinv2_backbone
from .quickstart import LAYER_ARGS

__all__ = ["tiny_twin"]

TINY_WIDTH = 32
# the values of the size arguments of the model graphs, by their names (every layer's width, heads and FFN;
# queries; Plain-DETR's BoxRPB hidden width and its one-to-many queries)
TINY_SIZES = {
    **dict(zip(LAYER_ARGS[:3], (TINY_WIDTH, 4, 2 * TINY_WIDTH))),
    "num_pos_feats": TINY_WIDTH // 2,  # a sine position embedding given explicitly: half the width
    "rpe_hidden_dim": 16,
    "num_queries": 10,
    "num_hybrid_queries": 50,
}
# layer counts, halved (at least 1), and the per-layer lists that go with them, every other entry kept
# (SAM-DETR-MS's decoder levels [2, 2, 1, 1, 0, 0] -> [2, 1, 0]: every level is still attended)
LAYER_COUNTS = ("num_layers", "num_encoder_layers", "num_decoder_layers")
PER_LAYER_LISTS = ("layer_levels",)


def _argument(node: DictConfig, name: str) -> Any:
    """The value of argument `name` of the call `node`: its own, or its target's default."""
    if name in node:
        return node[name]
    return inspect.signature(node._target_).parameters[name].default


def _tiny_resnet(backbone: DictConfig) -> None:
    # ResNet-18, or ResNet-50 where DC5 needs bottleneck blocks; the config's norm, freezing and outputs
    backbone.depth = 50 if _argument(backbone, "dc5") else 18


def _tiny_swinv2(backbone: DictConfig) -> None:
    # 8 channels (8-channel heads), two blocks per stage at most (the global blocks of the last stage kept),
    # windows halved (the pretrained ones too: their ratio to the window, which the log-spaced relative
    # coordinates depend on, is kept)
    depths = [min(d, 2) for d in _argument(backbone, "depths")]
    backbone.update(embed_dim=8, depths=depths, num_heads=[2**i for i in range(len(depths))])
    backbone.window_size = _argument(backbone, "window_size") // 2
    backbone.pretrained_window_sizes = [w // 2 for w in _argument(backbone, "pretrained_window_sizes")]


BACKBONES = {build_resnet_backbone: _tiny_resnet, build_swinv2_backbone: _tiny_swinv2}


def tiny_twin(model: DictConfig) -> DictConfig:
    """Shrinks `model`, the LazyConfig node of a published model (`cfg.model`), in place, and returns it:
    the sizes of `TINY_SIZES` wherever the graph names them, layer counts halved (`LAYER_COUNTS`,
    `PER_LAYER_LISTS`), the backbone made tiny by the rule for its builder (`BACKBONES`: ResNet-18, or
    ResNet-50 with DC5; SwinV2 with 8 channels). Everything else (modules, options, classes, losses) is
    the config's."""
    backbone = model.get("backbone")
    if isinstance(backbone, DictConfig) and backbone.get("_target_") in BACKBONES:
        BACKBONES[backbone._target_](backbone)
    _shrink(model)
    return model


def _shrink(node: Any) -> None:
    if isinstance(node, ListConfig):
        for item in node:
            _shrink(item)
        return
    if not isinstance(node, DictConfig):
        return
    for key in list(node.keys()):
        value = node[key]
        if key in TINY_SIZES and isinstance(value, int):
            node[key] = TINY_SIZES[key]
        elif key in LAYER_COUNTS and isinstance(value, int):
            node[key] = max(1, value // 2)
        elif key in PER_LAYER_LISTS and isinstance(value, ListConfig):
            node[key] = list(value)[::2][: max(1, len(value) // 2)]
        else:
            _shrink(value)

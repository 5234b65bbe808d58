"""SwinV2 weights -> `build_swinv2_backbone` names (an `UpsampleBackbone` around a `SwinTransformerV2`).

Official Plain-DETR detection checkpoints (impiga/Plain-DETR):

    backbone.0.net.body.<trunk name>          backbone.net.<trunk name>
    backbone.0.body.<trunk name>              backbone.net.<trunk name>     (no upsampling wrapper)
    backbone.0.upsample.<i>.*                 backbone.upsample.<i>.*

SwinV2 classification and SimMIM checkpoints (microsoft/Swin-Transformer, SimMIM), the state dict under
"model" or "state_dict" or the file itself, as the official `load_swinv2_checkpoint` reads them:

    [encoder.]<trunk name>                    backbone.net.<trunk name>
    ...rpe_mlp...                             ...cpb_mlp...                 (the SimMIM checkpoints' name)

Dropped by rule, everything else is an error naming the key:
    *.relative_coords_table, *.relative_position_index, *.attn_mask   derived from the window geometry,
        recomputed by the model (a pretraining checkpoint's are for its own window);
    pretrained only: head.* (classifier), norm.* (the classifier's final norm: the official loader has no
        module of that name, so `norm3` keeps its initialisation), mask_token (SimMIM), decoder.* (SimMIM's
        pixel decoder, in checkpoints whose encoder is under `encoder.`).
Target keys under the prefix that nothing fills are an error, except, for a pretrained checkpoint, the output
norms `norm{i}.*` (left at their initialisation, as in the official model).
"""
import re
from typing import Callable, Dict, Mapping, Optional

import torch

__all__ = [
    "plain_detr_backbone_key",
    "swinv2_pretrained_key",
    "convert_plain_detr_backbone",
    "convert_swinv2_pretrained",
    "unwrap_state_dict",
]

_GEOMETRY_BUFFERS = re.compile(r"\.(relative_coords_table|relative_position_index|attn_mask)$")
_PRETRAINED_DROPPED = re.compile(r"^(head\.|norm\.|mask_token$)")
_OUTPUT_NORM = re.compile(r"^norm\d+\.")


def plain_detr_backbone_key(key: str) -> Optional[str]:
    """Our name of one official Plain-DETR backbone key (`backbone.0.*`), None for a dropped geometry
    buffer; KeyError for any other key."""
    if _GEOMETRY_BUFFERS.search(key):
        return None
    for official, ours in (("backbone.0.net.body.", "backbone.net."), ("backbone.0.body.", "backbone.net.")):
        if key.startswith(official):
            return ours + key[len(official) :]
    if re.match(r"^backbone\.0\.upsample\.\d+\.", key):
        return "backbone." + key[len("backbone.0.") :]
    raise KeyError(f"{key!r} is not a Plain-DETR SwinV2 backbone key")


def swinv2_pretrained_key(key: str, simmim: bool) -> Optional[str]:
    """Trunk name (no prefix) of one key of a SwinV2 classification (`simmim` False) or SimMIM checkpoint,
    None for a key dropped by rule; KeyError for any other key."""
    if simmim:
        if key.startswith("decoder."):
            return None
        if not key.startswith("encoder."):
            raise KeyError(f"{key!r} is neither under 'encoder.' nor 'decoder.' in a SimMIM checkpoint")
        key = key[len("encoder.") :]
    if _GEOMETRY_BUFFERS.search(key) or _PRETRAINED_DROPPED.match(key):
        return None
    return key.replace(".rpe_mlp.", ".cpb_mlp.")


def unwrap_state_dict(checkpoint: Mapping) -> Mapping[str, torch.Tensor]:
    """The state dict of a loaded checkpoint file: its "state_dict" or "model" entry, or the file itself."""
    for entry in ("state_dict", "model"):
        if entry in checkpoint:
            return checkpoint[entry]
    return checkpoint


def _strict_rename(
    source: Mapping[str, torch.Tensor],
    key_fn: Callable[[str], Optional[str]],
    target: Mapping[str, torch.Tensor],
    target_prefix: str,
    may_stay_unfilled: Optional[Callable[[str], bool]] = None,
) -> Dict[str, torch.Tensor]:
    """Every source key renamed by `key_fn` (None: dropped) into `target`, equal shapes; every target key under
    `target_prefix` filled unless `may_stay_unfilled`. Errors name the first offending key."""
    converted: Dict[str, torch.Tensor] = {}
    for key, value in source.items():
        name = key_fn(key)
        if name is None:
            continue
        if name not in target:
            raise KeyError(f"checkpoint key {key!r} (as {name!r}) is not in the target model")
        if name in converted:
            raise KeyError(f"checkpoint key {key!r} (as {name!r}) fills a target key already filled")
        if tuple(value.shape) != tuple(target[name].shape):
            raise ValueError(
                f"checkpoint key {key!r} (as {name!r}) has shape {tuple(value.shape)}, "
                f"the target model {tuple(target[name].shape)}"
            )
        converted[name] = value
    missing = [
        k
        for k in target
        if k.startswith(target_prefix) and k not in converted and not (may_stay_unfilled and may_stay_unfilled(k))
    ]
    if missing:
        raise KeyError(f"target key {missing[0]!r} is not filled by the checkpoint ({len(missing)} missing)")
    return converted


def convert_plain_detr_backbone(
    official: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> Dict[str, torch.Tensor]:
    """The backbone of an official Plain-DETR state dict (its `backbone.0.*` keys; the rest is the
    detector's converter's) renamed for `target`, a state dict with the backbone under `backbone.`
    (only names and shapes are read), strictly: see the module docstring."""
    backbone = {k: v for k, v in official.items() if k.startswith("backbone.0.")}
    return _strict_rename(backbone, plain_detr_backbone_key, target, "backbone.")


def convert_swinv2_pretrained(
    checkpoint: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    prefix: str = "backbone.net.",
) -> Dict[str, torch.Tensor]:
    """A SwinV2 classification or SimMIM state dict (see `unwrap_state_dict`) renamed for the trunk under
    `prefix` in `target` (only names and shapes are read), strictly: see the module docstring. SimMIM
    checkpoints are told apart, as the official loader does, by keys under `encoder.`."""
    simmim = any(k.startswith("encoder.") for k in checkpoint)

    def key_fn(key: str) -> Optional[str]:
        name = swinv2_pretrained_key(key, simmim)
        return None if name is None else prefix + name

    def output_norm(name: str) -> bool:
        return bool(_OUTPUT_NORM.match(name[len(prefix) :]))

    return _strict_rename(checkpoint, key_fn, target, prefix, output_norm)

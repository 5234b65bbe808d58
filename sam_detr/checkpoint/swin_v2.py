"""SwinV2 weights -> `build_swinv2_backbone` names (an `UpsampleBackbone` around a `SwinTransformerV2`).

Official Plain-DETR detection checkpoints (impiga/Plain-DETR), `PLAIN_DETR_BACKBONE_RULES` (for `KeyRules`):

    backbone.0.net.body.<trunk name>          backbone.net.<trunk name>
    backbone.0.body.<trunk name>              backbone.net.<trunk name>     (no upsampling wrapper)
    backbone.0.upsample.<i>.*                 backbone.upsample.<i>.*

SwinV2 classification and SimMIM checkpoints (microsoft/Swin-Transformer, SimMIM), the state dict under
"model" or "state_dict" or the file itself, read as the official `load_swinv2_checkpoint` reads them:

    [encoder.]<trunk name>                    backbone.net.<trunk name>
    ...rpe_mlp...                             ...cpb_mlp...                 (the SimMIM checkpoints' name)

Dropped by rule (`drop_geometry_buffers`, `swinv2_pretrained_key`); anything else that does not map is an
error naming the key (the loop is `convert_strict`):
    *.relative_coords_table, *.relative_position_index, *.attn_mask   derived from the window geometry and
        recomputed by the model (a pretraining checkpoint's are for its own window);
    pretrained only: head.* (classifier), norm.* (the classifier's final norm: the official loader has no
        module of that name, so `norm3` keeps its initialisation), mask_token (SimMIM), decoder.* (SimMIM's
        pixel decoder, in checkpoints whose encoder is under `encoder.`).
Target keys that nothing fills are an error, except, for a pretrained checkpoint, the output norms
`norm{i}.*` (left at their initialisation, as in the official model) and what lies outside the trunk.
"""
import functools
import re
from typing import Dict, Mapping, Optional

import torch

from .strict import KeyRules, convert_strict

__all__ = [
    "PLAIN_DETR_BACKBONE_RULES",
    "drop_geometry_buffers",
    "convert_plain_detr_backbone",
    "swinv2_pretrained_key",
    "convert_swinv2_pretrained",
    "unwrap_state_dict",
]

PLAIN_DETR_BACKBONE_RULES = (
    (r"^backbone\.0\.(net\.)?body\.", "backbone.net."),
    (r"^backbone\.0\.upsample\.", "backbone.upsample."),
)
_GEOMETRY_BUFFER = re.compile(r"\.(relative_coords_table|relative_position_index|attn_mask)$")
_PRETRAINED_DROPPED = re.compile(r"^(head\.|norm\.|mask_token$)")
_OUTPUT_NORM = re.compile(r"^norm\d+\.")


def drop_geometry_buffers(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The state dict without the SwinV2 coordinate tables, position indices and shift masks."""
    return {k: v for k, v in state.items() if not _GEOMETRY_BUFFER.search(k)}


def convert_plain_detr_backbone(
    official: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> Dict[str, torch.Tensor]:
    """The backbone of an official Plain-DETR state dict (its `backbone.0.*` keys; the rest is the
    detector's converter's) renamed for the `backbone.*` keys of `target` (names and shapes are read),
    strictly (see the module docstring and `convert_strict`)."""
    backbone = {k: v for k, v in drop_geometry_buffers(official).items() if k.startswith("backbone.0.")}
    backbone_target = {k: v for k, v in target.items() if k.startswith("backbone.")}
    return convert_strict(backbone, backbone_target, KeyRules(PLAIN_DETR_BACKBONE_RULES, backbone_prefix=None))


def swinv2_pretrained_key(key: str, simmim: bool) -> Optional[str]:
    """Trunk name (no prefix) of one key of a SwinV2 classification (`simmim` False) or SimMIM checkpoint,
    None for a key dropped by rule; KeyError for a SimMIM key outside `encoder.` and `decoder.`."""
    if simmim:
        if key.startswith("decoder."):
            return None
        if not key.startswith("encoder."):
            raise KeyError(f"checkpoint key {key!r} is neither under 'encoder.' nor 'decoder.' in a SimMIM checkpoint")
        key = key[len("encoder.") :]
    if _GEOMETRY_BUFFER.search(key) or _PRETRAINED_DROPPED.match(key):
        return None
    return key.replace(".rpe_mlp.", ".cpb_mlp.")


def _prefixed_pretrained_key(key: str, prefix: str, simmim: bool) -> str:
    return prefix + swinv2_pretrained_key(key, simmim)


def unwrap_state_dict(checkpoint: Mapping) -> Mapping[str, torch.Tensor]:
    """The state dict of a loaded checkpoint file: its "state_dict" or "model" entry, or the file itself."""
    for entry in ("state_dict", "model"):
        if entry in checkpoint:
            return checkpoint[entry]
    return checkpoint


def convert_swinv2_pretrained(
    checkpoint: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    prefix: str = "backbone.net.",
) -> Dict[str, torch.Tensor]:
    """A SwinV2 classification or SimMIM state dict (see `unwrap_state_dict`) renamed for the trunk under
    `prefix` in `target` (names and shapes are read), strictly: see the module docstring. SimMIM
    checkpoints are told apart, as the official loader does, by keys under `encoder.`."""
    simmim = any(k.startswith("encoder.") for k in checkpoint)
    kept = {k: v for k, v in checkpoint.items() if swinv2_pretrained_key(k, simmim) is not None}
    trunk = {
        k: v for k, v in target.items() if k.startswith(prefix) and not _OUTPUT_NORM.match(k[len(prefix) :])
    }
    return convert_strict(kept, trunk, functools.partial(_prefixed_pretrained_key, prefix=prefix, simmim=simmim))


"""torchvision ResNet weights -> Detectron2 ResNet names (as `build_resnet_backbone` lays them out)."""
import re
from typing import Dict

import torch

__all__ = ["convert_torchvision_resnet", "torchvision_resnet_key"]


def torchvision_resnet_key(key: str) -> str:
    """Maps one torchvision ResNet key (no prefix) to its d2 name; raises KeyError for keys d2 has not."""
    m = re.match(r"^layer(\d)\.(\d+)\.(.*)$", key)
    if m is None:
        if key == "conv1.weight":
            return "stem.conv1.weight"
        m = re.match(r"^bn1\.(weight|bias|running_mean|running_var)$", key)
        if m:
            return f"stem.conv1.norm.{m.group(1)}"
        raise KeyError(key)
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    patterns = [
        (r"^conv(\d)\.weight$", r"conv\1.weight"),
        (r"^bn(\d)\.(weight|bias|running_mean|running_var)$", r"conv\1.norm.\2"),
        (r"^downsample\.0\.weight$", "shortcut.weight"),
        (r"^downsample\.1\.(weight|bias|running_mean|running_var)$", r"shortcut.norm.\1"),
    ]
    for pattern, repl in patterns:
        if re.match(pattern, rest):
            return f"res{stage}.{block}." + re.sub(pattern, repl, rest)
    raise KeyError(key)


def convert_torchvision_resnet(state_dict: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
    """Renames every `prefix + <torchvision key>` to its d2 name.

    The classifier (`fc.*`) and BN's `num_batches_tracked` are dropped; any other key that is not a
    ResNet weight raises a KeyError naming it, so that nothing is lost silently.
    """
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        try:
            out[torchvision_resnet_key(name)] = value
        except KeyError:
            raise KeyError(f"{key!r} is not a torchvision ResNet weight") from None
    return out

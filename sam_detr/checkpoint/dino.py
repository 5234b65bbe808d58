"""Official DINO checkpoints (IDEA-Research/DINO) -> `DINO` weights.

The official names are kept except for the backbone (torchvision -> d2 ResNet names), the FFN of every
layer (one `ffn` submodule here), the two-stage query selection (a submodule here), the proposal heads
(the last index of the class and box heads here, as two-stage Deformable DETR's) and the denoising label
embedding (in the `denoising` submodule here):

    backbone.0.body.<torchvision name>                     backbone.<d2 name>           (ResNet)
    backbone.0.<Swin name>                                 backbone.<Swin name>         (Swin-L)
    *.layers.i.{linear1,linear2}, encoder norm2, decoder norm3
                                                          *.layers.i.ffn.{linear1,linear2,norm}
    transformer.{enc_output,enc_output_norm}.*             transformer.proposals.*
    transformer.enc_out_class_embed.*                      class_embed.<num decoder layers>.*
    transformer.enc_out_bbox_embed.*                       bbox_embed.<num decoder layers>.*
    label_enc.weight                                       denoising.label_enc.weight
    transformer.decoder.{bbox_embed,class_embed}.*         dropped: the same tensors as {bbox,class}_embed.*

Swin's `relative_position_index` buffers are geometry (rebuilt by the model) and dropped. The decoder's class
and box heads are one module each, listed under every layer index (as the official
state dict lists them); each index is filled from its own official key. With Detectron2's contiguous
classes, every class head (the decoder's and the proposals') keeps the rows of the dataset's classes; the
label embedding keeps those rows and its last one (`dn_labelbook_size`, never drawn).
"""
import re
from typing import Dict, Mapping, Optional, Sequence

import torch

from .strict import FFN_RULES, KeyRules, convert_strict
from .swin_v2 import drop_geometry_buffers

__all__ = ["convert_dino", "dino_key", "dino_rules", "DINO_TIED"]

DINO_TIED = {
    "transformer.decoder.bbox_embed.": "bbox_embed.",
    "transformer.decoder.class_embed.": "class_embed.",
}
# every class head: the decoder's (`class_embed.i`), the proposals' and the label embedding
DINO_CLASS_HEADS = re.compile(r"^(class_embed\.\d+\.|transformer\.enc_out_class_embed\.|label_enc\.)(weight|bias)$")


def dino_rules(num_decoder_layers: int = 6):
    """DINO's renaming rules (see the module docstring); the proposal heads go after the decoder's."""
    L = num_decoder_layers
    return FFN_RULES + (
        (r"^transformer\.(enc_output|enc_output_norm)\.", r"transformer.proposals.\1."),
        (r"^transformer\.enc_out_class_embed\.", f"class_embed.{L}."),
        (r"^transformer\.enc_out_bbox_embed\.", f"bbox_embed.{L}."),
        (r"^label_enc\.", "denoising.label_enc."),
        (r"^backbone\.0\.", "backbone."),  # Swin (ResNet keys are renamed before the rules)
    )


dino_key = KeyRules(dino_rules())


def _num_decoder_layers(official: Mapping[str, torch.Tensor]) -> int:
    layers = {int(m.group(1)) for k in official if (m := re.match(r"^transformer\.decoder\.layers\.(\d+)\.", k))}
    if not layers:
        raise KeyError("the official checkpoint has no transformer.decoder.layers.*: not a DINO checkpoint")
    return max(layers) + 1


def convert_dino(
    official: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    class_ids: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """`convert_strict` with DINO's key mapping (see the module docstring and `convert_strict`)."""
    rename = KeyRules(dino_rules(_num_decoder_layers(official)))
    rows = {}
    if class_ids is not None and "label_enc.weight" in official:
        rows["label_enc."] = list(class_ids) + [official["label_enc.weight"].shape[0] - 1]
    return convert_strict(
        drop_geometry_buffers(official), target, rename, tied=DINO_TIED, class_ids=class_ids, class_head=DINO_CLASS_HEADS, class_rows=rows
    )

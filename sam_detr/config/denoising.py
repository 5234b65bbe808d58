"""The denoising switch of the configs: DINO's contrastive denoising queries (CDN) added to any model whose
`forward_head` passes its decoder inputs through `DETRBase.with_denoising` (DINO, Deformable DETR, MS-DETR,
SAM-DETR, Plain-DETR with normalised boxes)."""
from typing import List, Sequence

from detectron2.config import LazyCall as L
from omegaconf import ListConfig

from ..modeling import ContrastiveDenoising, DenoisingMatcher, LossGroup
from ..modeling.criterion import DEFAULT_GROUPS

__all__ = ["add_denoising", "appended"]


def add_denoising(model, d_model: int, dn_number: int = 100, label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0):
    """Adds to `model` (a LazyConfig node of a `DETRBase` model) DINO's denoising queries, up to `dn_number`
    positive and as many negative per image in training (see `ContrastiveDenoising`), `d_model` wide as the
    model's decoder; and to its criterion their loss group ("dn_outputs", losses `<loss>_dn` and
    `<loss>_dn_{i}`, matched by construction, zeros in a batch without targets), weighted as the matching
    queries' losses. Defaults: DINO's published settings. Returns `model`."""
    model.denoising = L(ContrastiveDenoising)(
        num_classes="${..criterion.num_classes}", d_model=d_model, dn_number=dn_number,
        label_noise_ratio=label_noise_ratio, box_noise_scale=box_noise_scale,
    )
    group = L(LossGroup)(
        key="dn_outputs", suffix="_dn", matcher=L(DenoisingMatcher)(), zeros_when_absent=True, index_after_suffix=True
    )
    groups = model.criterion.get("groups", list(DEFAULT_GROUPS))
    if isinstance(groups, (list, ListConfig)):
        model.criterion.groups = [*groups, group]
    else:  # the groups are a call's result (Plain-DETR's hybrid_matching_groups)
        model.criterion.groups = L(appended)(items=groups, more=[group])
    return model


def appended(items: Sequence, more: Sequence) -> List:
    """`items` then `more`, one list (a config's list that is a call's result, extended)."""
    return [*items, *more]

"""Query groups: the decoder's query set as contiguous groups, which queries see which in self-attention, and
which outputs each group's predictions feed (Plain-DETR's hybrid matching; denoising queries).

Per-layer predictions are dicts of (L, B, Q, ...) tensors, L decoder layers, Q the whole query set; a group's
outputs are the `layer_outputs` of its slice of them.
"""
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["QueryGroup", "QueryGroups", "layer_outputs"]


def layer_outputs(predictions: Mapping[str, torch.Tensor]) -> Dict:
    """Every decoder layer's predictions, name -> (L, B, Q, ...) (at least "pred_logits" and "pred_boxes"), as
    the criterion reads them: the last layer's under their names, the earlier layers' as "aux_outputs" (a list
    of such dicts, first layer first)."""
    num_layers = len(next(iter(predictions.values())))
    layers = [{k: v[i] for k, v in predictions.items()} for i in range(num_layers)]
    return {**layers[-1], "aux_outputs": layers[:-1]}


@dataclass(frozen=True)
class QueryGroup:
    """A contiguous slice of the decoder's queries.

    Args:
        size: its number of queries.
        key: where its predictions go: the top-level outputs (None, the queries that inference reads) or
            `outputs[key]` (a loss group of the criterion reads them there).
        blocks: its queries split into this many equal blocks that do not see each other (denoising groups).
        sees: the keys of the other groups whose queries its queries attend to (a query always sees the
            queries of its own block).
    """

    size: int
    key: Optional[str] = None
    blocks: int = 1
    sees: Tuple[Optional[str], ...] = ()


class QueryGroups:
    """The decoder's query set as groups, in order (see `QueryGroup`); exactly one group feeds the top-level
    outputs (key None). The default visibility (no `sees`) keeps every group to itself: H-DETR's hybrid
    matching (one-to-one and one-to-many queries decoded together, unseen by each other). DINO's denoising:
    a group of `blocks` denoising groups that see the matching queries, which do not see them.
    """

    def __init__(self, groups: Sequence[QueryGroup]):
        groups = list(groups)
        keys = [g.key for g in groups]
        if keys.count(None) != 1:
            raise ValueError(f"exactly one query group must feed the top-level outputs (key None), got keys {keys}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"query group keys must be distinct, got {keys}")
        for g in groups:
            if g.size < 1 or g.blocks < 1 or g.size % g.blocks:
                raise ValueError(f"query group {g.key!r}: {g.size} queries cannot form {g.blocks} equal blocks")
            unknown = [k for k in g.sees if k not in keys or k == g.key]
            if unknown:
                raise ValueError(f"query group {g.key!r} sees {unknown}, which are not other groups ({keys})")
        self.groups = groups

    @classmethod
    def single(cls, num_queries: int) -> "QueryGroups":
        """One group of `num_queries`, feeding the top-level outputs."""
        return cls([QueryGroup(num_queries)])

    @property
    def num_queries(self) -> int:
        return sum(g.size for g in self.groups)

    def slices(self) -> List[Tuple[QueryGroup, slice]]:
        """Each group with its slice of the query set."""
        out, start = [], 0
        for g in self.groups:
            out.append((g, slice(start, start + g.size)))
            start += g.size
        return out

    def attention_mask(self, device=None) -> Optional[torch.Tensor]:
        """(Q, Q) bool, True where query i may not attend to query j; None when every query sees every other."""
        if len(self.groups) == 1 and self.groups[0].blocks == 1:
            return None
        Q = self.num_queries
        blocked = torch.ones((Q, Q), dtype=torch.bool, device=device)
        spans = {g.key: s for g, s in self.slices()}
        for g, s in self.slices():
            block = g.size // g.blocks
            for start in range(s.start, s.stop, block):
                blocked[start : start + block, start : start + block] = False
            for key in g.sees:
                blocked[s, spans[key]] = False
        return blocked

    def select(self, predictions: Mapping[str, torch.Tensor], key: Optional[str] = None) -> Dict:
        """Every layer's predictions of the whole query set, name -> (L, B, Q, ...) -> the `layer_outputs` of
        group `key`'s queries."""
        Q = next(iter(predictions.values())).shape[2]
        if Q != self.num_queries:
            raise ValueError(f"predictions for {Q} queries, the query groups have {self.num_queries}")
        group = next(s for g, s in self.slices() if g.key == key)
        return layer_outputs({k: v[:, :, group] for k, v in predictions.items()})

    def outputs(self, predictions: Mapping[str, torch.Tensor]) -> Dict:
        """Every layer's predictions of the whole query set, name -> (L, B, Q, ...) -> the outputs: the
        `layer_outputs` of the top-level group, with each other group's under its key."""
        others = {g.key: self.select(predictions, g.key) for g in self.groups if g.key is not None}
        return {**self.select(predictions), **others}

"""Contrastive denoising (DINO's CDN): noised copies of the ground truth as extra decoder queries, each
matched to its target by construction.

Every target appears in G groups, twice per group: once as a positive (its box moved by less than half its
size, per side) and once as a negative (moved by between one and two half-sizes), its label flipped to a
random class with probability `label_noise_ratio / 2` in both. A positive learns to reconstruct its target;
a negative learns "no object". The queries of an image are laid out group after group, each group
`m` positive slots then `m` negative slots (m: the most targets of an image in the batch); an image with
fewer targets leaves padding slots (zero content, box logit 0), which take part in the attention as the
official code has them. Batch-first: queries (B, P, C) with P = 2 * G * m, placed before the Q matching
queries of the decoder.
"""
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from ..layers.box_ops import inverse_sigmoid
from .box_coder import BoxCoder
from .query_groups import QueryGroup, QueryGroups
from .transformer.box_refinement import BoxRefinement

__all__ = [
    "ContrastiveDenoising",
    "check_denoising",
    "DenoisingMatcher",
    "DenoisingQueries",
    "denoising_indices",
    "noise_boxes",
    "noise_labels",
    "num_denoising_groups",
]

# DINO's inverse_sigmoid clamp (util/misc.py), for the noised boxes' logits
DINO_EPS = 1e-3


def num_denoising_groups(dn_number: int, max_targets: int) -> int:
    """G, the official rule: `dn_number` positives (and as many negatives) split into groups of the
    largest number of targets of an image, `2 * dn_number // (2 * max_targets)`, at least 1. A
    `dn_number` below 50 is taken (by the official code) as half the number of groups: 2 * dn_number
    groups, whatever the targets."""
    groups = 2 * dn_number
    if max_targets == 0:
        return 1
    if groups >= 100:
        groups = groups // (2 * max_targets)
    elif groups < 1:
        groups = 1
    return max(groups, 1)


def noise_labels(
    labels: torch.Tensor, ratio: float, num_classes: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Each label replaced, with probability `ratio / 2`, by a uniformly drawn class (possibly itself).

    Draws (the official order): one float32 uniform per label, then one int64 class per replaced label.
    Args:
        labels: (N,) int64.
    Returns:
        (N,) int64, a new tensor.
    """
    labels = labels.clone()
    if ratio <= 0:
        return labels
    p = torch.rand(labels.shape, generator=generator, dtype=torch.float32, device=labels.device)
    chosen = torch.nonzero(p < ratio * 0.5).view(-1)
    new = torch.randint(0, num_classes, chosen.shape, generator=generator, dtype=chosen.dtype, device=labels.device)
    return labels.scatter_(0, chosen, new)


def noise_boxes(
    boxes: torch.Tensor, negative: torch.Tensor, scale: float, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Each corner moved by `u * (w/2 or h/2) * scale` with a random sign, u uniform in [0, 1) for a
    positive and in [1, 2) for a negative, then clamped to the image.

    Draws (the official order): the signs as float32 integers in {0, 1}, then the magnitudes in the
    boxes' dtype, both (N, 4).
    Args:
        boxes: (N, 4) normalised (cx, cy, w, h).
        negative: (N,) bool, True for a negative copy.
    Returns:
        (N, 4) (cx, cy, w, h); a negative's corners may cross, leaving w or h <= 0.
    """
    if scale <= 0:
        return boxes.clone()
    half = boxes[:, 2:] / 2
    corners = torch.cat([boxes[:, :2] - half, boxes[:, :2] + half], 1)
    diff = torch.cat([half, half], 1)
    sign = torch.randint(0, 2, boxes.shape, generator=generator, dtype=torch.float32, device=boxes.device) * 2.0 - 1.0
    part = torch.rand(boxes.shape, generator=generator, dtype=boxes.dtype, device=boxes.device)
    part = (part + negative[:, None].to(part.dtype)) * sign
    corners = (corners + part * diff * scale).clamp(min=0.0, max=1.0)
    return torch.cat([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], 1)


def denoising_indices(
    num_targets: List[int], num_groups: int, group_size: int, device: Optional[torch.device] = None
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The matching by construction: per image, (query indices, target indices) of its positive
    queries, group after group: query `g * group_size + j` reconstructs target j."""
    indices = []
    for n in num_targets:
        target = torch.arange(n, dtype=torch.int64, device=device)
        start = torch.arange(num_groups, dtype=torch.int64, device=device) * group_size
        indices.append(((start[:, None] + target).flatten(), target.repeat(num_groups)))
    return indices


class DenoisingQueries(NamedTuple):
    """One batch's denoising queries (see the module docstring for the layout)."""

    content: torch.Tensor  # (B, P, C) the noised labels' embeddings, zeros at padding slots
    boxes: torch.Tensor  # (B, P, 4) the noised boxes as logits (inverse_sigmoid, eps 1e-3), 0 at padding
    num_groups: int  # G
    group_size: int  # 2 * m: m positive slots, then m negative slots

    @property
    def num_queries(self) -> int:
        """P = G * group_size (0 for a batch without targets)."""
        return self.content.shape[1]

    def query_groups(self, groups: QueryGroups, key: str = "dn_outputs") -> QueryGroups:
        """These queries placed before the decoder's `groups`, their predictions under `key`: each denoising
        group sees itself and the queries that feed the top-level outputs (the matching queries); no other
        query sees a denoising one (they must not learn from the answers). Without denoising queries (a batch
        without targets), `groups` as they are."""
        if self.num_queries == 0:
            return groups
        dn = QueryGroup(self.num_queries, key=key, blocks=self.num_groups, sees=(None,))
        return QueryGroups([dn, *groups.groups])

    def prepend(
        self,
        tgt: torch.Tensor,
        query_pos: Optional[torch.Tensor],
        reference: torch.Tensor,
        groups: QueryGroups,
        refinement: BoxRefinement,
        coder: BoxCoder,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, QueryGroups]:
        """The decoder's inputs with these queries before the method's own: what a method feeds its
        `RefiningDecoder` (its `tgt`, `query_pos`, the input of `refinement.start`, and its query groups).

        The denoising queries' content is the noised labels' embedding, their reference the noised boxes
        (`refinement.from_logits`; their centres where the method's first references are points) and their
        position zeros (where the method gives positions; a decoder that positions queries from their
        reference, `query_pos` None, positions them alike).
        Args:
            tgt, query_pos: (B, Q, C) the method's content and position queries (query_pos may be None).
            reference: (B, Q, 2|4) what the method passes to `refinement.start`.
        Returns:
            (tgt, query_pos, reference, groups) over P + Q queries.
        """
        if self.num_queries == 0:
            return tgt, query_pos, reference, groups
        B = tgt.shape[0]
        dn_reference = refinement.from_logits(self.boxes, coder)[..., : reference.shape[-1]]
        tgt = torch.cat([self.content.to(tgt.dtype), tgt.expand(B, -1, -1)], 1)
        if query_pos is not None:
            query_pos = torch.cat([query_pos.new_zeros(self.content.shape), query_pos.expand(B, -1, -1)], 1)
        reference = torch.cat([dn_reference.to(reference.dtype), reference.expand(B, -1, -1)], 1)
        return tgt, query_pos, reference, self.query_groups(groups)


class ContrastiveDenoising(nn.Module):
    """Builds the denoising queries of a training batch from its targets (DINO's `prepare_for_cdn`).

    The label embedding is the official `label_enc`: `num_classes + 1` rows (the last one is never
    drawn; it keeps DINO's `dn_labelbook_size + 1` shape).

    Args:
        num_classes: K; labels and flipped labels are in [0, K).
        d_model: C, the width of the content queries.
        dn_number: positives per image and as many negatives, at most (see `num_denoising_groups`).
        label_noise_ratio: twice the probability that a label is flipped.
        box_noise_scale: the corners' noise in half-sizes (DINO trains with 1.0).
    """

    def __init__(
        self,
        num_classes: int,
        d_model: int = 256,
        dn_number: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
    ):
        super().__init__()
        if dn_number < 1:
            raise ValueError(f"dn_number must be at least 1, got {dn_number}")
        self.num_classes = num_classes
        self.dn_number = dn_number
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.label_enc = nn.Embedding(num_classes + 1, d_model)

    def forward(
        self, targets: List[Dict[str, torch.Tensor]], generator: Optional[torch.Generator] = None
    ) -> DenoisingQueries:
        """
        Args:
            targets: per image, "labels" (T_b,) int64 and "boxes" (T_b, 4) normalised (cx, cy, w, h).
            generator: the random draws' source (default: the global one of the targets' device), in
                the official order: label flips, then box noise.
        """
        counts = [len(t["labels"]) for t in targets]
        weight = self.label_enc.weight
        B, C, m = len(targets), weight.shape[1], max(counts, default=0)
        G = num_denoising_groups(self.dn_number, m)
        content = weight.new_zeros((B, 2 * G * m, C))
        boxes = weight.new_zeros((B, 2 * G * m, 4))
        if m == 0:
            return DenoisingQueries(content, boxes, G, 0)
        labels = torch.cat([t["labels"] for t in targets])
        gt_boxes = torch.cat([t["boxes"] for t in targets])
        N, device = len(labels), labels.device
        # 2G blocks of the N targets: block 2g the positives of group g, block 2g + 1 its negatives
        block = torch.arange(2 * G, device=device).repeat_interleave(N)
        noised_labels = noise_labels(labels.repeat(2 * G), self.label_noise_ratio, self.num_classes, generator)
        noised_boxes = noise_boxes(gt_boxes.repeat(2 * G, 1), block % 2 == 1, self.box_noise_scale, generator)
        image = torch.cat([torch.full((n,), b, dtype=torch.int64, device=device) for b, n in enumerate(counts)])
        slot = torch.cat([torch.arange(n, device=device) for n in counts])
        image, slot = image.repeat(2 * G), slot.repeat(2 * G) + block * m
        content[image, slot] = self.label_enc(noised_labels)
        boxes[image, slot] = inverse_sigmoid(noised_boxes, eps=DINO_EPS).to(boxes.dtype)
        return DenoisingQueries(content, boxes, G, 2 * m)

    def keep_in_graph(self, x: torch.Tensor) -> torch.Tensor:
        """`x` plus zero times a label-embedding weight: the embedding takes part in every training graph
        (DDP without find_unused_parameters needs it even for a batch without targets); values unchanged."""
        return x + self.label_enc.weight[0, 0] * 0.0

    def extra_repr(self) -> str:
        return (
            f"dn_number={self.dn_number}, label_noise_ratio={self.label_noise_ratio}, "
            f"box_noise_scale={self.box_noise_scale}"
        )


def check_denoising(
    denoising: ContrastiveDenoising, criterion: nn.Module, box_coder: BoxCoder, key: str = "dn_outputs"
):
    """A model's denoising fits its criterion and its box coding, or a ValueError saying what does not."""
    if denoising.num_classes != criterion.num_classes:
        raise ValueError(f"denoising has {denoising.num_classes} classes, the criterion {criterion.num_classes}")
    if box_coder.pixels:
        raise ValueError(
            f"denoising noises boxes normalised to the image; the model codes boxes in pixels ({box_coder!r})"
        )
    groups = [g for g in criterion.groups if g.key == key]
    if not groups or not isinstance(groups[0].matcher, DenoisingMatcher):
        raise ValueError(
            f"the model has denoising queries but its criterion has no loss group for {key!r} matched by a "
            "DenoisingMatcher (add_denoising in configs/common/denoising.py adds both)"
        )


class DenoisingMatcher(nn.Module):
    """The matcher of a denoising loss group: each positive query is matched to the target it was made from
    (`denoising_indices`), no assignment. The layout is read from the shapes: P queries per image for targets
    of at most m per image are P / (2m) groups of 2m.

    Each target is matched once per group: `matches_per_target` tells the criterion, which scales the
    group's normaliser by it (DINO divides the denoising losses by the number of targets times G).
    """

    @staticmethod
    def _layout(outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]) -> Tuple[int, int]:
        """(G, group size) of the outputs' P queries."""
        P = outputs["pred_logits"].shape[1]
        m = max((len(t["labels"]) for t in targets), default=0)
        if m == 0 or P % (2 * m):
            raise ValueError(f"{P} denoising queries per image are not groups of 2 x {m} (the most targets of an image)")
        return P // (2 * m), 2 * m

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: "pred_logits" (B, P, K) of the denoising queries (see the module docstring for the layout).
            targets: per image, "labels" (T_b,) the targets the queries were made from.
        Returns:
            per image, (query indices, target indices), int64 CPU tensors of length G * T_b.
        """
        return denoising_indices([len(t["labels"]) for t in targets], *self._layout(outputs, targets))

    def matches_per_target(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]) -> int:
        """G: how many queries reconstruct each target."""
        return self._layout(outputs, targets)[0]

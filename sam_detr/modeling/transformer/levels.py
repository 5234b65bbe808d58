"""Multi-level feature maps flattened into one token sequence, as the deformable transformers read them.

Batch-first throughout: a level is (B, C, H_l, W_l); the flattened sequence (B, S, C), S = sum_l H_l * W_l,
levels concatenated finest first.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ...layers.level_shapes import level_shapes, shapes_tensor

__all__ = [
    "FlattenedLevels", "flatten_levels", "level_pixels", "pad_levels", "padding_mask", "resize_mask", "valid_ratios",
    "valid_sizes",
]


def valid_sizes(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) mask, True on padding -> (B, 2) int64: the unpadded size (w, h) of each image's map.

    Counted along the first row and column, as the official code does (padding is bottom/right).
    """
    return torch.stack([torch.sum(~mask[:, 0, :], 1), torch.sum(~mask[:, :, 0], 1)], -1)


def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) mask, True on padding -> (B, 2): the unpadded fraction (w, h) of the map."""
    _, H, W = mask.shape
    # torch.tensor, not new_tensor: torch.export would freeze new_tensor's sizes at the example's
    return valid_sizes(mask).float() / torch.tensor([W, H], dtype=torch.float32, device=mask.device)


def level_pixels(
    xy: torch.Tensor, spatial_shape: Tuple[int, int], valid_ratio: torch.Tensor, sizes: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """(B, ..., 2) points (x, y) normalised to each image's unpadded extent -> pixels of a feature level.

    Args:
        spatial_shape: (H, W) of the padded level; valid_ratio: (B, 2) its unpadded fraction (w, h).
        sizes: (B, 2) each image's exact size (w, h) on the level (exact masks: `batch_invariant`): the
            points scale by it, so an image's pixels do not depend on the batch's padding. None: by the
            padded size, then by `valid_ratio`, as the official code (SAM-DETR; its rounding depends on the
            padding).
    """
    view = (xy.shape[0],) + (1,) * (xy.dim() - 2) + (2,)
    if sizes is not None:
        return xy * sizes.to(valid_ratio.dtype).view(view)
    H, W = spatial_shape
    # torch.tensor, not new_tensor: torch.export would freeze new_tensor's sizes at the example's
    return xy * torch.tensor([W, H], dtype=xy.dtype, device=xy.device) * valid_ratio.view(view)


def pad_levels(per_image: Sequence[Sequence[torch.Tensor]]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Per image, its levels (1, C, h_l, w_l) computed at its own size -> per level, the batch (B, C,
    H_l, W_l) zero-padded at the bottom/right and its exact (B, H_l, W_l) mask, True on padding."""
    features, masks = [], []
    for level in zip(*per_image):
        H = max(f.shape[-2] for f in level)
        W = max(f.shape[-1] for f in level)
        batch = level[0].new_zeros((len(level), level[0].shape[1], H, W))
        level_mask = torch.ones((len(level), H, W), dtype=torch.bool, device=batch.device)
        for i, f in enumerate(level):
            h, w = f.shape[-2:]
            batch[i, :, :h, :w] = f[0]
            level_mask[i, :h, :w] = False
        features.append(batch)
        masks.append(level_mask)
    return features, masks


def padding_mask(image_sizes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, 2) int64 (h, w) of images padded at the bottom/right to `size` (H, W) -> (B, H, W) bool, True on
    padding. Tensor ops only, so that an exported graph builds the mask from its inputs."""
    H, W = size
    rows = torch.arange(H, device=image_sizes.device).view(1, H, 1)
    cols = torch.arange(W, device=image_sizes.device).view(1, 1, W)
    return (rows >= image_sizes[:, 0, None, None]) | (cols >= image_sizes[:, 1, None, None])


def nearest_indices(n_in: int, n_out: int, device=None) -> torch.Tensor:
    """(n_out,) int64: the source index of each output index of torch's nearest resizing (F.interpolate's
    "nearest" to a size): floor(i * (n_in / n_out)) in float32, at most n_in - 1."""
    sizes = torch.tensor([n_in, n_out], dtype=torch.float32, device=device)  # symbolic sizes while exporting
    i = torch.arange(n_out, dtype=torch.float32, device=device)
    return (i * (sizes[0] / sizes[1])).floor().long().clamp(max=n_in - 1)


def resize_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """(B, H, W) image mask -> (B, h, w) mask of a feature level, by nearest sampling as the official code.
    While exporting, as gathers of `nearest_indices`: ONNX Resize computes its scale as out / in and picks
    another pixel than torch for some sizes (a padded image's level masks then differ)."""
    if torch.compiler.is_exporting():
        H, W = mask.shape[-2:]
        rows, cols = nearest_indices(H, size[0], mask.device), nearest_indices(W, size[1], mask.device)
        return mask.index_select(1, rows).index_select(2, cols)
    return F.interpolate(mask[None].float(), size=size).to(torch.bool)[0]


class FlattenedLevels(NamedTuple):
    """Feature levels flattened and concatenated, finest first (see `flatten_levels`): the encoder's input
    and the memory every decoder reads, built once per image batch."""

    src: torch.Tensor  # (B, S, C)
    mask: torch.Tensor  # (B, S) bool, True on padding
    pos: Optional[torch.Tensor]  # (B, S, C), with the level embedding when one was given
    spatial_shapes: torch.Tensor  # (L, 2) int64, (H_l, W_l)
    level_start_index: torch.Tensor  # (L,) int64
    valid_ratios: torch.Tensor  # (B, L, 2), (w, h)
    # the masks are exact and padding is masked exactly wherever the official code lets it leak (Plain-DETR's
    # -100 logits; SAM-DETR's RoIAlign and points placed by the padded size), so that an image's results do
    # not depend on its batch (the model's `batch_invariant`)
    batch_invariant: bool = False

    def level_sizes(self) -> List[int]:
        return [h * w for h, w in level_shapes(self.spatial_shapes, self.src.shape[1])]

    def valid_sizes(self) -> torch.Tensor:
        """(B, L, 2) int64: each image's unpadded size (w, h) on each level (see `valid_sizes`)."""
        B = self.mask.shape[0]
        shapes = self.spatial_shapes.tolist()
        return torch.stack([valid_sizes(m.view(B, h, w)) for m, (h, w) in zip(self.split(self.mask), shapes)], 1)

    def split(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, S, ...) -> per level, (B, H_l * W_l, ...)."""
        return list(x.split(self.level_sizes(), 1))

    def level(self, index: int) -> "FlattenedLevels":
        """Level `index` alone (views of its tokens)."""
        sizes = self.level_sizes()
        tokens = slice(sum(sizes[:index]), sum(sizes[: index + 1]))
        return FlattenedLevels(
            src=self.src[:, tokens],
            mask=self.mask[:, tokens],
            pos=None if self.pos is None else self.pos[:, tokens],
            spatial_shapes=self.spatial_shapes[index : index + 1],
            level_start_index=self.level_start_index.new_zeros(1),
            valid_ratios=self.valid_ratios[:, index : index + 1],
            batch_invariant=self.batch_invariant,
        )

    def as_map(self) -> torch.Tensor:
        """A single level's tokens as its (B, C, H, W) map, contiguous."""
        if len(self.spatial_shapes) != 1:
            raise ValueError(f"as_map needs a single level, these are {len(self.spatial_shapes)}")
        (H, W), (B, _, C) = level_shapes(self.spatial_shapes, self.src.shape[1])[0], self.src.shape
        return self.src.transpose(1, 2).reshape(B, C, H, W).contiguous()


def flatten_levels(
    srcs: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    pos: Optional[Sequence[torch.Tensor]] = None,
    level_embed: Optional[torch.Tensor] = None,
    copy: bool = True,
) -> FlattenedLevels:
    """
    Args:
        srcs, pos: per level, (B, C, H_l, W_l); masks: per level, (B, H_l, W_l) bool, True on padding.
            pos None: no position embedding.
        level_embed: (L, C), added to every position of its level (Deformable DETR's `level_embed`).
        copy: False: a single level's tokens are views of its map, not a contiguous copy (as Plain-DETR's
            official code reads its one map; the projections round as there).
    """
    if not len(srcs) == len(masks) == len(srcs if pos is None else pos):
        raise ValueError(f"got {len(srcs)} feature levels, {len(masks)} masks and {len(pos)} position embeddings")
    if level_embed is not None and level_embed.shape[0] != len(srcs):
        raise ValueError(f"level_embed has {level_embed.shape[0]} levels, the features {len(srcs)}")
    flat_pos = None if pos is None else [p.flatten(2).transpose(1, 2) for p in pos]
    if level_embed is not None and flat_pos is not None:
        flat_pos = [p + e.view(1, 1, -1) for p, e in zip(flat_pos, level_embed)]
    spatial_shapes = shapes_tensor(srcs)
    level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
    join = (lambda xs: xs[0]) if len(srcs) == 1 and not copy else (lambda xs: torch.cat(xs, 1))
    return FlattenedLevels(
        src=join([s.flatten(2).transpose(1, 2) for s in srcs]),
        mask=join([m.flatten(1) for m in masks]),
        pos=None if flat_pos is None else join(flat_pos),
        spatial_shapes=spatial_shapes,
        level_start_index=level_start_index,
        valid_ratios=torch.stack([valid_ratios(m) for m in masks], 1),
    )

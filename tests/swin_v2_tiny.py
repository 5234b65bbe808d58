"""A tiny SwinV2 for the backbone, converter and solver tests: window 4, global blocks in the last stage as
Plain-DETR's `_2global` backbones, 8 channels."""
import torch

TINY_SWINV2 = dict(
    embed_dim=8,
    depths=(1, 1, 2, 2),
    num_heads=(1, 2, 2, 4),
    window_size=4,
    pretrained_window_sizes=(4, 4, 4, 2),
    global_blocks=((), (), (), (0, 1)),
)


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights moved away from the init (the res-post-norm gains start at 0, which would hide the blocks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model

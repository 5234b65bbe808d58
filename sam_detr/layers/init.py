"""Initialisations shared by the transformer models."""
from torch import nn

__all__ = ["trunc_normal_init_"]


def trunc_normal_init_(module: nn.Module) -> None:
    """The ViT/Swin initialisation of one module (for `Module.apply`): a Linear gets trunc-normal(0.02) weights
    and zero bias, a LayerNorm (1, 0); other modules are left as they are."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

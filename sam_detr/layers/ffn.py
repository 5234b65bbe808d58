"""The feed-forward block of every DETR-family transformer layer (post-norm; pre-norm for Plain-DETR)."""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FFN"]


class FFN(nn.Module):
    """`norm(x + dropout(linear2(dropout(relu(linear1(x))))))`, post-norm as in every official layer.

    The official layers hold these modules directly (`linear1`, `linear2` and `norm2` or `norm3`; MS-DETR's
    one-to-many FFN `linear3`, `linear4`, `norm4`); here they are one submodule, and the converters map the
    names (see `sam_detr.checkpoint.keys`).

    Args:
        d_model: C, the width of the layer.
        dim_feedforward: the hidden width.
        dropout: after the activation and on the residual branch.
        pre_norm: `x + dropout2(linear2(dropout1(relu(linear1(norm(x))))))` instead (Plain-DETR's decoder).
    """

    def __init__(self, d_model: int = 256, dim_feedforward: int = 2048, dropout: float = 0.1, pre_norm: bool = False):
        super().__init__()
        self.pre_norm = pre_norm
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)"""
        if self.pre_norm:
            return x + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(self.norm(x))))))
        return self.norm(x + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(x))))))

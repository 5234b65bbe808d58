"""Trainer hooks."""
import torch
from detectron2.engine import HookBase

__all__ = ["GradientClipHook"]


class GradientClipHook(HookBase):
    """Clips the gradient norm of all trained parameters together, as the official DETR-family code
    (`clip_grad_norm_(model.parameters(), 0.1)`), between backward and the optimizer step.

    Under AMP the gradients are unscaled first, so that the threshold applies to the true gradients
    (the GradScaler remembers it and does not unscale them again in `step`). The total norm before
    clipping is logged as `grad_norm`.
    """

    def __init__(self, max_norm: float = 0.1, norm_type: float = 2.0):
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm = max_norm
        self.norm_type = norm_type

    def after_backward(self):
        optimizer = self.trainer.optimizer
        scaler = getattr(self.trainer, "grad_scaler", None)
        if scaler is not None and scaler.is_enabled():
            scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, self.norm_type)
        self.trainer.storage.put_scalar("grad_norm", float(norm), smoothing_hint=True)

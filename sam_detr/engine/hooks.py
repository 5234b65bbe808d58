"""Trainer hooks."""
import logging
from typing import Dict, Optional

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..utils.rng import capture_rng_state, restore_rng_state

__all__ = ["GradientClipHook", "TrainingStateHook"]

logger = logging.getLogger(__name__)


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


class TrainingStateHook(HookBase):
    """Puts into every checkpoint what a resumed run needs, beyond the weights, the optimizer and the
    iteration that Detectron2 saves, to go on exactly as the interrupted run would have: the random states
    of every process (torch, CUDA, numpy, Python; see sam_detr/utils/rng.py) and the position of the train
    loader's data stream (`TrainLoader.state_dict`). The learning-rate schedule is a function of the
    iteration, which d2 saves.

    Register it before the `PeriodicCheckpointer` of the same `period`: at the iterations where that one
    saves, this one gathers the states of all processes first (the checkpoint is written by the first
    process only), after the iteration's step, i.e. as the next iteration will find them.

    Args:
        period, max_iter: those of the PeriodicCheckpointer.
    """

    def __init__(self, period: int, max_iter: Optional[int] = None):
        self.period = period
        self.max_iter = max_iter
        self._rng_states = None

    def before_train(self):
        if not hasattr(self.trainer.data_loader, "state_dict"):
            logger.warning(
                f"the train loader ({type(self.trainer.data_loader).__name__}) has no state_dict: --resume "
                "restarts its stream, so a resumed run sees other images than the interrupted one would have "
                "(sam_detr.data.TrainLoader resumes exactly)"
            )

    def after_step(self):
        iteration = self.trainer.iter
        if (iteration + 1) % self.period == 0 or (self.max_iter is not None and iteration >= self.max_iter - 1):
            self._rng_states = comm.all_gather(capture_rng_state())

    def state_dict(self) -> Dict:
        rng = self._rng_states if self._rng_states is not None else [capture_rng_state()]
        state = {"rng": rng}
        loader = self.trainer.data_loader
        if hasattr(loader, "state_dict"):
            state["data"] = loader.state_dict()
        return state

    def load_state_dict(self, state: Dict) -> None:
        rng = state["rng"]
        world_size, rank = comm.get_world_size(), comm.get_rank()
        if len(rng) == world_size:
            restore_rng_state(rng[rank])
        else:
            logger.warning(
                f"the checkpoint holds the random states of {len(rng)} process(es), this run has {world_size}: "
                "they are not restored, so random draws (e.g. dropout) differ from the interrupted run's"
            )
        loader = self.trainer.data_loader
        if "data" in state and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(state["data"])

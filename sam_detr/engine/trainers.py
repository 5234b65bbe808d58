"""Detectron2's trainers, stopping at the first non-finite loss on every process at once; mixed precision on
any device.

d2 checks the summed loss on the first process only, after reducing it, and names neither the loss terms
nor the process; the other processes of a distributed run step on. Here every process checks its own loss
terms before the optimizer step, the processes agree through one all-reduce of a flag, and all raise
`NonFiniteLossError` naming the iteration and each non-finite term with its process: the weights are not
updated with it, and the last checkpoint stays the last good state (`--resume` continues from it).

d2's AMPTrainer runs on CUDA only, in float16 or bfloat16, with gradient scaling in both. `AMPTrainer` here
autocasts on the model's device (CUDA or CPU) and scales the gradients in float16 only: bfloat16 has
float32's exponent range, so its gradients neither underflow nor need unscaling. What must stay in float32
(the matcher's costs, the losses) does so in the criterion (`SetCriterion`), whatever the trainer.
"""
import time
from typing import Dict

import torch
import torch.distributed as dist
from detectron2.engine import AMPTrainer as _AMPTrainer
from detectron2.engine import SimpleTrainer as _SimpleTrainer
from detectron2.utils import comm

__all__ = ["NonFiniteLossError", "SimpleTrainer", "AMPTrainer", "check_finite_losses"]


class NonFiniteLossError(FloatingPointError):
    """A loss term was NaN or infinite; the message names the iteration, the terms and their process."""


def check_finite_losses(loss_dict: Dict[str, torch.Tensor], iteration: int) -> None:
    """Raises NonFiniteLossError on every process if a term of `loss_dict` is not finite on any of them."""
    bad = {k: v.detach().float().mean().item() for k, v in loss_dict.items() if not torch.isfinite(v).all()}
    if comm.get_world_size() > 1:
        device = next(iter(loss_dict.values())).device if loss_dict else torch.device("cpu")
        flag = torch.tensor([float(bool(bad))], device=device)
        dist.all_reduce(flag)
        if flag.item() == 0:
            return
        per_process = comm.all_gather(bad)
    elif not bad:
        return
    else:
        per_process = [bad]
    terms = "; ".join(
        f"{k} = {v} (process {rank})" for rank, terms in enumerate(per_process) for k, v in sorted(terms.items())
    )
    raise NonFiniteLossError(
        f"non-finite loss at iteration {iteration}: {terms}. The optimizer did not step with it; the last "
        "checkpoint of train.output_dir is the last good state (continue with --resume, e.g. after lowering "
        "the learning rate or checking the data)"
    )


class _StopAtNonFiniteLoss:
    def _write_metrics(self, loss_dict, data_time: float, prefix: str = "", iter=None) -> None:
        # called in run_step after the backward pass and before the optimizer step
        check_finite_losses(loss_dict, self.iter if iter is None else iter)
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class SimpleTrainer(_StopAtNonFiniteLoss, _SimpleTrainer):
    """d2's SimpleTrainer, stopping at the first non-finite loss term (see the module docstring)."""


class AMPTrainer(_StopAtNonFiniteLoss, _AMPTrainer):
    """d2's AMPTrainer on the model's device, CUDA or CPU, stopping at the first non-finite loss term (see the
    module docstring).

    Args:
        precision: torch.float16 (gradients scaled by a GradScaler) or torch.bfloat16 (not scaled).
        (the other arguments: d2's AMPTrainer's)
    """

    def __init__(self, model, data_loader, optimizer, precision: torch.dtype = torch.float16, **kwargs):
        if precision not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AMP precision must be torch.float16 or torch.bfloat16, got {precision}")
        self.device_type = next(model.parameters()).device.type
        if "grad_scaler" not in kwargs:
            kwargs["grad_scaler"] = torch.amp.GradScaler(self.device_type, enabled=precision == torch.float16)
        super().__init__(model, data_loader, optimizer, precision=precision, **kwargs)

    def run_step(self):
        """d2's AMP step, autocast on the model's device."""
        assert self.model.training, "[AMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

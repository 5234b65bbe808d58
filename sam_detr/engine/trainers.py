"""Detectron2's trainers, stopping at the first non-finite loss on every process at once.

d2 checks the summed loss on the first process only, after reducing it, and names neither the loss terms
nor the process; the other processes of a distributed run step on. Here every process checks its own loss
terms before the optimizer step, the processes agree through one all-reduce of a flag, and all raise
`NonFiniteLossError` naming the iteration and each non-finite term with its process: the weights are not
updated with it, and the last checkpoint stays the last good state (`--resume` continues from it).
"""
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
    """d2's AMPTrainer, stopping at the first non-finite loss term (see the module docstring)."""

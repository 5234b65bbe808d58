"""Forward hooks that record what modules of a model are called with and what they return: the tensors the
pictures of `sam_detr.visualization` are made from are the model's own, captured as it runs, never
recomputed by a second implementation. With no recorder active a model carries no hook and runs as always.
"""
import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

from torch import nn

__all__ = ["Call", "CallRecorder"]


@dataclass
class Call:
    """One call of a module: its arguments by the names of its `forward` (defaults filled in) and its output."""

    inputs: Dict[str, Any]
    output: Any


def bind_arguments(module: nn.Module, args: tuple, kwargs: dict) -> Dict[str, Any]:
    """The arguments of a call of `module` by the parameter names of its forward, with the defaults."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _return_attention_weights(module: nn.Module, args: tuple, kwargs: dict):
    """Pre-hook of an `nn.MultiheadAttention`: the call also returns its per-head weights (B, M, Q, S), which
    a caller asking for none lets the fused kernel skip (the output is the same up to rounding)."""
    inputs = bind_arguments(module, args, kwargs)
    inputs.update(need_weights=True, average_attn_weights=False)
    return (), inputs


class CallRecorder:
    """Records every call of the named modules while it is active (a context manager).

    Args:
        modules: name -> module to record.
        attention_weights: names (among `modules`) of `nn.MultiheadAttention`s whose per-head weights are
            recorded too: their calls return them whatever the caller asked (its output's second element).
    """

    def __init__(self, modules: Mapping[str, nn.Module], attention_weights=()):
        unknown = [n for n in attention_weights if n not in modules]
        if unknown:
            raise KeyError(f"attention_weights {unknown} are not among the recorded modules {list(modules)}")
        self.modules = dict(modules)
        self.attention_weights = set(attention_weights)
        self._calls: Dict[str, List[Call]] = {name: [] for name in self.modules}
        self._handles = []

    def __enter__(self) -> "CallRecorder":
        for name, module in self.modules.items():
            if name in self.attention_weights:
                self._handles.append(module.register_forward_pre_hook(_return_attention_weights, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._recorder(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _recorder(self, name: str):
        def hook(module, args, kwargs, output):
            self._calls[name].append(Call(bind_arguments(module, args, kwargs), output))

        return hook

    def calls(self, name: str) -> List[Call]:
        return self._calls[name]

    def only(self, name: str) -> Call:
        """The one call of module `name`; a ValueError if it was called another number of times."""
        calls = self._calls[name]
        if len(calls) != 1:
            raise ValueError(f"{name} ran {len(calls)} times in one forward pass; its picture needs exactly one call")
        return calls[0]

"""The random states a training run draws from (torch CPU and CUDA, numpy, Python), as checkpointable data.

A resumed run continues exactly only if it draws the same numbers as the run it continues: the checkpoint
stores these states (`capture_rng_state`) and the resumed run restores them (`restore_rng_state`).
Code that must not disturb them (the data loading of the main process, an evaluation in the middle of
training) runs under `preserved_rng()`. The states are stored as tensors, ints and lists, so that
`torch.load(..., weights_only=True)` reads them.
"""
import contextlib
import random
from typing import Dict

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state", "preserved_rng", "seed_all_from"]


def capture_rng_state() -> Dict:
    """The current states of torch (CPU, every CUDA device), numpy's global generator and Python's `random`."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng_state(state: Dict) -> None:
    """Sets the states captured by `capture_rng_state`. CUDA states are restored where the device count is
    the same; otherwise a ValueError says so (the run would not continue exactly)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda", [])
    if torch.cuda.is_available() and cuda:
        if len(cuda) != torch.cuda.device_count():
            raise ValueError(
                f"the checkpoint holds the random states of {len(cuda)} CUDA device(s), this process sees "
                f"{torch.cuda.device_count()}"
            )
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


@contextlib.contextmanager
def preserved_rng():
    """Runs the block and then puts every random state back as it was before it."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def seed_all_from(*entropy: int) -> None:
    """Seeds torch, numpy and Python's `random` from the integers `entropy` (e.g. a run's seed and a sample's
    position), so that what is drawn next depends on them alone."""
    words = np.random.SeedSequence([int(e) for e in entropy]).generate_state(2, dtype=np.uint32)
    np.random.seed(words)
    seed = int(words[0]) << 32 | int(words[1])
    random.seed(seed)
    torch.manual_seed(seed)

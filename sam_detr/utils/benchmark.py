"""The one clock and peak-memory meter of the benchmarks under tools/.

`time_calls(step, iters, warmup, device)` times each call of `step` (wall seconds: CUDA events on a GPU,
`time.perf_counter` on the CPU; and the process's CPU seconds, which other load on the machine changes far
less) and measures the peak memory over the warm-up and the timed calls (`PeakMemory`).
"""
import re
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Union

import torch

__all__ = ["PeakMemory", "Timing", "time_calls", "synchronize"]

Device = Union[str, torch.device]


def synchronize(device: Device) -> None:
    """Waits for the device's queued work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE).group(1))


class PeakMemory:
    """The peak memory of a `with` block, in MiB.

    On CUDA, `peak_mib` is torch.cuda.max_memory_allocated over the block and `rise_mib` its rise above the
    memory allocated at the start. On the CPU (Linux), `peak_mib` is the process's peak resident memory
    (VmHWM, reset to the resident size at the start through /proc/self/clear_refs) and `rise_mib` its rise
    above the resident memory at the start; both None where /proc cannot do that. Freed CPU memory that the
    allocator keeps (glibc keeps large blocks once its mmap threshold has grown) is not given back between
    blocks: a tool measuring several blocks in one process fixes `MALLOC_MMAP_THRESHOLD_`.
    """

    def __init__(self, device: Device = "cpu"):
        self.device = torch.device(device)
        self.peak_mib: Optional[float] = None
        self.rise_mib: Optional[float] = None
        self._start: Optional[float] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak (VmHWM) to the current resident size
            self._start = _proc_status_kib("VmRSS") / 1024
        except (OSError, AttributeError):  # not Linux, or /proc without clear_refs
            self._start = None
        return self

    def __exit__(self, *exc_info) -> None:
        if self._start is None:
            return
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak_mib = _proc_status_kib("VmHWM") / 1024
        self.rise_mib = self.peak_mib - self._start


@dataclass
class Timing:
    """`time_calls`' measurements: seconds of each timed call, and the memory over all calls."""

    wall: List[float]
    cpu: List[float]  # the process's CPU seconds (all its threads; on CUDA the host's work only)
    memory: PeakMemory

    def seconds(self, clock: str = "wall", statistic: str = "mean") -> float:
        """One call's seconds on `clock` ("wall" or "cpu"): the "mean", "median" or "min" over the calls."""
        values = {"wall": self.wall, "cpu": self.cpu}[clock]
        return {"mean": statistics.fmean, "median": statistics.median, "min": min}[statistic](values)


def time_calls(
    step: Callable[..., Any],
    iters: int,
    warmup: int = 1,
    device: Device = "cpu",
    setup: Optional[Callable[[], Any]] = None,
) -> Timing:
    """Calls `step` `warmup` times, then `iters` times timed one by one; with `setup`, each call is
    `step(setup())`, `setup` untimed (e.g. a forward pass whose backward alone is timed). On CUDA each call
    is timed by events on the current stream (no synchronisation between calls); on the CPU by
    `time.perf_counter`. Peak memory covers the warm-up and the timed calls."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"iters must be positive and warmup not negative, got iters={iters}, warmup={warmup}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    call = step if setup is None else (lambda: step(setup()))
    wall, cpu = [], []
    with PeakMemory(device) as memory:
        for _ in range(warmup):
            call()
        synchronize(device)
        events = []
        for _ in range(iters):
            argument = () if setup is None else (setup(),)
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            step(*argument)
            wall_end, cpu_end = time.perf_counter(), time.process_time()
            if cuda:
                end.record()
                events.append((start, end))
            wall.append(wall_end - wall_start)
            cpu.append(cpu_end - cpu_start)
        synchronize(device)
    if cuda:
        wall = [start.elapsed_time(end) / 1e3 for start, end in events]
    return Timing(wall, cpu, memory)

"""sam_detr.utils.benchmark: what the benchmarks under tools/ time and how they measure memory."""
import mmap
import os
import time

import pytest

from sam_detr.utils.benchmark import PeakMemory, time_calls


def test_each_call_is_timed_without_its_setup():
    calls = []

    def setup():
        calls.append("setup")
        time.sleep(0.1)  # untimed
        return len(calls)

    def step(argument):
        calls.append(argument)

    timing = time_calls(step, iters=3, warmup=2, setup=setup)
    # every call gets a fresh setup's result, the warm-up included
    assert calls == ["setup", 1, "setup", 3, "setup", 5, "setup", 7, "setup", 9]
    assert len(timing.wall) == len(timing.cpu) == 3
    assert all(0 <= s < 0.1 for s in timing.wall)
    assert timing.seconds("wall", "min") <= timing.seconds("wall", "median") <= max(timing.wall)


def test_cpu_clock_counts_work_not_waiting():
    def busy():  # about as much CPU as wall time
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass

    timing = time_calls(busy, iters=2, warmup=0)
    assert all(c >= 0.05 for c in timing.cpu)
    idle = time_calls(lambda: time.sleep(0.05), iters=2, warmup=0)
    assert all(w >= 0.05 for w in idle.wall) and all(c < 0.05 for c in idle.cpu)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="the CPU memory is read from Linux's /proc")
def test_peak_memory_is_the_rise_over_the_block():
    """64 MiB mapped, written and unmapped inside the block: the peak rises by it, though it is gone at the end
    (an anonymous mapping: memory that the allocator kept from earlier tests cannot absorb it)."""
    size = 64 * 2**20
    with PeakMemory("cpu") as memory:
        block = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):  # every page resident
            block[offset] = 1
        block.close()
    if memory.rise_mib is None:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert 63 <= memory.rise_mib < 100 and memory.peak_mib >= memory.rise_mib
    with PeakMemory("cpu") as nothing:
        pass
    assert nothing.rise_mib < 8


def test_bad_counts():
    with pytest.raises(ValueError, match="iters"):
        time_calls(lambda: None, iters=0)

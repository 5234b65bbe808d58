"""tools/benchmark_dtype.py on a tiny DETR on the CPU: time per image and per training step at float32 and bfloat16
side by side, and where the time goes (its AP path runs in tests/tools/test_own_data.py)."""
import re

import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from tool_helpers import QUICKSTART, TINY_DETR, run_tool, tool_env  # noqa: E402


def test_benchmark_dtype_prints_times_and_profiles(tmp_path_factory):
    out = run_tool(
        "benchmark_dtype", "--config-file", QUICKSTART, "--sizes", "64x96", "80x64", "--train-sizes", "64x96", "--iters", "1",
        "--warmup", "0", "--threads", "1", "--profile", "64x96", *TINY_DETR, env=tool_env(tmp_path_factory),
    ).stdout
    assert "1 thread(s), cpu seconds of the model's forward" in out
    for measure in ("s/image, 64x96", "s/image, 80x64", "s/training step, 64x96"):
        row = re.search(rf"\| {measure} \| (\S+) s \| (\S+) s \| (\S+)x faster \|", out)
        assert row and float(row.group(1)) > 0 and float(row.group(2)) > 0, out
        # the speed-up of the unrounded seconds: within what the printed ones' last digit allows
        full, half = float(row.group(1)), float(row.group(2))
        assert (full - 5e-4) / (half + 5e-4) - 0.005 <= float(row.group(3)) <= (full + 5e-4) / (half - 5e-4) + 0.005
    # where the time goes, per dtype
    assert "float32, 1 image(s) at 64x96, operators by self CPU time" in out and "aten::addmm" in out
    assert "bfloat16, 1 image(s) at 64x96" in out

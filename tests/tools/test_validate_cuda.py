"""tools/validate_cuda.py: its CPU mode runs every check that can run without a GPU (so that the script stays
runnable for the GPU run), and a failed check fails the run."""
import sys

import pytest
from conftest import HAS_CUDA, HAS_DETECTRON2
from tool_helpers import load_tool, run_tool, tool_env

from sam_detr.layers import _ext

GPU_ONLY = {"cpu-vs-cuda fp64", "side stream", "multi-GPU device guard", "official vs ours"}


def results(stdout: str) -> dict:
    """{check name: status} from the script's "STATUS name: detail" lines."""
    rows = {}
    for line in stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("PASS", "FAIL", "SKIP") and ": " in rest:
            rows[rest.split(": ", 1)[0].strip()] = status
    return rows


@pytest.mark.slow
@pytest.mark.skipif(_ext.get_extension() is None, reason="sam_detr._C is not built")
def test_cpu_mode_passes_every_check_it_can_run(tmp_path_factory):
    out = run_tool("validate_cuda", "--device", "cpu", env=tool_env(tmp_path_factory)).stdout
    rows = results(out)
    assert "FAIL" not in rows.values(), out
    assert {name for name, status in rows.items() if status == "SKIP"} == GPU_ONLY | (
        set() if HAS_DETECTRON2 else {"train smoke"}), out
    for name in ("env", "fp64 vs PyTorch", "edges fp64 vs the official formula", "gradcheck fp64",
                 "autocast float16 + GradScaler", "level table checked",
                 "big value (> 2^31 elements) (small stand-in)"):
        assert rows.get(name) == "PASS", out
    assert out.splitlines()[-1].startswith("0 FAIL, ")


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is visible: the GPU run would start")
def test_a_failed_check_fails_the_run(monkeypatch, capsys):
    """On a machine without GPU the default (GPU) run fails its first check, says why, and exits 1."""
    tool = load_tool("validate_cuda")
    monkeypatch.setattr(sys, "argv", ["validate_cuda.py"])
    with pytest.raises(SystemExit) as exit_info:
        tool.main()
    out = capsys.readouterr().out
    assert exit_info.value.code == 1
    assert results(out) == {"env": "FAIL"}, out
    assert "no CUDA device visible" in out

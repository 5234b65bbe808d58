"""The instruction set of the compiled CPU kernels (csrc/cpu_isa.h): one process-wide choice for every op.

Each op's tests run their CPU cases once per instruction set through the `cpu_isa` fixture (conftest.py).
"""
import os
import subprocess
import sys

import pytest
import torch

from sam_detr.layers import _ext

_C = _ext.get_extension()
needs_ext = pytest.mark.skipif(_C is None, reason="sam_detr._C is not built (python setup.py build_ext --inplace)")
ALL_ISAS = ["default", "avx2", "avx512"]  # narrowest first, as ATEN_CPU_CAPABILITY names them


@needs_ext
def test_default_is_the_widest_that_aten_allows():
    supported = _C.cpu_isas()
    assert supported[0] == "default" and supported == [name for name in ALL_ISAS if name in supported]
    aten = torch.backends.cpu.get_cpu_capability().lower()
    allowed = ALL_ISAS[: ALL_ISAS.index(aten) + 1] if aten in ALL_ISAS else ["default"]
    assert _C.cpu_isa() == [name for name in supported if name in allowed][-1]


@needs_ext
def test_aten_cpu_capability_lowers_the_default():
    """ATEN_CPU_CAPABILITY (read once per process, hence the child) lowers the default; every supported
    instruction set can still be selected."""
    supported = _C.cpu_isas()
    if len(supported) < 2:
        pytest.skip("this CPU runs only the default kernels")
    lowered = supported[-2]
    # the extension file itself, without the sam_detr package (whose import takes seconds)
    code = (
        "import importlib.util, torch\n"
        f"spec = importlib.util.spec_from_file_location('sam_detr._C', {_C.__file__!r})\n"
        "_C = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(_C)\n"
        "print(_C.cpu_isa(), ','.join(_C.cpu_isas()))\n"
        f"_C.set_cpu_isa({supported[-1]!r})\n"
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY=lowered)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [lowered, ",".join(supported)]


@needs_ext
def test_set_cpu_isa_selects_and_returns_the_previous():
    start = _C.cpu_isa()
    try:
        for name in reversed(_C.cpu_isas()):
            previous = _C.cpu_isa()
            assert _C.set_cpu_isa(name) == previous
            assert _C.cpu_isa() == name
    finally:
        _C.set_cpu_isa(start)


@needs_ext
def test_set_cpu_isa_rejects_unknown_and_unsupported():
    start = _C.cpu_isa()
    supported = ", ".join(_C.cpu_isas())
    for name in ("sse9", "AVX2", ""):
        with pytest.raises(RuntimeError, match=f"unknown instruction set '{name}'; supported: {supported}"):
            _C.set_cpu_isa(name)
    for name in set(ALL_ISAS) - set(_C.cpu_isas()):
        with pytest.raises(RuntimeError, match=f"the {name} CPU kernels cannot run here"):
            _C.set_cpu_isa(name)
    assert _C.cpu_isa() == start

"""The CUDA build of sam_detr._C: what setup.py decides (CUDA kernels or not, which architectures), and that
the CUDA sources compile for a GPU architecture without vector atomics with nvcc alone (device code, no GPU,
no CUDA build of the extension): a kernel that compiles for sm_90 only fails here on any machine with a CUDA
toolkit, also where the extension is built for the CPU. The compile is skipped without nvcc.

SAM_DETR_NVCC_ARCHS="7.5;8.0;8.6;8.9;9.0;10.0;12.0" compiles for other architectures (default 8.0); one this
nvcc cannot compile for is skipped with that reason.
"""
import importlib.util
import os
import re
import shutil
import subprocess

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

from conftest import REPO_ROOT


@pytest.fixture
def setup_py(monkeypatch):
    """setup.py as a module (its setup() call runs only as __main__), with FORCE_CUDA and
    TORCH_CUDA_ARCH_LIST unset."""
    monkeypatch.delenv("FORCE_CUDA", raising=False)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    spec = importlib.util.spec_from_file_location("sam_detr_setup", REPO_ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_toolkit(root):
    for part in ("bin/nvcc", "include/cuda_runtime.h"):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        (root / part).write_text("")
    return str(root)


def test_cuda_build_follows_the_toolkit_not_the_gpu(setup_py, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(setup_py, "CUDA_HOME", fake_toolkit(tmp_path / "cuda"))
    assert setup_py._with_cuda()  # a toolkit, no GPU: a login node builds the kernels
    monkeypatch.setenv("FORCE_CUDA", "0")
    assert not setup_py._with_cuda()
    monkeypatch.setenv("FORCE_CUDA", "1")
    assert setup_py._with_cuda()
    # no toolkit: the CPU kernels only, unless FORCE_CUDA=1 asks for CUDA, which is then an error
    monkeypatch.setattr(setup_py, "CUDA_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="FORCE_CUDA=1 but the CUDA kernels cannot be built: .* has no bin/nvcc"):
        setup_py._with_cuda()
    monkeypatch.delenv("FORCE_CUDA")
    assert not setup_py._with_cuda()
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(setup_py, "CUDA_HOME", fake_toolkit(tmp_path / "cuda"))
    assert not setup_py._with_cuda()  # a CPU-only torch


def test_default_architectures(setup_py, monkeypatch):
    """No GPU visible and TORCH_CUDA_ARCH_LIST unset: the documented list less what nvcc cannot compile for,
    with PTX of the newest; a visible GPU leaves the choice to torch; a set list is kept."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(setup_py, "_nvcc_archs", lambda: {"7.5", "8.0", "8.6", "8.7", "8.9", "9.0", "10.0", "12.0"})
    setup_py._set_cuda_archs()
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
    monkeypatch.setattr(setup_py, "_nvcc_archs", lambda: None)  # an nvcc that cannot list them: all
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    setup_py._set_cuda_archs()
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "7.0;7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    setup_py._set_cuda_archs()
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    setup_py._set_cuda_archs()
    assert "TORCH_CUDA_ARCH_LIST" not in os.environ

CSRC = REPO_ROOT / "csrc"
ARCHS = os.environ.get("SAM_DETR_NVCC_ARCHS", "8.0").replace(" ", ";").split(";")


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [os.path.join(home, "bin", "nvcc")] if home else []
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


NVCC = find_nvcc()


@pytest.fixture(scope="module")
def nvcc_archs():
    """The architectures this nvcc compiles for, as "8.0", ..."""
    out = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
    return {f"{int(n) // 10}.{int(n) % 10}" for n in re.findall(r"compute_(\d+)", out)}


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="no CUDA toolkit (nvcc) found: set CUDA_HOME")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", sorted(p.name for p in CSRC.glob("*/*.cu")))
def test_cuda_sources_compile(source, arch, nvcc_archs, tmp_path):
    if arch not in nvcc_archs:
        pytest.skip(f"{NVCC} cannot compile for sm_{arch.replace('.', '')} (it has {sorted(nvcc_archs)})")
    (path,) = CSRC.glob(f"*/{source}")
    sm = arch.replace(".", "")
    includes = [f"-I{p}" for p in [*cpp_extension.include_paths(), str(CSRC)]]
    # the device code only (-cubin): what differs between architectures, at a quarter of a full build's time
    cmd = [NVCC, "-cubin", f"-arch=sm_{sm}", "-std=c++20", "-O3", "-DWITH_CUDA", *cpp_extension.COMMON_NVCC_FLAGS,
           *includes, str(path), "-o", str(tmp_path / f"{path.stem}.sm_{sm}.cubin")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        pytest.fail(f"{source} does not compile for sm_{sm}:\n" + "\n".join(errors or [proc.stderr[-3000:]]),
                    pytrace=False)

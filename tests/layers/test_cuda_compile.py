"""The CUDA sources of sam_detr._C compile for a GPU architecture without vector atomics, with nvcc alone
(device code, no GPU, no CUDA build of the extension): a kernel that compiles for sm_90 only fails here on
any machine with a CUDA toolkit, also where the extension is built for the CPU. Skipped without nvcc.

SAM_DETR_NVCC_ARCHS="7.5;8.0;8.6;8.9;9.0;10.0;12.0" checks other architectures (default 8.0); one this nvcc
cannot compile for is skipped with that reason.
"""
import os
import re
import shutil
import subprocess

import pytest
import torch.utils.cpp_extension as cpp_extension

from conftest import REPO_ROOT

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

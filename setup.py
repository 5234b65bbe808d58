"""Builds the `sam_detr` package and its compiled extension `sam_detr._C`.

The extension holds the multi-scale deformable attention and RoIAlign kernels. CPU sources are always
compiled. The CUDA kernels are compiled when a CUDA toolkit is found (CUDA_HOME, or the directory torch
infers from nvcc, with bin/nvcc and include/cuda_runtime.h) and torch is a CUDA build; a GPU need not be
visible, so a cluster's login node builds them too. FORCE_CUDA=1 requires them (an error without a
toolkit), FORCE_CUDA=0 leaves them out.

Architectures: TORCH_CUDA_ARCH_LIST when set; else those of the visible GPUs (torch's default); else, with
no GPU visible, DEFAULT_CUDA_ARCHS less what this nvcc cannot compile for (CUDA 13 dropped 7.0), with
PTX of the newest for GPUs newer than the list. The build needs the installed torch, so install with
``pip install --no-build-isolation -e .``.
"""
import glob
import os
import re
import subprocess

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
# the `deploy` extra (pip install -e .[deploy]); tools/install.sh installs the same list
DEPLOY_REQUIRES = ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"]
# V100, T4 / RTX 20, A100, RTX 30 / A10 / A40, L4 / L40 / RTX 40, H100 / H200, B200, RTX 50 / RTX PRO 6000
DEFAULT_CUDA_ARCHS = ["7.0", "7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0"]


def _log(message: str) -> None:
    print(f"[sam_detr setup] {message}", flush=True)


def _cuda_toolkit_problem():
    """None when CUDA_HOME holds a usable toolkit, else why not."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if CUDA_HOME is None:
        return "no CUDA toolkit found (set CUDA_HOME, or put nvcc on PATH)"
    for part in ("bin/nvcc", "include/cuda_runtime.h"):
        if not os.path.isfile(os.path.join(CUDA_HOME, part)):
            return f"CUDA_HOME={CUDA_HOME} has no {part} (set CUDA_HOME to the toolkit's directory)"
    return None


def _with_cuda() -> bool:
    force = os.environ.get("FORCE_CUDA", "")
    if force == "0":
        _log("FORCE_CUDA=0: building the CPU kernels only")
        return False
    problem = _cuda_toolkit_problem()
    if force == "1" and problem:
        raise RuntimeError(f"FORCE_CUDA=1 but the CUDA kernels cannot be built: {problem}")
    if problem:
        _log(f"building the CPU kernels only: {problem}")
        return False
    return True


def _nvcc_archs():
    """Architectures this nvcc compiles for, as "8.0", ...; None when it cannot say."""
    try:
        out = subprocess.run([os.path.join(CUDA_HOME, "bin", "nvcc"), "--list-gpu-arch"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {f"{int(n) // 10}.{int(n) % 10}" for n in re.findall(r"compute_(\d+)", out)}


def _set_cuda_archs() -> None:
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        _log(f"CUDA architectures: TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")
        return
    if torch.cuda.is_available():
        _log("CUDA architectures: those of the visible GPUs (torch's default; set TORCH_CUDA_ARCH_LIST to change)")
        return
    supported = _nvcc_archs()
    archs = [a for a in DEFAULT_CUDA_ARCHS if supported is None or a in supported]
    left_out = [a for a in DEFAULT_CUDA_ARCHS if a not in archs]
    archs[-1] += "+PTX"
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
    _log(f"CUDA architectures (no GPU visible, the default list): {';'.join(archs)}"
         + (f"; left out, this nvcc cannot compile for them: {';'.join(left_out)}" if left_out else ""))


def get_extensions():
    csrc = os.path.join("csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "*", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "*", "*.cu")))
    define_macros = []
    extra_compile_args = {"cxx": ["-O3", "-fopenmp"]}
    extra_link_args = ["-fopenmp"]
    extension = CppExtension
    if _with_cuda():
        _set_cuda_archs()
        extension = CUDAExtension
        sources += cuda_sources
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
    return [
        extension(
            "sam_detr._C",
            sources,
            include_dirs=[os.path.join(ROOT, csrc)],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ]


if __name__ == "__main__":  # pip and setuptools run it so; tests import it for the functions above
    setup(
        name="sam_detr",
        version="0.1.0",
        description="Fast-converging DETR detectors (SAM-DETR, Deformable DETR, ...) for Detectron2",
        packages=find_packages(exclude=("configs", "tests", "tools")),
        python_requires=">=3.9",
        install_requires=["scipy", "pycocotools", "fvcore", "omegaconf", "submitit", "tqdm"],
        # ONNX export (torch.onnx's dynamo exporter needs onnxscript) and ONNX Runtime: sam_detr.export,
        # tools/deploy; tools/install.sh installs them too
        extras_require={"deploy": DEPLOY_REQUIRES},
        ext_modules=get_extensions(),
        cmdclass={"build_ext": BuildExtension},
    )

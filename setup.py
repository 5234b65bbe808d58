"""Builds the `sam_detr` package and its compiled extension `sam_detr._C`.

The extension holds the multi-scale deformable attention and RoIAlign kernels. CPU sources are always
compiled; CUDA sources are added when CUDA is available at build time or when FORCE_CUDA=1 (the
architectures then come from TORCH_CUDA_ARCH_LIST). The build needs the installed torch, so install with
``pip install --no-build-isolation -e .``.
"""
import glob
import os

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _with_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def get_extensions():
    csrc = os.path.join("csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "*", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "*", "*.cu")))
    define_macros = []
    extra_compile_args = {"cxx": ["-O3", "-fopenmp"]}
    extra_link_args = ["-fopenmp"]
    extension = CppExtension
    if _with_cuda():
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


setup(
    name="sam_detr",
    version="0.1.0",
    description="Fast-converging DETR detectors (SAM-DETR, Deformable DETR, ...) for Detectron2",
    packages=find_packages(exclude=("configs", "tests", "tools")),
    python_requires=">=3.9",
    install_requires=["scipy", "pycocotools", "fvcore", "omegaconf", "submitit", "tqdm"],
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension},
)

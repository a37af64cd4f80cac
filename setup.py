"""Builds dlkernels._C: the C++ CPU reference kernels always, the CUDA kernels when possible.

Environment:
  DLK_CUDA=0|1     force the CUDA build off / on (default: on when torch has CUDA and nvcc is found)
  DLK_CUDA_ARCH    ';'-separated compute capabilities, default "80;90a"
Install with `pip install -e . --no-build-isolation` (an isolated build would fetch a CUDA torch).
"""
import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cuda_build_enabled() -> bool:
    requested = os.environ.get("DLK_CUDA")
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if requested == "0":
        return False
    if requested == "1" and not available:
        raise RuntimeError("DLK_CUDA=1 but torch has no CUDA support or nvcc was not found")
    return available


def gencode_flags(archs: list[str]) -> list[str]:
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]


def relative(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def make_extension():
    binding_sources = [s for s in relative("csrc/bindings/*.cpp") if not s.endswith("_cuda.cpp")]
    sources = relative("csrc/cpu/*.cpp") + binding_sources
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    # torch >= 2.13 headers use C++20 features; the torch-free .cu files stay C++17 (see tests/test_cuda_compile.py).
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp"]
    if not cuda_build_enabled():
        return CppExtension("dlkernels._C", sources, include_dirs=include_dirs,
                            extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])
    archs = [a for a in os.environ.get("DLK_CUDA_ARCH", "80;90a").split(";") if a]
    # Archs travel as a bare token (shell quoting in ninja would strip string quotes); module.cpp
    # stringifies it.
    defines = ["-DDLK_WITH_CUDA", f"-DDLK_CUDA_ARCHS={'_'.join(archs)}"]
    sources += relative("csrc/cuda/*.cu") + relative("csrc/bindings/*_cuda.cpp")
    nvcc_flags = ["-O3", "-std=c++17", "-lineinfo", *defines, *gencode_flags(archs)]
    return CUDAExtension("dlkernels._C", sources, include_dirs=include_dirs,
                         extra_compile_args={"cxx": cxx_flags + defines, "nvcc": nvcc_flags},
                         extra_link_args=["-fopenmp"])


setup(
    name="dlkernels",
    version="0.1.0",
    description="Hand-written CUDA C++ and Triton kernels for PyTorch, measured against cuDNN",
    # triton_kernels/ installs as dlkernels.triton_kernels: a top-level "triton_kernels" would shadow
    # (or be shadowed by) the package of that name that Triton itself ships.
    packages=[*find_packages(include=["dlkernels", "dlkernels.*"]), "dlkernels.triton_kernels"],
    package_dir={"dlkernels.triton_kernels": "triton_kernels"},
    python_requires=">=3.10",
    install_requires=["torch", "numpy"],
    extras_require={"triton": ["triton"], "bench": ["tqdm", "matplotlib"], "test": ["pytest", "pytest-benchmark"]},
    ext_modules=[make_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["dlkernels-bench=dlkernels.bench.__main__:main"]},
)

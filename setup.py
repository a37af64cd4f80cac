"""Builds dlkernels: the native libraries (always) and, for now, the torch extension dlkernels._C.

Native libraries: csrc/build.py (g++/nvcc through ninja, no torch) writes dlkernels/lib/libdlk_cpu.so
and, when nvcc is found, libdlk_cuda.so; they ship as package data and dlkernels/_native loads them
with ctypes, so one wheel serves every torch and Python. `pip install .` works with build isolation.

Environment:
  DLK_CUDA=0|1|auto  CUDA build off / on / when nvcc is found (default auto)
  DLK_CUDA_ARCH      ';'-separated compute capabilities, default "80;90a"
  DLK_BUILD_JOBS     parallel compile jobs for the native build (default: all cores)

Transition: dlkernels._C (csrc/bindings, a torch C++ extension) is still built, but only when torch
is importable at build time (`pip install -e . --no-build-isolation`, as the Makefile and CI do). It
goes away once every op calls the native libraries; torch is no build requirement.
"""
import glob
import os
import subprocess
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

ROOT = os.path.dirname(os.path.abspath(__file__))


def build_native_libraries() -> None:
    """csrc/build.py in a subprocess: it reads DLK_CUDA / DLK_CUDA_ARCH / DLK_BUILD_JOBS itself."""
    subprocess.run([sys.executable, os.path.join(ROOT, "csrc", "build.py")], cwd=ROOT, check=True)


class BuildPyWithNativeLibraries(build_py):
    """Builds the native libraries before the package files are collected (editable installs too)."""

    def run(self):
        build_native_libraries()
        super().run()


class PlatformWheel(bdist_wheel):
    """The wheel carries native code but no Python extension (once _C is gone): py3-none-<platform>."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        python, abi, platform = super().get_tag()
        return (python, abi, platform) if TORCH_EXTENSION else ("py3", "none", platform)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_build_enabled() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    requested = os.environ.get("DLK_CUDA")
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if requested == "0":
        return False
    if requested == "1" and not available:
        # DLK_CUDA=1 now asks for the native CUDA library (csrc/build.py), which needs no CUDA torch.
        print("setup.py: torch has no CUDA support (or nvcc is missing): dlkernels._C is built without CUDA")
    return available


def gencode_flags(archs: list[str]) -> list[str]:
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]


def relative(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def make_extension():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

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


TORCH_EXTENSION = make_extension() if torch_available() else None
cmdclass = {"build_py": BuildPyWithNativeLibraries, "bdist_wheel": PlatformWheel}
if TORCH_EXTENSION is not None:
    from torch.utils.cpp_extension import BuildExtension

    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

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
    package_data={"dlkernels": ["lib/*.so"]},
    ext_modules=[TORCH_EXTENSION] if TORCH_EXTENSION is not None else [],
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["dlkernels-bench=dlkernels.bench.__main__:main"]},
)

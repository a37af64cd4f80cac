"""Builds dlkernels: the Python package and its native libraries (no torch at build time).

Native libraries: csrc/build.py (g++/nvcc through ninja, no torch) writes dlkernels/lib/libdlk_cpu.so
and, when nvcc is found, libdlk_cuda.so; they ship as package data and dlkernels/_native loads them
with ctypes, so one wheel serves every torch and Python. `pip install .` works with build isolation.

Environment:
  DLK_CUDA=0|1|auto  CUDA build off / on / when nvcc is found (default auto)
  DLK_CUDA_ARCH      ';'-separated compute capabilities, default "80;90a"
  DLK_BUILD_JOBS     parallel compile jobs for the native build (default: all cores)
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
    """The wheel carries native code but no Python extension: py3-none-<platform>."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        python, abi, platform = super().get_tag()
        return "py3", "none", platform


setup(
    name="dlkernels",
    version="0.1.0",
    description="Hand-written CUDA C++ and Triton kernels for PyTorch, measured against cuDNN",
    # triton_kernels/ installs as dlkernels.triton_kernels: a top-level "triton_kernels" would shadow
    # (or be shadowed by) the package of that name that Triton itself ships.
    packages=[*find_packages(include=["dlkernels", "dlkernels.*"]), "dlkernels.triton_kernels"],
    package_dir={"dlkernels.triton_kernels": "triton_kernels"},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={"triton": ["triton"], "bench": ["tqdm", "matplotlib"], "test": ["pytest", "pytest-benchmark"]},
    package_data={"dlkernels": ["lib/*.so", "auto_policy.json"]},
    cmdclass={"build_py": BuildPyWithNativeLibraries, "bdist_wheel": PlatformWheel},
    entry_points={"console_scripts": ["dlkernels-bench=dlkernels.bench.__main__:main"]},
)

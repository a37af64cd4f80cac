"""Every torch-free CUDA source compiles with bare nvcc for sm_80 and sm_90a (compile only).

Runs without a GPU: this is how CI on a CPU machine keeps the CUDA kernels building. Skipped only
when nvcc itself is missing.
"""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
ARCHS = ["80", "90a"]
NVCC = shutil.which("nvcc")


def test_there_are_cuda_sources():
    assert CUDA_SOURCES, "csrc/cuda holds no .cu files"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles(source, arch, tmp_path):
    command = [NVCC, "-std=c++17", "-O3", f"-I{ROOT / 'csrc' / 'include'}", "-Werror=all-warnings",
               f"-gencode=arch=compute_{arch},code=sm_{arch}", "-c", str(source), "-o", str(tmp_path / "out.o")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"

"""The layout math of the Hopper (wgmma) attention forward, checked on the CPU.

tests/wgmma_layout_check.cu includes csrc/cuda/attention_fwd_sm90_kernel.cuh and checks the kernel's
own descriptor, swizzle and fragment functions against the PTX ISA's canonical layouts (see its
header). nvcc builds it (for the CUDA headers), the host runs it: no GPU needed. Skipped only when
nvcc is missing.
"""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_wgmma_attention_layouts(tmp_path):
    exe = tmp_path / "wgmma_layout_check"
    command = [NVCC, "-std=c++17", "-O1", f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc' / 'cuda'}",
               "-Werror=all-warnings", "-gencode=arch=compute_90a,code=sm_90a",
               str(ROOT / "tests" / "wgmma_layout_check.cu"), "-o", str(exe)]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, f"{' '.join(command)}\n{built.stderr}"
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and ran.stdout.strip().endswith("ok"), ran.stdout + ran.stderr

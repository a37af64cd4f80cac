"""The pooling kernels' window index math with precomputed 32-bit dividers (csrc/cuda/pool2d_index.cuh),
checked on the host against dlk/pool2d.h's int64 formulas by tests/pool2d_index_check.cu.

The CUDA backward once did four 64-bit divisions per element here; the fast dividers must give the same
output ranges and adaptive windows, exhaustively on small axes (every kernel, stride, padding,
dilation, ceil mode) and sampled near the 32-bit limits. Planting `<=` for `<` in output_range, or
dropping a `- 1` from adaptive_span's ceiling, makes the check fail. nvcc builds it (host code only,
a few seconds); no GPU is needed.
"""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_fast_divider_window_math_matches_the_int64_formulas(tmp_path):
    binary = tmp_path / "pool2d_index_check"
    command = [NVCC, "-std=c++17", "-O2", f"-I{ROOT / 'csrc' / 'include'}", "-o", str(binary),
               str(ROOT / "tests" / "pool2d_index_check.cu")]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, f"{' '.join(command)}\n{built.stderr}"
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("ok "), result.stdout + result.stderr
    assert int(result.stdout.split()[1]) > 100_000, "fewer checks than expected: did the loops run?"

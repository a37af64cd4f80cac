"""Comparison helpers and backend lists shared by the op tests."""
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
# On CPU tensors Triton runs only in its interpreter, which conftest.py turns on only without a GPU
# (one process cannot both interpret and compile); with a GPU the cuda-marked tests cover Triton.
CPU_BACKENDS = ["reference", pytest.param("triton", marks=pytest.mark.skipif(
    HAS_CUDA, reason="Triton's CPU interpreter is off when a GPU is present; cuda tests cover Triton"))]
GPU_BACKENDS = ["cuda", "triton"]

# (rtol, atol) against PyTorch computed in the same dtype. Pooling accumulates in fp32 (fp64 for
# double) like ATen, so results differ at most by summation order: about one unit in the last place.
TOLERANCES = {
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
    torch.float32: (1e-5, 1e-6),
    torch.float64: (1e-12, 1e-12),
}
DTYPES = list(TOLERANCES)
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def assert_close(actual, expected, dtype=None):
    rtol, atol = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def in_layout(x, layout):
    return x.contiguous(memory_format=LAYOUTS[layout]) if x.dim() == 4 else x


def is_channels_last(x):
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()

"""Test set-up: on a machine without a GPU the Triton kernels run in Triton's CPU interpreter.

TRITON_INTERPRET must be set before dlkernels.triton_kernels is imported (triton.jit reads it when a kernel
is decorated), so it is set here, at collection time.
"""
import os

import pytest
import torch

from helpers import HAS_CUDA

if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is present")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _torch_backends_flags_settable():
    """PyTorch's test utilities (imported by opcheck and the OpInfo database) freeze torch.backends flags
    for the rest of the process; our bench modules set cudnn flags as users do, so thaw them per test."""
    torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True

"""The pool2d benchmark cases under pytest-benchmark: `pytest benchmarks/ --benchmark-only`.

Same cases and inputs as `python -m dlkernels.bench` (dlkernels/bench/pool2d.py), with the PyTorch
reference as backend "torch".
"""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import dlkernels  # noqa: E402
from conftest import case_id  # noqa: E402
from dlkernels.bench import DIRECTIONS, REFERENCE, pool2d  # noqa: E402


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [REFERENCE, *dlkernels.available_backends("cuda")])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", pool2d.CASES, ids=case_id)
def test_pool2d(bench_case, case, direction, backend):
    bench_case(pool2d, case, direction, backend)

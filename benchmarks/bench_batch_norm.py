"""The fused BatchNorm+ReLU benchmark cases under pytest-benchmark: `pytest benchmarks/ --benchmark-only`.

Same cases and inputs as `python -m dlkernels.bench` (dlkernels/bench/batch_norm.py); baselines are
PyTorch eager ("torch") and torch.compile ("torch_compile").
"""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import dlkernels  # noqa: E402
from conftest import case_id  # noqa: E402
from dlkernels.bench import DIRECTIONS, REFERENCE, batch_norm  # noqa: E402


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [REFERENCE, *batch_norm.EXTRA_BASELINES, *dlkernels.available_backends("cuda")])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", batch_norm.CASES, ids=case_id)
def test_batch_norm(bench_case, case, direction, backend):
    bench_case(batch_norm, case, direction, backend)

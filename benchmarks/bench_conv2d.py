"""The convolution benchmark cases under pytest-benchmark: `pytest benchmarks/bench_conv2d.py --benchmark-only`.

Same cases, inputs and pinned precision flags as `python -m dlkernels.bench --ops conv2d`
(dlkernels/bench/conv2d.py); the baseline is F.conv2d on cuDNN ("torch"). Use `-k` to pick a subset:
the full matrix takes far longer than one sitting (hundreds of shapes x directions x backends).
"""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import dlkernels  # noqa: E402
from conftest import case_id  # noqa: E402
from dlkernels.bench import REFERENCE, conv2d  # noqa: E402

JOBS = [(case, direction) for case in conv2d.CASES for direction in conv2d.directions_for(case)]


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [REFERENCE, *dlkernels.available_backends("cuda")])
@pytest.mark.parametrize("case,direction", JOBS, ids=[f"{case_id(c)}-{c.kwargs['algo']}-{d}" for c, d in JOBS])
def test_conv2d(bench_case, case, direction, backend):
    bench_case(conv2d, case, direction, backend)

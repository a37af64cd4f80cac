"""The attention benchmark cases under pytest-benchmark: `pytest benchmarks/bench_attention.py --benchmark-only`.

Same cases, inputs and baselines as `python -m dlkernels.bench --ops attention` (dlkernels/bench/attention.py):
F.scaled_dot_product_attention with PyTorch's backend choice ("torch") and each SDPA backend pinned. Use `-k` to
pick a subset (e.g. `-k "bfloat16 and d128"`).
"""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import dlkernels  # noqa: E402
from conftest import case_id  # noqa: E402
from dlkernels.bench import REFERENCE, attention  # noqa: E402

JOBS = [(case, direction) for case in attention.CASES for direction in attention.DIRECTIONS]


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [REFERENCE, *attention.EXTRA_BASELINES, *dlkernels.available_backends("cuda")])
@pytest.mark.parametrize("case,direction", JOBS,
                         ids=[f"{case_id(c)}-d{c.kwargs['head_dim']}-{'causal' if c.kwargs['causal'] else 'full'}-{d}"
                              for c, d in JOBS])
def test_attention(bench_case, case, direction, backend):
    bench_case(attention, case, direction, backend)

"""The LSTM/GRU benchmark cases under pytest-benchmark: `pytest benchmarks/bench_rnn.py --benchmark-only`.

Same cases, inputs and baselines as `python -m dlkernels.bench --ops rnn` (dlkernels/bench/rnn.py): cuDNN's
nn.LSTM / nn.GRU ("torch") and the same layers as an eager loop of PyTorch ops ("eager_cells").
"""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import dlkernels  # noqa: E402
from conftest import case_id  # noqa: E402
from dlkernels.bench import REFERENCE, rnn  # noqa: E402

JOBS = [(case, direction) for case in rnn.CASES for direction in rnn.DIRECTIONS]


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [REFERENCE, *rnn.EXTRA_BASELINES, *dlkernels.available_backends("cuda")])
@pytest.mark.parametrize("case,direction", JOBS, ids=[f"{case_id(c)}-{d}" for c, d in JOBS])
def test_rnn(bench_case, case, direction, backend):
    bench_case(rnn, case, direction, backend)

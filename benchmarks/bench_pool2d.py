"""The pool2d benchmark cases under pytest-benchmark: `pytest benchmarks/ --benchmark-only`.

Same cases and inputs as `python -m dlkernels.bench` (dlkernels/bench/pool2d.py), with the PyTorch
reference as backend "torch". Each round flushes L2 in an untimed setup, then times one call up to
torch.cuda.synchronize(), so wall-clock times include the launch overhead CUDA events would hide.
"""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import dlkernels  # noqa: E402
from dlkernels.bench import DIRECTIONS, REFERENCE, pool2d, timing  # noqa: E402

BACKENDS = [REFERENCE, *dlkernels.available_backends("cuda")]


@pytest.fixture(scope="module")
def l2_flush_buffer():
    return torch.empty(timing.L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", pool2d.CASES, ids=lambda c: "-".join(
    [c.op, c.workload.replace(" ", "_"), "x".join(map(str, c.shape)), c.dtype, c.layout]))
def test_pool2d(benchmark, l2_flush_buffer, case, direction, backend):
    fn = pool2d.build(case, backend, direction, "cuda")

    def flush_l2():
        l2_flush_buffer.zero_()
        torch.cuda.synchronize()

    def run():
        fn()
        torch.cuda.synchronize()

    nbytes = pool2d.ideal_bytes(case, direction)
    benchmark.group = f"{case.describe()} {direction}"
    benchmark.extra_info.update(bytes=nbytes, bytes_counted=pool2d.BYTES_COUNTED)
    benchmark.pedantic(run, setup=flush_l2, warmup_rounds=10, rounds=100, iterations=1)

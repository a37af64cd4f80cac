"""pool2d through the shared case generator (tests/cases/pool2d.py): every boundary case on every CPU backend,
and the seeded differential fuzz (DLK_FUZZ_CASES=500 for the long mode, DLK_FUZZ_SEED to replay a draw).

Each case compares values (max: exactly, with indices; averages: tests/helpers.py TOLERANCES) and input
gradients with float64 torch, or, for an invalid call, expects a clear error from ours and torch's own error
through backend="auto".
"""
import pytest

from cases import fuzz_count, fuzz_seed, pool2d
from helpers import CPU_BACKENDS

BOUNDARY = pool2d.boundary_cases()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", BOUNDARY, ids=[c.id for c in BOUNDARY])
def test_boundary_case(case, backend):
    pool2d.check(case, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_random_cases(backend):
    for case in pool2d.random_cases(fuzz_seed(), fuzz_count()):
        pool2d.check(case, backend)


def test_boundary_cases_cross_the_triton_tiles():
    # The tile sizes come from the kernel module; this guards that the cases still straddle them.
    from dlkernels.triton_kernels import pool2d as kernels
    block = kernels._CONFIGS[0].kwargs["BLOCK"]
    outputs = {c.why.split(" ")[0] for c in BOUNDARY if "-element tile" in c.why}
    assert outputs == {str(block - 1), str(block), str(block + 1)}


def test_random_cases_are_seeded_and_varied():
    first, again = pool2d.random_cases(3, 40), pool2d.random_cases(3, 40)
    assert first == again
    assert {c.op for c in first} == set(pool2d.OPS)
    assert any(c.get("shape")[-1] != c.get("shape")[-2] for c in first)

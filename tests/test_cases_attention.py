"""The attention case generators (tests/cases/attention.py) against float64 torch on the CPU backends: the
deterministic boundary sample and the seeded differential fuzz (DLK_FUZZ_CASES=500 for the long mode,
DLK_FUZZ_SEED to rerun a draw)."""
import re

import pytest

from cases import attention as cases
from cases import fuzz_count, fuzz_seed
from helpers import CPU_BACKENDS

BOUNDARY = cases.boundary_cases()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", BOUNDARY, ids=[c.id for c in BOUNDARY])
def test_boundary_cases(case, backend):
    cases.check(case, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_random_cases(backend):
    for case in cases.random_cases(fuzz_seed(), fuzz_count()):
        cases.check(case, backend)

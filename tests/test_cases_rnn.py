"""LSTM / GRU layers and cells on the shared cases (tests/cases/rnn.py): boundary cases and the
seeded differential fuzz, against float64 torch.nn modules, outputs and gradients, on the C++
reference and the Triton interpreter. DLK_FUZZ_CASES=500 runs the long fuzz; DLK_FUZZ_SEED=<n>
reruns a draw."""
import math

import pytest

from cases import fuzz_count, fuzz_seed
from cases import rnn as rnn_cases
from dlkernels.ops.rnn import GATES
from helpers import CPU_BACKENDS

BOUNDARY = rnn_cases.boundary_cases()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", BOUNDARY, ids=[c.id for c in BOUNDARY])
def test_boundary_cases(case, backend):
    if backend != "reference" and "reference_only" in case.tags:
        pytest.skip("sized for the C++ reference's threshold: too slow for the Triton interpreter")
    rnn_cases.check(case, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_random_cases(backend):
    for case in rnn_cases.random_cases(fuzz_seed(), fuzz_count()):
        rnn_cases.check(case, backend)


def test_boundary_cases_cross_the_tiles():
    """The Triton cases span several tiles along each grid axis, with different counts per axis and
    K-loop tails; the reference cases straddle kMinParallelStepWork (both read from their sources)."""
    runs = [c for c in BOUNDARY if "error" not in c.tags and c.get("dtype") != "float64"]
    tiles = {(math.ceil(c.get("batch") / rnn_cases.BLOCK_B), math.ceil(c.get("hidden") / rnn_cases.BLOCK_H))
             for c in runs if not c.get("unbatched")}
    assert any(b > 1 and h > 1 for b, h in tiles)
    assert any(b == 1 and h > 1 for b, h in tiles) and any(b > 1 and h == 1 for b, h in tiles)
    assert any(c.get("hidden") % rnn_cases.BLOCK_K and c.get("hidden") > rnn_cases.BLOCK_K for c in runs)
    work = [c.get("batch") * GATES[c.op] * c.get("hidden") ** 2 for c in BOUNDARY if "reference_only" in c.tags]
    threshold = rnn_cases.min_parallel_step_work()
    assert any(w < threshold for w in work) and any(w >= threshold for w in work)

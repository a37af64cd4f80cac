"""batch_norm_relu on the shared cases (tests/cases/batch_norm.py): boundary cases and the seeded
differential fuzz, each against float64 torch, values and gradients, on the C++ reference and the
Triton interpreter. DLK_FUZZ_CASES=500 runs the long fuzz; DLK_FUZZ_SEED=<n> reruns a draw."""
import math

import pytest

from cases import fuzz_count, fuzz_seed
from cases import batch_norm as bn_cases
from helpers import CPU_BACKENDS

BOUNDARY = bn_cases.boundary_cases()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", BOUNDARY, ids=[c.id for c in BOUNDARY])
def test_boundary_cases(case, backend):
    bn_cases.check(case, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_random_cases(backend):
    for case in bn_cases.random_cases(fuzz_seed(), fuzz_count()):
        bn_cases.check(case, backend)


def _tiles(case):
    """What the Triton kernels make of the case's input: (channels_last, INNER, rows, channel blocks,
    spatial tiles per plane, row tiles)."""
    shape = case.get("shape")
    channels, spatial = shape[1], math.prod(shape[2:])
    channels_last = spatial == 1 or (channels > 1 and "channels_last" in case.get("layout", ""))
    inner = bn_cases.tile_inner(channels, spatial, channels_last)
    rows = bn_cases.REDUCE_BLOCK // inner
    if channels_last:
        return True, inner, rows, math.ceil(channels / inner), 1, math.ceil(shape[0] * spatial / rows)
    return False, inner, rows, channels, math.ceil(spatial / inner), math.ceil(shape[0] / rows)


def test_boundary_cases_cross_the_triton_tiles():
    """The boundary shapes still cross every tile of the interpreter's configs (read from the kernel module)."""
    tiles = [_tiles(c) for c in BOUNDARY if c.op == "batch_norm_relu" and "error" not in c.tags]
    channels_last = [t for t in tiles if t[0]]
    nchw = [t for t in tiles if not t[0]]
    # channels_last: a channel tail block after a full one, and several row tiles with a tail.
    assert any(blocks > 1 for _, _, _, blocks, _, _ in channels_last)
    assert any(row_tiles > 1 for *_, row_tiles in channels_last)
    shapes = [c.get("shape") for c in BOUNDARY if c.op == "batch_norm_relu"]
    assert {bn_cases.MAX_BLOCK_C - 1, bn_cases.MAX_BLOCK_C, bn_cases.MAX_BLOCK_C + 1} <= {s[1] for s in shapes}
    assert bn_cases.MERGE_BLOCK_C + 1 in {s[1] for s in shapes}
    # NCHW: planes over several tiles, with and without a tail; images over several row tiles.
    assert any(s_tiles > 1 and bn_cases.SPATIAL_TAIL % inner for _, inner, _, _, s_tiles, _ in nchw)
    assert any(row_tiles > 1 for *_, row_tiles in nchw)
    assert any(inner == bn_cases.MAX_BLOCK_S and s_tiles > 1 for _, inner, _, _, s_tiles, _ in nchw)

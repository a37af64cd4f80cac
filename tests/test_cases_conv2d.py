"""conv2d through the shared case generator (tests/cases/conv2d.py): every boundary case on every CPU backend,
and the seeded differential fuzz (DLK_FUZZ_CASES=500 for the long mode, DLK_FUZZ_SEED to replay a draw).

Each case compares the output and the gradients of input, weight, bias and residual with float64 torch (max
error at most 2x torch's own in the same dtype, Winograd 4x / 64x; see the generator), or, for an invalid call,
expects a clear error from ours and torch's own error through backend="auto".
"""
import pytest

from cases import conv2d, fuzz_count, fuzz_seed
from helpers import CPU_BACKENDS

# torch's own padding="same" path warns about even kernels, and the Triton interpreter's numpy matmul about the
# NaN case's NaNs; the cases take both on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")]
BOUNDARY = conv2d.boundary_cases()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", BOUNDARY, ids=[c.id for c in BOUNDARY])
def test_boundary_case(case, backend):
    conv2d.check(case, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_random_cases(backend):
    for case in conv2d.random_cases(fuzz_seed(), fuzz_count()):
        conv2d.check(case, backend)


def test_tiles_come_from_the_sources():
    tiles = conv2d.tiles()
    assert tiles["cpp_winograd_tiles"] == [2, 4]  # what the public algo names offer
    assert {f"winograd_{m}x{m}" for m in tiles["cpp_winograd_tiles"]} <= set(conv2d.ERROR_FACTOR)
    whys = " ".join(c.why for c in BOUNDARY)
    for size in (tiles["block_m"] - 1, tiles["block_m"] + 1, tiles["depthwise_block"] + 1):
        assert str(size) in whys


def test_random_cases_are_seeded_and_varied():
    first = conv2d.random_cases(5, 40)
    assert first == conv2d.random_cases(5, 40)
    assert {c.get("algo") for c in first} >= {"direct", "winograd_2x2", "winograd_4x4"}
    assert any(c.get("groups") > 1 for c in first)

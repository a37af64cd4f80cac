"""The CUDA launchers' planners (csrc/include/dlk/launch_plan.h), run on the host through the CPU
library's C ABI (dlk_plan_*): index widths and launch splits on shapes no CPU machine could allocate,
above 2^31 elements and above 65,535 sequences or batch tiles.

Checked: every split covers its items exactly once (contiguous, disjoint, in order, no chunk over
the grid limit, none empty); a grid-stride loop never wraps its index type, so it visits every item
once; 32-bit indexing is chosen exactly up to the first shape that needs 64 bits. Planting an off-by-
one (launches = count // per_chunk, or `<` for `<=` in fits_int32) makes these tests fail.
"""
import ctypes
from ctypes import c_int, c_int64, POINTER

import numpy as np
import pytest

from dlkernels import _native

if not _native.has_cpu_lib():
    pytest.skip("libdlk_cpu.so is not built (python csrc/build.py)", allow_module_level=True)

INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
MAX_GRID_YZ = 65535
MAX, AVG, ADAPTIVE = 0, 1, 2
FLOAT32 = 2
I64P = POINTER(c_int64)


def _lib():
    lib = _native.cpu_lib()
    lib.dlk_plan_fits_int32.argtypes, lib.dlk_plan_fits_int32.restype = [c_int64, c_int64], c_int
    lib.dlk_plan_chunks.argtypes = [c_int64, c_int64, c_int, I64P, I64P, c_int64]
    lib.dlk_plan_chunks.restype = c_int64
    lib.dlk_plan_pool2d.argtypes = [c_int, *[c_int64] * 6, c_int, *[c_int64] * 8, c_int, c_int64, c_int,
                                    c_int, c_int, c_int, c_int64, I64P]
    lib.dlk_plan_pool2d.restype = c_int
    for name in ("dlk_plan_attention_grid", "dlk_plan_rnn_grid"):
        getattr(lib, name).argtypes = [c_int64] * 4 + [I64P, I64P, I64P, c_int64]
        getattr(lib, name).restype = c_int64
    return lib


LIB = _lib()


def _ptr(array: np.ndarray):
    return array.ctypes.data_as(I64P)


def _chunked(function, *args, grid_size: int = 2):
    """Calls a chunked planner twice (size, then fill): (grid, firsts, sizes), or None when refused."""
    grid = np.zeros(grid_size, dtype=np.int64)
    empty = np.zeros(1, dtype=np.int64)
    launches = function(*args, _ptr(grid), _ptr(empty), _ptr(empty), 0)
    if launches < 0:
        return None
    firsts, sizes = np.zeros(max(launches, 1), dtype=np.int64), np.zeros(max(launches, 1), dtype=np.int64)
    assert function(*args, _ptr(grid), _ptr(firsts), _ptr(sizes), launches) == launches
    return grid, firsts[:launches], sizes[:launches]


def assert_covers_once(firsts: np.ndarray, sizes: np.ndarray, count: int, limit: int):
    """Chunks [first, first + size) tile [0, count) exactly: in order, disjoint, no gap, none empty."""
    if count == 0:
        assert len(firsts) == 0
        return
    assert firsts[0] == 0
    assert np.all(sizes >= 1) and np.all(sizes <= limit), (sizes.min(), sizes.max(), limit)
    assert np.array_equal(firsts[1:], firsts[:-1] + sizes[:-1]), "a gap or an overlap between chunks"
    assert int(firsts[-1] + sizes[-1]) == count, "the chunks end before or after the last item"


# ---------------------------------------------------------------------------------------------
# Building blocks

@pytest.mark.parametrize("largest, overshoot, fits", [
    (INT32_MAX, 0, True), (INT32_MAX + 1, 0, False), (INT32_MAX - 256, 256, True), (INT32_MAX - 255, 256, False),
    (0, 0, True), (-1, 0, False), (5, -1, False), (2**40, 0, False),
])
def test_fits_int32_threshold(largest, overshoot, fits):
    assert bool(LIB.dlk_plan_fits_int32(largest, overshoot)) == fits


def _chunks(count, limit, balanced):
    def call(grid, firsts, sizes, capacity):  # dlk_plan_chunks has no grid: adapt to _chunked's shape
        return LIB.dlk_plan_chunks(count, limit, balanced, firsts, sizes, capacity)
    result = _chunked(call)
    return None if result is None else result[1:]


COUNTS = [0, 1, 2, 65534, 65535, 65536, 131070, 131071, 200_000, INT32_MAX, 2**31 + 12345]


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("limit", [1, 7, MAX_GRID_YZ])
def test_chunks_of_at_most_cover_every_item_once(count, limit):
    if count // limit > 2**22:
        pytest.skip("too many chunks to list")
    firsts, sizes = _chunks(count, limit, 0)
    assert_covers_once(firsts, sizes, count, limit)
    assert len(firsts) == -(-count // limit), "not the fewest launches"


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("wanted", [1, 3, 108, MAX_GRID_YZ])
def test_chunks_of_about_are_equal_and_never_empty(count, wanted):
    firsts, sizes = _chunks(count, wanted, 1)
    assert_covers_once(firsts, sizes, count, max(count, 1))
    assert len(firsts) <= wanted
    if count:
        assert np.all(sizes[:-1] == sizes[0]) and sizes[-1] <= sizes[0]


def test_impossible_split_is_refused():
    assert _chunks(10, 0, 0) is None
    assert _chunks(0, 0, 0) is not None  # nothing to do needs no launch


# ---------------------------------------------------------------------------------------------
# pool2d: index width and the grid-stride loop


def pool2d_plan(mode, n, c, in_hw, out_hw, kernel=(1, 1), stride=(1, 1), pad=(0, 0), dilation=(1, 1), *,
                backward=False, vec=1, channels_last=False, threads=256, max_blocks=132 * 8 * 4):
    plan = np.zeros(5, dtype=np.int64)
    status = LIB.dlk_plan_pool2d(FLOAT32, n, c, *in_hw, *out_hw, mode, *kernel, *stride, *pad, *dilation, 1, 0,
                                 int(channels_last), int(backward), vec, threads, max_blocks, _ptr(plan))
    assert status == 0
    bits, work, blocks, plan_threads, exact = (int(v) for v in plan)
    return bits, work, blocks, plan_threads, bool(exact)


def grid_stride_visits_once(work, blocks, threads, bits) -> bool:
    """Whether `for (i = t; i < work; i += blocks * threads)` in a `bits`-bit unsigned counter visits
    every i < work once: it does unless a thread's last test, i + stride, wraps below work."""
    stride = blocks * threads
    if work == 0:
        return True
    return (work - 1) + stride <= 2**bits - 1


@pytest.mark.parametrize("work, blocks, threads", [(1000, 3, 256), (5, 1, 256), (4096, 16, 256), (777, 2, 64)])
def test_grid_stride_model_on_small_loops(work, blocks, threads):
    """The model used below agrees with an explicit run of the loop."""
    visits = np.zeros(work, dtype=np.int64)
    stride = blocks * threads
    for t in range(stride):
        visits[t:work:stride] += 1
    assert np.all(visits == 1) and grid_stride_visits_once(work, blocks, threads, 32)


# (mode, N, C, in (h, w), out (h, w), kernel, stride, pad, 32-bit expected)
POOL_CASES = {
    # 8191 x 512 x 512 = 2^31 - 2^18 elements: 32-bit; one more image reaches 2^31: 64-bit.
    "below_2^31": (MAX, 8191, 1, (512, 512), (512, 512), (3, 3), (1, 1), (1, 1), True),
    "at_2^31": (MAX, 8192, 1, (512, 512), (512, 512), (3, 3), (1, 1), (1, 1), False),
    "far_above_2^31": (AVG, 64, 512, (256, 256), (128, 128), (2, 2), (2, 2), (0, 0), False),
    # The output, not the input, crosses 2^31 (padding with a 1 x 1 window enlarges the output).
    "output_crosses": (MAX, 1, 1, (2, 2**30 - 1), (4, 2**30 + 1), (1, 1), (1, 1), (1, 1), False),
    # Taps run up to kTapsInFlight + 1 steps past the input edge: the extent's margin decides.
    "extent_margin_ok": (MAX, 1, 1, (1, INT32_MAX - 5), (1, INT32_MAX - 5), (1, 1), (1, 1), (0, 0), True),
    "extent_margin_short": (MAX, 1, 1, (1, INT32_MAX - 4), (1, INT32_MAX - 4), (1, 1), (1, 1), (0, 0), False),
    # Adaptive windows form in * out + max(in, out): a product of extents, not an element count.
    "adaptive_product_ok": (ADAPTIVE, 1, 1, (46340, 1), (46340, 1), (1, 1), (1, 1), (0, 0), True),
    "adaptive_product_over": (ADAPTIVE, 1, 1, (65536, 1), (32768, 1), (1, 1), (1, 1), (0, 0), False),
    "adaptive_global": (ADAPTIVE, 4096, 2048, (7, 7), (1, 1), (1, 1), (1, 1), (0, 0), True),
    "small": (AVG, 2, 3, (9, 7), (5, 4), (3, 3), (2, 2), (1, 1), True),
}


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("case", list(POOL_CASES), ids=list(POOL_CASES))
def test_pool2d_index_width_and_grid(case, backward):
    mode, n, c, in_hw, out_hw, kernel, stride, pad, expect_32 = POOL_CASES[case]
    bits, work, blocks, threads, exact = pool2d_plan(mode, n, c, in_hw, out_hw, kernel, stride, pad,
                                                     backward=backward)
    assert bits == (32 if expect_32 else 64)
    hw = in_hw if backward else out_hw
    assert work == n * c * hw[0] * hw[1]
    assert threads == 256 and 1 <= blocks <= 132 * 8 * 4
    assert grid_stride_visits_once(work, blocks, threads, bits)
    assert exact == grid_stride_visits_once(work, blocks, threads, bits)
    if bits == 32:  # every element offset the kernel forms is below 2^31
        assert max(n * c * in_hw[0] * in_hw[1], n * c * out_hw[0] * out_hw[1]) <= INT32_MAX


def test_pool2d_adaptive_product_boundary():
    """The first input extent whose product with the output extent (plus the larger extent) passes
    INT32_MAX switches to 64-bit; the element count alone (in_h x 1) is far below 2^31."""
    out = 46340
    last_fitting = (INT32_MAX - out) // out  # in * out + max(in, out) <= INT32_MAX, in >= out here
    assert last_fitting * out + last_fitting <= INT32_MAX
    while (last_fitting + 1) * out + last_fitting + 1 <= INT32_MAX:
        last_fitting += 1
    assert pool2d_plan(ADAPTIVE, 1, 1, (last_fitting, 1), (out, 1), backward=True)[0] == 32
    assert pool2d_plan(ADAPTIVE, 1, 1, (last_fitting + 1, 1), (out, 1), backward=True)[0] == 64


def test_pool2d_channels_last_vectors():
    """channels_last threads take `vec` channels: the loop runs over numel / vec items."""
    bits, work, blocks, threads, exact = pool2d_plan(MAX, 16384, 256, (512, 512), (256, 256), (2, 2), (2, 2),
                                                     vec=8, channels_last=True)
    assert bits == 64 and work == 16384 * 256 * 256 * 256 // 8 and exact


# ---------------------------------------------------------------------------------------------
# attention: sequences beyond 65,535 go to further launches


@pytest.mark.parametrize("batch", [0, 1, 65535, 65536, 200_000, 2**31 - 1])
@pytest.mark.parametrize("rows, block_rows, heads", [(1, 64, 1), (4097, 64, 32), (10**6, 16, 65535)])
def test_attention_grid_splits_sequences(batch, rows, block_rows, heads):
    grid, firsts, sizes = _chunked(LIB.dlk_plan_attention_grid, rows, block_rows, heads, batch)
    assert grid[0] == -(-rows // block_rows) and grid[1] == heads
    assert_covers_once(firsts, sizes, batch, MAX_GRID_YZ)
    assert len(firsts) == -(-batch // MAX_GRID_YZ)


@pytest.mark.parametrize("block_rows", [16, 64])  # the backward's row terms and SIMT blocks; tensor-core rows
@pytest.mark.parametrize("rows", [0, 1, 17])
@pytest.mark.parametrize("batch", [65536, 2**31 - 1])
def test_attention_backward_sequence_index_fits_int(block_rows, rows, batch):
    """The backward kernels take their chunk's first sequence as an int and form b = blockIdx.z +
    batch_offset in an int; a sequence without rows (no keys) plans no row blocks, so no launch."""
    grid, firsts, sizes = _chunked(LIB.dlk_plan_attention_grid, rows, block_rows, 32, batch)
    assert grid[0] == -(-rows // block_rows)
    assert_covers_once(firsts, sizes, batch, MAX_GRID_YZ)
    assert int(firsts[-1]) + int(sizes[-1]) - 1 <= INT32_MAX


def test_attention_grid_refuses_too_many_heads():
    assert _chunked(LIB.dlk_plan_attention_grid, 128, 64, 65536, 4) is None


def test_attention_blocks_map_to_each_sequence_once():
    """Launch l's block z handles sequence firsts[l] + z: every sequence exactly once."""
    batch = 3 * MAX_GRID_YZ + 17
    _, firsts, sizes = _chunked(LIB.dlk_plan_attention_grid, 128, 64, 8, batch)
    sequences = np.concatenate([first + np.arange(size) for first, size in zip(firsts, sizes)])
    assert np.array_equal(np.sort(sequences), np.arange(batch)) and len(sequences) == batch


# ---------------------------------------------------------------------------------------------
# rnn: batch tiles beyond 65,535 go to further per-step launches


@pytest.mark.parametrize("batch, batch_tile", [(1, 8), (8, 8), (65535 * 8, 8), (65535 * 8 + 1, 8),
                                               (10**6, 32), (3 * 65535 * 32 + 5, 32), (2**31, 32)])
def test_rnn_grid_covers_every_batch_row_once(batch, batch_tile):
    hidden = 1000
    grid, firsts, sizes = _chunked(LIB.dlk_plan_rnn_grid, hidden, 16, batch, batch_tile, grid_size=1)
    assert grid[0] == -(-hidden // 16)
    tiles = -(-batch // batch_tile)
    assert_covers_once(firsts, sizes, tiles, MAX_GRID_YZ)
    if batch <= 10**7:
        # Launch l, block y, tile row n handles batch row (firsts[l] + y) * batch_tile + n when below batch.
        rows = np.concatenate([(first + np.arange(size))[:, None] * batch_tile + np.arange(batch_tile)
                               for first, size in zip(firsts, sizes)]).ravel()
        rows = rows[rows < batch]
        assert len(rows) == batch and np.array_equal(np.unique(rows), np.arange(batch))

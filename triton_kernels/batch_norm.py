"""Triton kernels for fused BatchNorm (+ residual) (+ ReLU): statistics, apply, and the backward.

The math mirrors csrc/include/dlk/batch_norm.h (welford_merge, update_running_stats) and the CPU
reference csrc/cpu/batch_norm.cpp. The input (N, C, H, W) is viewed as (N, C, S), S = H * W,
contiguous in NCHW or channels_last; every per-channel tensor is in the stat dtype (float32, or
float64 for float64 input), and all arithmetic runs in that dtype.

Reductions (batch_norm_stats, batch_norm_backward_reduce) are split in two kernels so that they
fill the GPU even for C = 64 and M = N * S in the millions: the M elements of a channel are cut
into `num_chunks` chunks of whole tiles, each program reduces one chunk of one channel block to a
partial (Welford count/mean/m2 for the statistics, plain sums for the backward) in a small
workspace, and a second kernel merges a channel's partials in a fixed order, so results are
deterministic and do not depend on scheduling. Welford partials merged with Chan's formula stay
accurate when |mean| >> std, where sum / sum-of-squares cancels in fp32.

Tiling. A tile is [ROWS, INNER] elements, INNER contiguous in memory:
- channels_last: INNER = BLOCK_C consecutive channels of ROWS pixels (rows of the (M, C) matrix);
- NCHW: INNER = BLOCK_S consecutive positions of one (n, c) plane; in reductions the ROWS rows are
  the same channel of ROWS images, in elementwise kernels ROWS consecutive planes.
Elementwise kernels (apply, backward apply) fold the per-channel terms first, so each element
costs one or two FMAs between its loads and stores.
"""
import torch
import triton
import triton.language as tl

from ._activation import leaky_relu, leaky_relu_backward
from ._common import (INTERPRETING, accumulator_dtype, autotune_configs, cast_for_store, channel_block,
                                    check_4d, memory_format, target_programs)

# Tile sizes in elements (BLOCK = ROWS * INNER). Every kernel here is memory bound: the tile only
# has to keep enough bytes in flight per SM. The first config is the only one the interpreter
# uses (it cannot benchmark); it is small so the interpreter is quick and CPU tests see several
# tiles per chunk.
_REDUCE_CONFIGS = [
    triton.Config({"BLOCK": 512}, num_warps=4),
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 4096}, num_warps=8),
]
_ELEMENTWISE_CONFIGS = [
    triton.Config({"BLOCK": 512}, num_warps=4),
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=4),
    triton.Config({"BLOCK": 4096}, num_warps=4),
    triton.Config({"BLOCK": 4096}, num_warps=8),
    triton.Config({"BLOCK": 8192}, num_warps=8),
]
_REDUCE_CONFIGS = autotune_configs(_REDUCE_CONFIGS)
_ELEMENTWISE_CONFIGS = autotune_configs(_ELEMENTWISE_CONFIGS)
_MIN_BLOCK = min(config.kwargs["BLOCK"] for config in _REDUCE_CONFIGS + _ELEMENTWISE_CONFIGS)
_MAX_BLOCK = max(config.kwargs["BLOCK"] for config in _REDUCE_CONFIGS + _ELEMENTWISE_CONFIGS)

# Only `channels` and `spatial` are specialised: their divisibility by 16 is what lets rows be
# loaded with vector instructions. The tile-count arguments would only multiply compilations.
_REDUCE_KEY = ["num_rows", "batch", "channels", "spatial", "num_chunks", "CHANNELS_LAST", "INNER"]
_ELEMENTWISE_KEY = ["num_rows", "channels", "spatial", "CHANNELS_LAST", "INNER"]
_UNSPECIALIZED = ["num_rows", "batch", "num_chunks"]

# channels_last: channels per tile, wide enough for full 128-byte rows at fp16 (256 at fp32).
_MAX_BLOCK_C = 64
# NCHW: longest run of one plane per tile row (S = 56 * 56 = 3136 rows get 512-wide tiles).
_MAX_BLOCK_S = min(1024, _MIN_BLOCK)
# Split reductions: aim for a few programs per SM, but give each at least this many elements so
# the partials stay a small fraction of the traffic. The interpreter splits tiny inputs too, so
# CPU tests go through the cross-program merge.
_PROGRAMS_PER_SM = 4
_MIN_CHUNK_ELEMENTS = 32 if INTERPRETING else 16384
_MAX_CHUNKS = 1024
# Merge kernels: chunks x channels per step.
_MERGE_BLOCK_K = 32
_MERGE_BLOCK_C = 64


# --- shared pieces ----------------------------------------------------------------------------

@triton.jit
def _welford_combine(mean_a, m2_a, count_a, mean_b, m2_b, count_b):
    # welford_merge() of dlk/batch_norm.h, branch-free: an empty side (count 0) contributes
    # nothing, and two empty sides stay empty instead of producing 0 / 0.
    count = count_a + count_b
    delta = mean_b - mean_a
    b_share = count_b / tl.maximum(count, 1.0)
    return mean_a + delta * b_share, m2_a + m2_b + delta * delta * count_a * b_share, count


@triton.jit
def _reduction_program(num_rows, batch, channels, spatial, num_chunks, CHANNELS_LAST: tl.constexpr,
                       ROWS: tl.constexpr, INNER: tl.constexpr):
    """This program's channel (block) pid_c, its chunk, and the chunk's tiles [begin, end).

    Programs of one chunk are adjacent: in channels_last they read the same rows. Trailing chunks
    may be empty.
    """
    pid = tl.program_id(0)
    if CHANNELS_LAST:
        c_programs = tl.cdiv(channels, INNER)
        num_tiles = tl.cdiv(num_rows, ROWS)
    else:
        c_programs = channels
        num_tiles = tl.cdiv(batch, ROWS) * tl.cdiv(spatial, INNER)
    pid_c = pid % c_programs
    chunk = pid // c_programs
    per_chunk = tl.cdiv(num_tiles, num_chunks)
    begin = chunk * per_chunk
    return pid_c, chunk, begin, tl.minimum(begin + per_chunk, num_tiles)


@triton.jit
def _reduction_tile(t, pid_c, num_rows, batch, channels, spatial, CHANNELS_LAST: tl.constexpr,
                    INDEX_64: tl.constexpr, ROWS: tl.constexpr, INNER: tl.constexpr):
    """Offsets and mask of tile t of a reduction program, and the mask that counts elements.

    channels_last: rows t*ROWS.. of the (M, C) matrix, channel block pid_c; the count mask is
    per row, shared by the channels. NCHW: channel pid_c, tiles enumerate (image block, s block),
    s fastest so consecutive tiles walk along each plane.
    """
    if INDEX_64:
        t = t.to(tl.int64)
    if CHANNELS_LAST:
        rows = t * ROWS + tl.arange(0, ROWS)
        ch = pid_c * INNER + tl.arange(0, INNER)
        row_mask = rows < num_rows
        offsets = rows[:, None] * channels + ch[None, :]
        mask = row_mask[:, None] & (ch < channels)[None, :]
        return offsets, mask, row_mask[:, None]
    else:
        s_tiles = tl.cdiv(spatial, INNER)
        n = (t // s_tiles) * ROWS + tl.arange(0, ROWS)
        s = (t % s_tiles) * INNER + tl.arange(0, INNER)
        offsets = (n * channels + pid_c)[:, None] * spatial + s[None, :]
        mask = (n < batch)[:, None] & (s < spatial)[None, :]
        return offsets, mask, mask


@triton.jit
def _elementwise_tile(pid, num_rows, channels, spatial, CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr,
                      ROWS: tl.constexpr, INNER: tl.constexpr):
    """Offsets and mask of the tile of program pid, its channel index and channel mask.

    The channel tensors broadcast against the tile: [1, INNER] in channels_last (one channel per
    column), [ROWS, 1] in NCHW (one plane, hence one channel, per row). num_rows is M in
    channels_last and N * C (planes) in NCHW.
    """
    if INDEX_64:
        pid = pid.to(tl.int64)
    if CHANNELS_LAST:
        c_blocks = tl.cdiv(channels, INNER)
        rows = (pid // c_blocks) * ROWS + tl.arange(0, ROWS)
        ch = (pid % c_blocks) * INNER + tl.arange(0, INNER)
        ch_mask = ch < channels
        offsets = rows[:, None] * channels + ch[None, :]
        mask = (rows < num_rows)[:, None] & ch_mask[None, :]
        return offsets, mask, ch[None, :], ch_mask[None, :]
    else:
        s_blocks = tl.cdiv(spatial, INNER)
        planes = (pid // s_blocks) * ROWS + tl.arange(0, ROWS)
        s = (pid % s_blocks) * INNER + tl.arange(0, INNER)
        plane_mask = planes < num_rows
        offsets = planes[:, None] * spatial + s[None, :]
        mask = plane_mask[:, None] & (s < spatial)[None, :]
        return offsets, mask, (planes % channels)[:, None], plane_mask[:, None]


@triton.jit
def _activation_grad(grad_output_ptr, output_ptr, offsets, mask, negative_slope, ACTIVATION: tl.constexpr,
                     ACC_DTYPE: tl.constexpr):
    # The gradient reaching the normalisation: scaled by 1 or the slope from the saved output's sign.
    g = tl.load(grad_output_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
    if ACTIVATION:
        out = tl.load(output_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        g = leaky_relu_backward(g, out, negative_slope)
    return g


# --- statistics -------------------------------------------------------------------------------

@triton.autotune(configs=_REDUCE_CONFIGS, key=_REDUCE_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _bn_stats_partial_kernel(
    input_ptr, partial_ptr,  # partial: [3 (mean, m2, count), num_chunks, C]
    num_rows, batch, channels, spatial, num_chunks,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    INNER: tl.constexpr, BLOCK: tl.constexpr,
):
    ROWS: tl.constexpr = BLOCK // INNER
    pid_c, chunk, begin, end = _reduction_program(num_rows, batch, channels, spatial, num_chunks, CHANNELS_LAST,
                                                  ROWS, INNER)

    # One Welford state per lane. In channels_last all channels of a row see the same elements,
    # so the count (and the reciprocal that replaces a division per element) is per row.
    mean = tl.zeros([ROWS, INNER], ACC_DTYPE)
    m2 = tl.zeros([ROWS, INNER], ACC_DTYPE)
    if CHANNELS_LAST:
        count = tl.zeros([ROWS, 1], ACC_DTYPE)
    else:
        count = tl.zeros([ROWS, INNER], ACC_DTYPE)
    for t in range(begin, end):
        offsets, mask, counted = _reduction_tile(t, pid_c, num_rows, batch, channels, spatial,
                                                 CHANNELS_LAST, INDEX_64, ROWS, INNER)
        x = tl.load(input_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        count += counted.to(ACC_DTYPE)
        delta = x - mean
        mean += tl.where(counted, delta * (1.0 / tl.maximum(count, 1.0)), 0.0)
        m2 += tl.where(counted, delta * (x - mean), 0.0)

    count = tl.broadcast_to(count, [ROWS, INNER])
    plane = num_chunks * channels
    if CHANNELS_LAST:
        mean, m2, count = tl.reduce((mean, m2, count), 0, _welford_combine)
        ch = pid_c * INNER + tl.arange(0, INNER)
        ch_mask = ch < channels
        base = partial_ptr + chunk * channels + ch
        tl.store(base, mean, mask=ch_mask)
        tl.store(base + plane, m2, mask=ch_mask)
        tl.store(base + 2 * plane, count, mask=ch_mask)
    else:
        mean, m2, count = tl.reduce((mean, m2, count), 1, _welford_combine)
        mean, m2, count = tl.reduce((mean, m2, count), 0, _welford_combine)
        base = partial_ptr + chunk * channels + pid_c
        tl.store(base, mean)
        tl.store(base + plane, m2)
        tl.store(base + 2 * plane, count)


# total_count == 1 would otherwise become a constexpr int (Triton specialises ints equal to 1).
@triton.jit(do_not_specialize=["total_count"])
def _bn_stats_merge_kernel(
    partial_ptr, mean_ptr, invstd_ptr, running_mean_ptr, running_var_ptr,
    channels, num_chunks, total_count, momentum: tl.float64, eps: tl.float64,
    HAS_RUNNING_MEAN: tl.constexpr, HAS_RUNNING_VAR: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_mask = ch < channels
    plane = num_chunks * channels
    mean = tl.zeros([BLOCK_C], ACC_DTYPE)
    m2 = tl.zeros([BLOCK_C], ACC_DTYPE)
    count = tl.zeros([BLOCK_C], ACC_DTYPE)
    # Fixed order: the result depends only on the partials, never on scheduling.
    for k0 in range(0, num_chunks, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        mask = (k < num_chunks)[:, None] & ch_mask[None, :]
        ptrs = partial_ptr + k[:, None] * channels + ch[None, :]
        block = tl.reduce((tl.load(ptrs, mask=mask, other=0.0), tl.load(ptrs + plane, mask=mask, other=0.0),
                           tl.load(ptrs + 2 * plane, mask=mask, other=0.0)), 0, _welford_combine)
        mean, m2, count = _welford_combine(mean, m2, count, block[0], block[1], block[2])

    # The exact M, not the float sum of partial counts, which is inexact above 2^24 in fp32.
    m = total_count.to(ACC_DTYPE)
    biased_var = m2 / m
    # Scalars rounded to the stat dtype, as torch does. They arrive as fp64 so float64 stats
    # keep them exact; adding to a zero tensor also works for the interpreter's Python floats.
    eps = (tl.zeros([BLOCK_C], ACC_DTYPE) + eps).to(ACC_DTYPE)
    momentum = (tl.zeros([BLOCK_C], ACC_DTYPE) + momentum).to(ACC_DTYPE)
    # Correctly rounded, like ATen's 1 / sqrt(var + eps); Triton's fp32 sqrt and `/` are approximate.
    if ACC_DTYPE == tl.float64:
        invstd = 1.0 / tl.sqrt(biased_var + eps)
    else:
        invstd = tl.math.div_rn(1.0, tl.sqrt_rn(biased_var + eps))
    tl.store(mean_ptr + ch, mean, mask=ch_mask)
    tl.store(invstd_ptr + ch, invstd, mask=ch_mask)

    # update_running_stats() of dlk/batch_norm.h.
    if HAS_RUNNING_MEAN:
        running = tl.load(running_mean_ptr + ch, mask=ch_mask)
        tl.store(running_mean_ptr + ch, (1.0 - momentum) * running + momentum * mean, mask=ch_mask)
    if HAS_RUNNING_VAR:
        unbiased = tl.where(total_count > 1, biased_var * (m / tl.maximum(m - 1.0, 1.0)), biased_var)
        running = tl.load(running_var_ptr + ch, mask=ch_mask)
        tl.store(running_var_ptr + ch, (1.0 - momentum) * running + momentum * unbiased, mask=ch_mask)


# --- apply ------------------------------------------------------------------------------------

@triton.autotune(configs=_ELEMENTWISE_CONFIGS, key=_ELEMENTWISE_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _bn_apply_kernel(
    input_ptr, mean_ptr, invstd_ptr, weight_ptr, bias_ptr, residual_ptr, output_ptr,
    num_rows, channels, spatial, negative_slope: tl.float64,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    INNER: tl.constexpr, BLOCK: tl.constexpr,
):
    ROWS: tl.constexpr = BLOCK // INNER
    offsets, mask, ch, ch_mask = _elementwise_tile(tl.program_id(0), num_rows, channels, spatial,
                                                   CHANNELS_LAST, INDEX_64, ROWS, INNER)
    scale = tl.load(invstd_ptr + ch, mask=ch_mask, other=0.0)
    if HAS_WEIGHT:
        scale *= tl.load(weight_ptr + ch, mask=ch_mask, other=0.0)
    shift = -tl.load(mean_ptr + ch, mask=ch_mask, other=0.0) * scale
    if HAS_BIAS:
        shift += tl.load(bias_ptr + ch, mask=ch_mask, other=0.0)

    y = tl.load(input_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE) * scale + shift
    if HAS_RESIDUAL:
        y += tl.load(residual_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
    if ACTIVATION:
        y = leaky_relu(y, negative_slope)
    tl.store(output_ptr + offsets, cast_for_store(y, output_ptr.dtype.element_ty), mask=mask)


# --- backward ---------------------------------------------------------------------------------

@triton.autotune(configs=_REDUCE_CONFIGS, key=_REDUCE_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _bn_backward_reduce_partial_kernel(
    grad_output_ptr, output_ptr, input_ptr, mean_ptr,
    partial_ptr,  # [2 (sum g, sum g * (x - mean)), num_chunks, C]
    num_rows, batch, channels, spatial, num_chunks, negative_slope: tl.float64,
    ACTIVATION: tl.constexpr, CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    INNER: tl.constexpr, BLOCK: tl.constexpr,
):
    ROWS: tl.constexpr = BLOCK // INNER
    pid_c, chunk, begin, end = _reduction_program(num_rows, batch, channels, spatial, num_chunks, CHANNELS_LAST,
                                                  ROWS, INNER)
    if CHANNELS_LAST:
        ch = pid_c * INNER + tl.arange(0, INNER)
        mean = tl.load(mean_ptr + ch, mask=ch < channels, other=0.0)[None, :]
    else:
        mean = tl.load(mean_ptr + pid_c)

    # Sum g * (x - mean), not g * x: the latter minus mean * sum(g) cancels when |mean| >> std.
    # invstd is applied once per channel by the merge kernel. Masked lanes load g = 0.
    sum_dy = tl.zeros([ROWS, INNER], ACC_DTYPE)
    sum_dy_xmu = tl.zeros([ROWS, INNER], ACC_DTYPE)
    for t in range(begin, end):
        offsets, mask, _ = _reduction_tile(t, pid_c, num_rows, batch, channels, spatial,
                                           CHANNELS_LAST, INDEX_64, ROWS, INNER)
        g = _activation_grad(grad_output_ptr, output_ptr, offsets, mask, negative_slope, ACTIVATION, ACC_DTYPE)
        x = tl.load(input_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        sum_dy += g
        sum_dy_xmu += g * (x - mean)

    plane = num_chunks * channels
    if CHANNELS_LAST:
        ch_mask = ch < channels
        base = partial_ptr + chunk * channels + ch
        tl.store(base, tl.sum(sum_dy, 0), mask=ch_mask)
        tl.store(base + plane, tl.sum(sum_dy_xmu, 0), mask=ch_mask)
    else:
        base = partial_ptr + chunk * channels + pid_c
        tl.store(base, tl.sum(tl.sum(sum_dy, 1), 0))
        tl.store(base + plane, tl.sum(tl.sum(sum_dy_xmu, 1), 0))


@triton.jit
def _bn_backward_reduce_merge_kernel(
    partial_ptr, invstd_ptr, sum_dy_ptr, sum_dy_xhat_ptr, channels, num_chunks,
    ACC_DTYPE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_mask = ch < channels
    plane = num_chunks * channels
    sum_dy = tl.zeros([BLOCK_C], ACC_DTYPE)
    sum_dy_xmu = tl.zeros([BLOCK_C], ACC_DTYPE)
    for k0 in range(0, num_chunks, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        mask = (k < num_chunks)[:, None] & ch_mask[None, :]
        ptrs = partial_ptr + k[:, None] * channels + ch[None, :]
        sum_dy += tl.sum(tl.load(ptrs, mask=mask, other=0.0), 0)
        sum_dy_xmu += tl.sum(tl.load(ptrs + plane, mask=mask, other=0.0), 0)
    tl.store(sum_dy_ptr + ch, sum_dy, mask=ch_mask)
    tl.store(sum_dy_xhat_ptr + ch, sum_dy_xmu * tl.load(invstd_ptr + ch, mask=ch_mask, other=0.0), mask=ch_mask)


@triton.autotune(configs=_ELEMENTWISE_CONFIGS, key=_ELEMENTWISE_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED + ["total_count"])
def _bn_backward_apply_kernel(
    grad_output_ptr, output_ptr, input_ptr, mean_ptr, invstd_ptr, weight_ptr, sum_dy_ptr, sum_dy_xhat_ptr,
    grad_input_ptr, grad_residual_ptr,
    num_rows, channels, spatial, total_count, negative_slope: tl.float64,
    HAS_WEIGHT: tl.constexpr, TRAINING: tl.constexpr, ACTIVATION: tl.constexpr, WANT_GRAD_RESIDUAL: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    INNER: tl.constexpr, BLOCK: tl.constexpr,
):
    ROWS: tl.constexpr = BLOCK // INNER
    offsets, mask, ch, ch_mask = _elementwise_tile(tl.program_id(0), num_rows, channels, spatial,
                                                   CHANNELS_LAST, INDEX_64, ROWS, INNER)
    invstd = tl.load(invstd_ptr + ch, mask=ch_mask, other=0.0)
    g_coef = invstd
    if HAS_WEIGHT:
        g_coef *= tl.load(weight_ptr + ch, mask=ch_mask, other=0.0)

    g = _activation_grad(grad_output_ptr, output_ptr, offsets, mask, negative_slope, ACTIVATION, ACC_DTYPE)
    grad = g * g_coef
    if TRAINING:
        # weight * invstd * (g - sum_dy / M - xhat * sum_dy_xhat / M), folded per channel into
        # g_coef * g + x_coef * (x - mean) + constant; x - mean stays explicit for accuracy
        # when |mean| >> std.
        if ACC_DTYPE == tl.float64:
            inv_m = 1.0 / total_count.to(ACC_DTYPE)
        else:
            inv_m = tl.math.div_rn(1.0, total_count.to(ACC_DTYPE))
        x_coef = -g_coef * invstd * tl.load(sum_dy_xhat_ptr + ch, mask=ch_mask, other=0.0) * inv_m
        constant = -g_coef * tl.load(sum_dy_ptr + ch, mask=ch_mask, other=0.0) * inv_m
        x = tl.load(input_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        grad += x_coef * (x - tl.load(mean_ptr + ch, mask=ch_mask, other=0.0)) + constant
    tl.store(grad_input_ptr + offsets, cast_for_store(grad, grad_input_ptr.dtype.element_ty), mask=mask)
    if WANT_GRAD_RESIDUAL:
        tl.store(grad_residual_ptr + offsets, cast_for_store(g, grad_residual_ptr.dtype.element_ty), mask=mask)


# --- launchers --------------------------------------------------------------------------------

def _stat_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_like_input(tensor, input, name, channels_last):
    if (not isinstance(tensor, torch.Tensor) or tensor.shape != input.shape or tensor.dtype != input.dtype
            or tensor.device != input.device
            or not tensor.is_contiguous(memory_format=memory_format(channels_last))):
        raise ValueError(f"batch_norm (triton): {name} must have the input's shape {tuple(input.shape)}, dtype "
                         f"{input.dtype}, layout and device, got {_describe(tensor)}")


def _check_per_channel(tensor, input, name):
    dtype = _stat_dtype(input.dtype)
    if (not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or tensor.shape[0] != input.shape[1]
            or tensor.dtype != dtype or tensor.device != input.device or not tensor.is_contiguous()):
        raise ValueError(f"batch_norm (triton): {name} must be a contiguous 1-D {dtype} tensor of length "
                         f"C = {input.shape[1]} on {input.device}, got {_describe(tensor)}")


def _describe(tensor):
    if not isinstance(tensor, torch.Tensor):
        return type(tensor).__name__
    return f"{tensor.dtype} of shape {tuple(tensor.shape)}, strides {tensor.stride()} on {tensor.device}"


def _spatial_block(spatial):
    """Positions per NCHW tile row: the widest power of two that leaves few idle lanes.

    Idle lanes cost no memory traffic but do cost issue slots and registers; 3136 -> 512 (7/8
    used), 784 -> 128, 196 -> 32, 49 -> 64.
    """
    best, best_use = None, 0.0
    block = min(triton.next_power_of_2(spatial), _MAX_BLOCK_S)
    while block >= 16:
        use = spatial / (triton.cdiv(spatial, block) * block)
        if use >= 0.85:
            return block
        if use > best_use + 1e-9:
            best, best_use = block, use
        block //= 2
    return best or min(triton.next_power_of_2(spatial), _MAX_BLOCK_S)


def _tile_inner(channels, spatial, channels_last):
    return channel_block(channels, _MAX_BLOCK_C) if channels_last else _spatial_block(spatial)


def _needs_int64(numel, channels, spatial):
    # Lanes past the end of the last tile still form offsets; leave room for a tile of slack.
    return numel + _MAX_BLOCK * max(channels, spatial, 1) >= 2**31


def _split(input, channels_last):
    """(c_programs, num_chunks): programs per chunk (channel blocks) and chunks per channel."""
    batch, channels = input.shape[:2]
    num_rows = input.numel() // max(channels, 1)
    inner = channel_block(channels, _MAX_BLOCK_C) if channels_last else 1
    c_programs = triton.cdiv(channels, inner) if channels_last else channels
    wanted = triton.cdiv(target_programs(input.device, _PROGRAMS_PER_SM), c_programs)
    affordable = max(1, num_rows * min(inner, channels) // _MIN_CHUNK_ELEMENTS)
    return c_programs, max(1, min(wanted, affordable, _MAX_CHUNKS))


def _geometry(input, channels_last):
    """(N, C, S) and the layout the kernels use (the caller's layout was checked already).

    With S == 1 or C == 1 both layouts are the same bytes; the channels_last kernels suit the
    first (one long run of channels), the NCHW kernels the second (one long run per image).
    """
    batch, channels, height, width = input.shape
    spatial = height * width
    if spatial == 1:
        channels_last = True
    elif channels == 1:
        channels_last = False
    return batch, channels, spatial, channels_last


def batch_norm_stats(input, running_mean, running_var, momentum, eps, channels_last):
    """Per-channel batch mean and invstd = 1 / sqrt(biased var + eps) of a 4-D tensor.

    Updates running_mean / running_var (either may be None) in place as torch does, with the
    unbiased variance. Deterministic.
    """
    check_4d("batch_norm", "input", input, channels_last)
    batch, channels, spatial, channels_last = _geometry(input, channels_last)
    stat_dtype = _stat_dtype(input.dtype)
    mean = torch.empty(channels, dtype=stat_dtype, device=input.device)
    invstd = torch.empty(channels, dtype=stat_dtype, device=input.device)
    for tensor, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        if tensor is not None:
            _check_per_channel(tensor, input, name)
    if channels == 0:
        return mean, invstd

    num_rows = batch * spatial
    acc_dtype = accumulator_dtype(input.dtype)
    c_programs, num_chunks = _split(input, channels_last)
    partial = torch.empty((3, num_chunks, channels), dtype=stat_dtype, device=input.device)
    if num_rows == 0:
        partial.zero_()
    else:
        _bn_stats_partial_kernel[(c_programs * num_chunks,)](
            input, partial, num_rows, batch, channels, spatial, num_chunks,
            CHANNELS_LAST=channels_last, INDEX_64=_needs_int64(input.numel(), channels, spatial),
            ACC_DTYPE=acc_dtype, INNER=_tile_inner(channels, spatial, channels_last),
        )
    _bn_stats_merge_kernel[(triton.cdiv(channels, _MERGE_BLOCK_C),)](
        partial, mean, invstd,
        running_mean if running_mean is not None else mean, running_var if running_var is not None else mean,
        channels, num_chunks, num_rows, float(momentum), float(eps),
        HAS_RUNNING_MEAN=running_mean is not None, HAS_RUNNING_VAR=running_var is not None,
        ACC_DTYPE=acc_dtype, BLOCK_K=_MERGE_BLOCK_K, BLOCK_C=_MERGE_BLOCK_C,
    )
    return mean, invstd


def _elementwise_grid(num_rows, channels, spatial, inner, channels_last):
    if channels_last:
        return lambda meta: (triton.cdiv(num_rows, meta["BLOCK"] // inner) * triton.cdiv(channels, inner),)
    return lambda meta: (triton.cdiv(num_rows, meta["BLOCK"] // inner) * triton.cdiv(spatial, inner),)


def batch_norm_apply(input, mean, invstd, weight, bias, residual, activation, channels_last, negative_slope=0.0):
    """act((input - mean) * invstd * weight + bias + residual), act = LeakyReLU(negative_slope) if `activation`
    (slope 0: ReLU) else identity."""
    check_4d("batch_norm", "input", input, channels_last)
    _check_per_channel(mean, input, "mean")
    _check_per_channel(invstd, input, "invstd")
    for tensor, name in ((weight, "weight"), (bias, "bias")):
        if tensor is not None:
            _check_per_channel(tensor, input, name)
    if residual is not None:
        _check_like_input(residual, input, "residual", channels_last)
    output = torch.empty_like(input, memory_format=memory_format(channels_last))
    if output.numel() == 0:
        return output

    batch, channels, spatial, channels_last = _geometry(input, channels_last)
    num_rows = batch * spatial if channels_last else batch * channels
    inner = _tile_inner(channels, spatial, channels_last)
    _bn_apply_kernel[_elementwise_grid(num_rows, channels, spatial, inner, channels_last)](
        input, mean, invstd,
        weight if weight is not None else mean, bias if bias is not None else mean,
        residual if residual is not None else input, output,
        num_rows, channels, spatial, float(negative_slope),
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
        ACTIVATION=bool(activation), CHANNELS_LAST=channels_last, INDEX_64=_needs_int64(input.numel(), channels, spatial),
        ACC_DTYPE=accumulator_dtype(input.dtype), INNER=inner,
    )
    return output


def _check_backward_inputs(grad_output, output, input, mean, invstd, activation, channels_last):
    check_4d("batch_norm", "input", input, channels_last)
    _check_like_input(grad_output, input, "grad_output", channels_last)
    if activation:
        if output is None:
            raise ValueError("batch_norm (triton): output is needed with the activation (its sign picks the "
                             "gradient's scale)")
        _check_like_input(output, input, "output", channels_last)
    _check_per_channel(mean, input, "mean")
    _check_per_channel(invstd, input, "invstd")


def batch_norm_backward_reduce(grad_output, output, input, mean, invstd, activation, channels_last,
                               negative_slope=0.0):
    """(sum_dy, sum_dy_xhat) per channel, g = grad_output through the activation when it is on:
    sum_dy = sum g, sum_dy_xhat = sum g * (x - mean) * invstd. Deterministic."""
    _check_backward_inputs(grad_output, output, input, mean, invstd, activation, channels_last)
    batch, channels, spatial, channels_last = _geometry(input, channels_last)
    stat_dtype = _stat_dtype(input.dtype)
    sum_dy = torch.empty(channels, dtype=stat_dtype, device=input.device)
    sum_dy_xhat = torch.empty(channels, dtype=stat_dtype, device=input.device)
    if channels == 0:
        return sum_dy, sum_dy_xhat

    num_rows = batch * spatial
    acc_dtype = accumulator_dtype(input.dtype)
    c_programs, num_chunks = _split(input, channels_last)
    partial = torch.empty((2, num_chunks, channels), dtype=stat_dtype, device=input.device)
    if num_rows == 0:
        partial.zero_()
    else:
        _bn_backward_reduce_partial_kernel[(c_programs * num_chunks,)](
            grad_output, output if activation else grad_output, input, mean, partial,
            num_rows, batch, channels, spatial, num_chunks, float(negative_slope),
            ACTIVATION=bool(activation), CHANNELS_LAST=channels_last, INDEX_64=_needs_int64(input.numel(), channels, spatial),
            ACC_DTYPE=acc_dtype, INNER=_tile_inner(channels, spatial, channels_last),
        )
    _bn_backward_reduce_merge_kernel[(triton.cdiv(channels, _MERGE_BLOCK_C),)](
        partial, invstd, sum_dy, sum_dy_xhat, channels, num_chunks,
        ACC_DTYPE=acc_dtype, BLOCK_K=_MERGE_BLOCK_K, BLOCK_C=_MERGE_BLOCK_C,
    )
    return sum_dy, sum_dy_xhat


def batch_norm_backward_apply(grad_output, output, input, mean, invstd, weight, sum_dy, sum_dy_xhat, training,
                              activation, want_grad_residual, channels_last, negative_slope=0.0):
    """(grad_input, grad_residual). training: weight * invstd * (g - sum_dy / M - xhat * sum_dy_xhat / M);
    eval: g * weight * invstd. grad_residual is g, or an empty tensor unless want_grad_residual."""
    _check_backward_inputs(grad_output, output, input, mean, invstd, activation, channels_last)
    if weight is not None:
        _check_per_channel(weight, input, "weight")
    _check_per_channel(sum_dy, input, "sum_dy")
    _check_per_channel(sum_dy_xhat, input, "sum_dy_xhat")
    fmt = memory_format(channels_last)
    grad_input = torch.empty_like(input, memory_format=fmt)
    if want_grad_residual:
        grad_residual = torch.empty_like(input, memory_format=fmt)
    else:
        grad_residual = torch.empty(0, dtype=input.dtype, device=input.device)
    if grad_input.numel() == 0:
        return grad_input, grad_residual

    batch, channels, spatial, channels_last = _geometry(input, channels_last)
    num_rows = batch * spatial if channels_last else batch * channels
    inner = _tile_inner(channels, spatial, channels_last)
    _bn_backward_apply_kernel[_elementwise_grid(num_rows, channels, spatial, inner, channels_last)](
        grad_output, output if activation else grad_output, input, mean, invstd,
        weight if weight is not None else invstd, sum_dy, sum_dy_xhat,
        grad_input, grad_residual if want_grad_residual else grad_input,
        num_rows, channels, spatial, batch * spatial, float(negative_slope),
        HAS_WEIGHT=weight is not None, TRAINING=bool(training), ACTIVATION=bool(activation),
        WANT_GRAD_RESIDUAL=bool(want_grad_residual), CHANNELS_LAST=channels_last,
        INDEX_64=_needs_int64(input.numel(), channels, spatial), ACC_DTYPE=accumulator_dtype(input.dtype),
        INNER=inner,
    )
    return grad_input, grad_residual

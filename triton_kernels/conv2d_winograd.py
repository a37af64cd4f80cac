"""Triton kernels for Winograd convolution F(2x2,3x3) and F(4x4,3x3): weight transform and forward
(3x3 kernel, stride 1, dilation 1, groups 1), with the fused bias + residual + ReLU epilogue.

The transforms mirror csrc/include/dlk/winograd.h: the same 1-D formulas (written once below as
_input_1d, _weight_1d, _output_1d), applied to columns first, then rows, and the same precision
contract: U = G g G^T and V = B^T d B are computed in fp32 (fp64 for double) and rounded to the
input dtype, the GEMM operand type; M = V U^T accumulates in fp32 (fp64); the output transform and
the epilogue run in fp32 (fp64). Layouts and padding follow dlk/conv2d.h: NCHW or NHWC, top/left
padding that may be negative (the Winograd data gradient uses 2 - pad), bottom/right padding implied
by the output size, and taps outside the input reading zero. Output tile (th, tw) covers output rows
th*m .. th*m+m-1 (clipped to the output) and reads input rows th*m - pad_h .. th*m - pad_h + alpha - 1.

Two kernels (alpha = m + 2, T = N * tiles_h * tiles_w):
1. _winograd_input_kernel: a program transforms BLOCK_T tiles x BLOCK_C channels and writes
   V (alpha^2, T, C) to a workspace in the input dtype, C contiguous whatever the input layout, so
   the GEMM reads both operands with the reduction dimension contiguous (what tensor cores want).
2. _winograd_gemm_kernel: a program owns BLOCK_T tiles x BLOCK_K output channels and runs the
   alpha^2 GEMMs M[xi] = V[xi] U[xi]^T on tensor cores (tl.dot), folds M into the output tiles as
   it goes, then applies the epilogue and stores; M never leaves registers. Holding all alpha^2
   accumulators to the end (36 [BLOCK_T, BLOCK_K] fp32 tensors for F(4,3)) would leave room for
   16-wide tiles only, so the GEMMs go one column b of M at a time: the alpha accumulators M[:, b]
   get the column pass of A^T M A (_output_1d, which the header also applies first), and the m
   results are added into the m*m output accumulators times A^T's column b, the row pass done term
   by term. Peak live accumulators: alpha + m^2 (8 for F(2,3), 22 for F(4,3)), which fits 64 x 64
   (F(2,3)) and 64 x 32 (F(4,3)) tiles on 8 warps without spills on sm_90. The row pass thus sums
   left to right rather than in the header's grouping: fp32 rounding differences only, after a GEMM
   whose summation order differs from the reference's anyway.
   Programs that share a tile block are adjacent in launch order, so V is read from DRAM about once
   and re-read from L2 by the other channel blocks; U is small and stays in L2.
Fusing the input transform into the GEMM kernel would save the V round trip, but each channel block
would redo the transform (K / BLOCK_K times), and at the BLOCK_K the accumulators allow that is
more CUDA-core work than the tensor-core GEMM it feeds.
"""
import torch
import triton
import triton.language as tl

from ._activation import leaky_relu
from ._common import (accumulator_dtype, autotune_configs, cast_for_store, check_4d, dot_dtype,
                                    input_precision, memory_format)

# Input transform: memory bound. A block element holds alpha^2 + alpha fp32 values at the peak
# (20 for F(2,3), 42 for F(4,3)): _prune_input_configs keeps the blocks whose values fit in
# _MAX_INPUT_REGISTERS per thread (F(4,3): 4 elements per thread). The first config is the only
# one the interpreter runs (it cannot benchmark).
_INPUT_CONFIGS = autotune_configs([
    triton.Config({"BLOCK_T": 16, "BLOCK_C": 32}, num_warps=4),
    triton.Config({"BLOCK_T": 32, "BLOCK_C": 32}, num_warps=4),
    triton.Config({"BLOCK_T": 16, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_T": 64, "BLOCK_C": 16}, num_warps=4),
    triton.Config({"BLOCK_T": 32, "BLOCK_C": 64}, num_warps=8),
    triton.Config({"BLOCK_T": 64, "BLOCK_C": 32}, num_warps=8),
    triton.Config({"BLOCK_T": 32, "BLOCK_C": 32}, num_warps=8),
    triton.Config({"BLOCK_T": 16, "BLOCK_C": 64}, num_warps=8),
    triton.Config({"BLOCK_T": 64, "BLOCK_C": 16}, num_warps=8),
])
# GEMM + output transform. Hopper's wgmma wants BLOCK_T a multiple of 64 per warpgroup. The
# accumulators (alpha + m^2 tensors of [BLOCK_T, BLOCK_K]) decide which tiles fit:
# _prune_gemm_configs keeps those needing at most _MAX_ACCUMULATOR_REGISTERS per thread, leaving
# ~70 for addressing and the epilogue (ptxas, sm_90, fp16: F(2,3) 64 x 64 on 8 warps uses 218
# registers, F(4,3) 64 x 32 on 8 warps 242, neither spills). Shared memory per stage is
# alpha * (BLOCK_T + BLOCK_K) * BLOCK_C operands (74 KB for F(4,3) 64 x 32 x 64 at fp16), hence two
# to four stages; configs that exceed the device's shared memory fail to launch and the autotuner
# skips them. The first config (the interpreter's, and the one fp64 fits) is small so CPU tests
# cover several tile, channel and reduction blocks.
_GEMM_CONFIGS = autotune_configs([
    triton.Config({"BLOCK_T": 32, "BLOCK_K": 16, "BLOCK_C": 16}, num_warps=4, num_stages=2),
    # F(2,3): 8 accumulators.
    triton.Config({"BLOCK_T": 64, "BLOCK_K": 64, "BLOCK_C": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_T": 64, "BLOCK_K": 64, "BLOCK_C": 32}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_T": 128, "BLOCK_K": 32, "BLOCK_C": 64}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_T": 64, "BLOCK_K": 32, "BLOCK_C": 64}, num_warps=4, num_stages=3),
    # F(4,3): 22 accumulators.
    triton.Config({"BLOCK_T": 64, "BLOCK_K": 32, "BLOCK_C": 64}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_T": 64, "BLOCK_K": 32, "BLOCK_C": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_T": 128, "BLOCK_K": 16, "BLOCK_C": 64}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_T": 64, "BLOCK_K": 16, "BLOCK_C": 64}, num_warps=4, num_stages=3),
])
_MAX_INPUT_REGISTERS = 176
_MAX_ACCUMULATOR_REGISTERS = 176
# Weight transform: a one-off per weight version, tiny next to the convolution.
_WEIGHT_BLOCK = 128

# The tile counts, sizes and padding change with every layer and would only multiply compilations
# if specialised; the channel counts stay specialised, their divisibility gives vector loads.
_UNSPECIALIZED = ["num_tiles", "tiles_h", "tiles_w", "in_h", "in_w", "out_h", "out_w", "pad_h", "pad_w"]


# --- the transforms, mirroring csrc/include/dlk/winograd.h ------------------------------------

@triton.jit
def _input_1d(d, TILE: tl.constexpr):
    # winograd_input_1d: B^T d, alpha values -> alpha values.
    if TILE == 2:
        return (d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3])
    else:
        return (4 * d[0] - 5 * d[2] + d[4],
                d[3] + d[4] - 4 * (d[1] + d[2]),
                4 * (d[1] - d[2]) - d[3] + d[4],
                2 * (d[3] - d[1]) - d[2] + d[4],
                2 * (d[1] - d[3]) - d[2] + d[4],
                4 * d[1] - 5 * d[3] + d[5])


@triton.jit
def _divide(x, divisor: tl.constexpr):
    # IEEE division, as in C++: Triton's fp32 `/` is the approximate div.full.f32.
    if x.dtype == tl.float32:
        return tl.div_rn(x, divisor)
    else:
        return x / divisor


@triton.jit
def _weight_1d(g, TILE: tl.constexpr):
    # winograd_weight_1d: G g, 3 values -> alpha values.
    if TILE == 2:
        return (g[0], 0.5 * (g[0] + g[1] + g[2]), 0.5 * (g[0] - g[1] + g[2]), g[2])
    else:
        return (_divide(g[0], 4.0),
                _divide(-(g[0] + g[1] + g[2]), 6.0),
                _divide(-(g[0] - g[1] + g[2]), 6.0),
                _divide(g[0], 24.0) + _divide(g[1], 12.0) + _divide(g[2], 6.0),
                _divide(g[0], 24.0) - _divide(g[1], 12.0) + _divide(g[2], 6.0),
                g[2])


@triton.jit
def _output_1d(m, TILE: tl.constexpr):
    # winograd_output_1d: A^T m, alpha values -> m values.
    if TILE == 2:
        return (m[0] + m[1] + m[2], m[1] - m[2] - m[3])
    else:
        a = m[1] + m[2]
        b = m[1] - m[2]
        c = m[3] + m[4]
        e = m[3] - m[4]
        return (m[0] + a + c, b + 2 * e, a + 4 * c, b + 8 * e + m[5])


@triton.jit
def _add_column(y, m, b, TILE: tl.constexpr, ALPHA: tl.constexpr):
    """Column b of M (alpha values) folded into the TILE x TILE outputs y (a row-major tuple):
    its column pass A^T m, then y[i][j] += A^T[j][b] * (A^T m)[i], the row pass term by term.
    A^T's column b is _output_1d of the unit vector e_b, so the matrix is written only once."""
    column = _output_1d(m, TILE)
    unit = ()
    for a in tl.static_range(ALPHA):
        unit = unit + (tl.where(b == a, 1.0, 0.0),)
    weights = _output_1d(unit, TILE)
    out = ()
    for i in tl.static_range(TILE):
        for j in tl.static_range(TILE):
            out = out + (y[i * TILE + j] + weights[j] * column[i],)
    return out


# --- kernels ------------------------------------------------------------------------------------

@triton.jit
def _widen(count, INDEX_64: tl.constexpr):
    # A size as int64 when offsets may pass 2**31, so products with it do not wrap (a size equal to 1
    # arrives as a constexpr, hence the add rather than .to()).
    if INDEX_64:
        return count + tl.zeros([], tl.int64)
    else:
        return count


@triton.jit
def _tile_origin(t, tiles_h, tiles_w, TILE: tl.constexpr):
    # Image and top-left output position of tile t (tiles numbered n-major, then rows, then columns).
    tw = t % tiles_w
    th = (t // tiles_w) % tiles_h
    return t // tiles_w // tiles_h, th * TILE, tw * TILE


@triton.jit
def _offsets(n, h, w, c, channels, size_h, size_w, CHANNELS_LAST: tl.constexpr):
    # conv_offset(): [rows] pixel coordinates x [cols] channels of an NCHW or NHWC tensor.
    if CHANNELS_LAST:
        return ((n * size_h + h) * size_w + w)[:, None] * channels + c[None, :]
    else:
        return ((n[:, None] * channels + c[None, :]) * size_h + h[:, None]) * size_w + w[:, None]


@triton.jit
def _winograd_weight_kernel(
    weight_ptr, transformed_ptr, out_channels, channels,
    TILE: tl.constexpr, CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """U[xi][k][c] = (G g G^T)[xi] for BLOCK (k, c) pairs, g = weight[k, c] (3 x 3)."""
    ALPHA: tl.constexpr = TILE + 2
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    pair = pid * BLOCK + tl.arange(0, BLOCK)  # k * C + c
    plane = _widen(out_channels, INDEX_64) * channels
    mask = pair < plane
    k = pair // channels
    c = pair % channels
    # winograd_weight_tile: columns of g, then rows of the alpha x 3 result.
    columns = ()
    for s in tl.static_range(3):
        g = ()
        for r in tl.static_range(3):
            if CHANNELS_LAST:
                offset = (k * 9 + r * 3 + s) * channels + c
            else:
                offset = pair * 9 + r * 3 + s
            g = g + (tl.load(weight_ptr + offset, mask=mask, other=0.0).to(ACC_DTYPE),)
        columns = columns + (_weight_1d(g, TILE),)
    for i in tl.static_range(ALPHA):
        u = _weight_1d((columns[0][i], columns[1][i], columns[2][i]), TILE)
        for j in tl.static_range(ALPHA):
            tl.store(transformed_ptr + (i * ALPHA + j) * plane + pair,
                     cast_for_store(u[j], transformed_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=_INPUT_CONFIGS, key=["num_tiles", "channels", "TILE", "CHANNELS_LAST"],
                 prune_configs_by={"early_config_prune": lambda configs, named_args, **kwargs:
                                   _prune_input_configs(configs, **kwargs)})
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _winograd_input_kernel(
    input_ptr, v_ptr, num_tiles, channels, in_h, in_w, tiles_h, tiles_w, pad_h, pad_w,
    TILE: tl.constexpr, CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """V[xi][t][c] = (B^T d B)[xi] for BLOCK_T tiles x BLOCK_C channels, d the tile's input window."""
    ALPHA: tl.constexpr = TILE + 2
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    if INDEX_64:
        pid_t = pid_t.to(tl.int64)
    num_tiles = _widen(num_tiles, INDEX_64)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < channels
    n, h0, w0 = _tile_origin(t, tiles_h, tiles_w, TILE)
    h0 -= pad_h
    w0 -= pad_w
    t_mask = t < num_tiles
    # winograd_input_tile: columns of d, then rows of the result.
    columns = ()
    for j in tl.static_range(ALPHA):
        w = w0 + j
        column_ok = t_mask & (w >= 0) & (w < in_w)
        d = ()
        for i in tl.static_range(ALPHA):
            h = h0 + i
            mask = (column_ok & (h >= 0) & (h < in_h))[:, None] & c_mask[None, :]
            offsets = _offsets(n, h, w, c, channels, in_h, in_w, CHANNELS_LAST)
            d = d + (tl.load(input_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE),)
        columns = columns + (_input_1d(d, TILE),)
    plane = num_tiles * channels
    v_offsets = t[:, None] * channels + c[None, :]
    store_mask = t_mask[:, None] & c_mask[None, :]
    for i in tl.static_range(ALPHA):
        row = ()
        for j in tl.static_range(ALPHA):
            row = row + (columns[j][i],)
        v = _input_1d(row, TILE)
        for j in tl.static_range(ALPHA):
            tl.store(v_ptr + (i * ALPHA + j) * plane + v_offsets, cast_for_store(v[j], v_ptr.dtype.element_ty),
                     mask=store_mask)


@triton.autotune(configs=_GEMM_CONFIGS, key=["num_tiles", "channels", "out_channels", "TILE", "CHANNELS_LAST"],
                 prune_configs_by={"early_config_prune": lambda configs, named_args, **kwargs:
                                   _prune_gemm_configs(configs, **kwargs)})
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _winograd_gemm_kernel(
    v_ptr, u_ptr, bias_ptr, residual_ptr, output_ptr,
    num_tiles, channels, out_channels, tiles_h, tiles_w, out_h, out_w, negative_slope: tl.float64,
    TILE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, DOT_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """output[tile t, channel k] = act(A^T M A + bias + residual), M[xi] = V[xi] U[xi]^T over C."""
    ALPHA: tl.constexpr = TILE + 2
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    num_tiles = _widen(num_tiles, INDEX_64)
    # Channel blocks vary fastest, so the programs reading one block of V run together (L2 reuse).
    num_k_blocks = tl.cdiv(out_channels, BLOCK_K)
    t = (pid // num_k_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
    k = (pid % num_k_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
    t_mask = t < num_tiles
    k_mask = k < out_channels
    c = tl.arange(0, BLOCK_C)
    v_plane = num_tiles * channels
    u_plane = _widen(out_channels, INDEX_64) * channels
    # Offsets, not pointers, stay live across the loop: 2 * alpha loop-invariant pointer tensors
    # (64-bit per element) would take most of the registers the accumulators need.
    v_offsets = t[:, None] * channels + c[None, :]  # [BLOCK_T, BLOCK_C]
    u_offsets = k[None, :] * channels + c[:, None]  # [BLOCK_C, BLOCK_K]: U[xi]^T, C contiguous

    y = ()
    for _ in tl.static_range(TILE * TILE):
        y = y + (tl.zeros([BLOCK_T, BLOCK_K], ACC_DTYPE),)
    # A dynamic loop over the columns: unrolled, the compiler keeps every column's loop-invariant
    # addressing live at once and spills.
    for b in range(ALPHA):
        m = ()
        for _ in tl.static_range(ALPHA):
            m = m + (tl.zeros([BLOCK_T, BLOCK_K], ACC_DTYPE),)
        for c0 in range(0, channels, BLOCK_C):
            c_mask = c < channels - c0
            v_mask = t_mask[:, None] & c_mask[None, :]
            u_mask = c_mask[:, None] & k_mask[None, :]
            sums = ()
            for a in tl.static_range(ALPHA):
                xi = a * ALPHA + b
                v = tl.load(v_ptr + (v_offsets + (xi * v_plane + c0)), mask=v_mask, other=0.0)
                u = tl.load(u_ptr + (u_offsets + (xi * u_plane + c0)), mask=u_mask, other=0.0)
                sums = sums + (tl.dot(v.to(DOT_DTYPE), u.to(DOT_DTYPE), m[a], input_precision=INPUT_PRECISION,
                                      out_dtype=ACC_DTYPE),)
            m = sums
        y = _add_column(y, m, b, TILE, ALPHA)

    n, h0, w0 = _tile_origin(t, tiles_h, tiles_w, TILE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + k, mask=k_mask, other=0.0).to(ACC_DTYPE)
    for i in tl.static_range(TILE):
        for j in tl.static_range(TILE):
            h = h0 + i
            w = w0 + j
            mask = (t_mask & (h < out_h) & (w < out_w))[:, None] & k_mask[None, :]
            offsets = _offsets(n, h, w, k, out_channels, out_h, out_w, CHANNELS_LAST)
            out = y[i * TILE + j]
            if HAS_BIAS:
                out += bias[None, :]
            if HAS_RESIDUAL:
                out += tl.load(residual_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
            if ACTIVATION:
                out = leaky_relu(out, negative_slope)
            tl.store(output_ptr + offsets, cast_for_store(out, output_ptr.dtype.element_ty), mask=mask)


# --- launchers ----------------------------------------------------------------------------------

def _registers_per_thread(values_per_element, block_elements, num_warps, acc_dtype):
    return values_per_element * block_elements * (2 if acc_dtype == tl.float64 else 1) // (32 * num_warps)


def _prune_input_configs(configs, TILE, ACC_DTYPE, **kwargs):
    # Peak live values per element: the alpha^2 column-pass results and one column of loads.
    alpha = TILE + 2
    fits = [config for config in configs if _registers_per_thread(
        alpha * alpha + alpha, config.kwargs["BLOCK_T"] * config.kwargs["BLOCK_C"], config.num_warps,
        ACC_DTYPE) <= _MAX_INPUT_REGISTERS]
    return fits or configs[:1]


def _prune_gemm_configs(configs, TILE, ACC_DTYPE, **kwargs):
    # Peak live accumulators: one column of M (alpha) and the output tile (m^2).
    alpha = TILE + 2
    fits = [config for config in configs if _registers_per_thread(
        alpha + TILE * TILE, config.kwargs["BLOCK_T"] * config.kwargs["BLOCK_K"], config.num_warps,
        ACC_DTYPE) <= _MAX_ACCUMULATOR_REGISTERS]
    return fits or configs[:1]


def _needs_int64(*numels):
    # Every unmasked offset lies inside its tensor. Masked lanes past the last block or outside the
    # input may form larger ones; int32 arithmetic wraps there, and those lanes never access memory.
    return max(numels) >= 2**31


def _check_tile(op, tile):
    if tile not in (2, 4):
        raise ValueError(f"{op} (triton): tile must be 2 or 4, got {tile}")
    return int(tile)


def winograd_transform_weight(weight, tile, channels_last):
    """U = G g G^T of every 3x3 filter of weight (K, C, 3, 3), KCRS or KRSC by channels_last, as an
    (alpha*alpha, K, C) contiguous tensor in the weight's dtype (alpha = tile + 2)."""
    op = "winograd_transform_weight"
    tile = _check_tile(op, tile)
    check_4d(op, "weight", weight, channels_last)
    out_channels, channels, kernel_h, kernel_w = weight.shape
    if (kernel_h, kernel_w) != (3, 3):
        raise ValueError(f"{op} (triton): weight must be 3x3, got shape {tuple(weight.shape)}")
    alpha = tile + 2
    transformed = torch.empty((alpha * alpha, out_channels, channels), dtype=weight.dtype, device=weight.device)
    if transformed.numel() == 0:
        return transformed
    _winograd_weight_kernel[(triton.cdiv(out_channels * channels, _WEIGHT_BLOCK),)](
        weight, transformed, out_channels, channels,
        TILE=tile, CHANNELS_LAST=bool(channels_last), INDEX_64=_needs_int64(transformed.numel()),
        ACC_DTYPE=accumulator_dtype(weight.dtype), BLOCK=_WEIGHT_BLOCK,
    )
    return transformed


def conv2d_winograd(input, transformed_weight, bias, residual, padding, output_size, tile, activation, channels_last,
                    allow_tf32, negative_slope=0.0):
    """output = act(conv2d(input, weight) + bias + residual), act = LeakyReLU(negative_slope) if `activation`
    (slope 0: ReLU) else identity, for a 3x3, stride-1 weight given as its
    transform U (winograd_transform_weight with the same tile), shape (N, K, P, Q) in the input's layout.
    padding is (top, left), possibly negative; output_size = (P, Q) implies the bottom / right padding.
    bias (K,) and residual (like output) may be None."""
    op = "conv2d_winograd"
    tile = _check_tile(op, tile)
    alpha = tile + 2
    check_4d(op, "input", input, channels_last)
    batch, channels, in_h, in_w = input.shape
    if (transformed_weight.dim() != 3 or transformed_weight.shape[0] != alpha * alpha
            or transformed_weight.shape[2] != channels or not transformed_weight.is_contiguous()
            or transformed_weight.dtype != input.dtype or transformed_weight.device != input.device):
        raise ValueError(f"{op} (triton): transformed_weight must be a contiguous {input.dtype} tensor of shape "
                         f"({alpha * alpha}, K, {channels}) on {input.device} (tile {tile}), got "
                         f"{transformed_weight.dtype} of shape {tuple(transformed_weight.shape)} on "
                         f"{transformed_weight.device}")
    out_channels = transformed_weight.shape[1]
    out_h, out_w = int(output_size[0]), int(output_size[1])
    pad_h, pad_w = int(padding[0]), int(padding[1])
    output = torch.empty((batch, out_channels, out_h, out_w), dtype=input.dtype, device=input.device,
                         memory_format=memory_format(channels_last))
    for name, tensor, shape in (("bias", bias, (out_channels,)), ("residual", residual, tuple(output.shape))):
        if tensor is not None and (tuple(tensor.shape) != shape or tensor.dtype != input.dtype
                                   or tensor.device != input.device or not tensor.is_contiguous(
                                       memory_format=memory_format(channels_last and len(shape) == 4))):
            raise ValueError(f"{op} (triton): {name} must be a contiguous {input.dtype} tensor of shape {shape} "
                             f"on {input.device}, got {tensor.dtype} of shape {tuple(tensor.shape)} on "
                             f"{tensor.device}")
    if output.numel() == 0:
        return output

    tiles_h, tiles_w = triton.cdiv(out_h, tile), triton.cdiv(out_w, tile)
    num_tiles = batch * tiles_h * tiles_w
    v = torch.empty((alpha * alpha, num_tiles, channels), dtype=input.dtype, device=input.device)
    index_64 = _needs_int64(input.numel(), v.numel(), transformed_weight.numel(), output.numel())
    acc_dtype = accumulator_dtype(input.dtype)
    if v.numel():
        _winograd_input_kernel[lambda meta: (triton.cdiv(num_tiles, meta["BLOCK_T"]),
                                             triton.cdiv(channels, meta["BLOCK_C"]))](
            input, v, num_tiles, channels, in_h, in_w, tiles_h, tiles_w, pad_h, pad_w,
            TILE=tile, CHANNELS_LAST=bool(channels_last), INDEX_64=index_64, ACC_DTYPE=acc_dtype,
        )
    _winograd_gemm_kernel[lambda meta: (triton.cdiv(num_tiles, meta["BLOCK_T"])
                                        * triton.cdiv(out_channels, meta["BLOCK_K"]),)](
        v, transformed_weight, bias if bias is not None else output, residual if residual is not None else output,
        output, num_tiles, channels, out_channels, tiles_h, tiles_w, out_h, out_w, float(negative_slope),
        TILE=tile, HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, ACTIVATION=bool(activation),
        CHANNELS_LAST=bool(channels_last), INDEX_64=index_64, DOT_DTYPE=dot_dtype(input.dtype),
        INPUT_PRECISION=input_precision(input.dtype, allow_tf32), ACC_DTYPE=acc_dtype,
    )
    return output

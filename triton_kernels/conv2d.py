"""Triton kernels for direct 2-D convolution: forward (+ bias + residual + ReLU), data gradient
(dgrad) and weight gradient (wgrad). Layouts, weight order and padding follow
csrc/include/dlk/conv2d.h: NCHW or NHWC tensors with KCRS or KRSC weights, top/left padding that
may be negative, and bottom/right padding implied by the output size (taps outside the input read 0).

Implicit GEMM. Each convolution is a GEMM whose operand tiles are gathered straight from the
tensors, never materialising im2col:
- forward: [N*P*Q output pixels] x [K/G out channels], reduced over (C/G)*R*S;
- dgrad:   [N*H*W input pixels] x [C/G in channels], reduced over (K/G)*R*S (a conv of
  grad_output with the flipped weight);
- wgrad:   [K/G out channels] x [(C/G)*R*S weight columns], reduced over N*P*Q.
A program owns a BLOCK_M x BLOCK_N tile and walks the reduction in BLOCK_K steps with tl.dot
(fp32 accumulation, fp64 for double; fp32 uses TF32 only when allowed). Steps are tap-major: one
(r, s) tap and BLOCK_K channels of it per step, so the tap's spatial offsets and bounds mask are
one value per pixel, and channels_last loads are contiguous in C. When a group has fewer than
_FLAT_BELOW channels (a first layer with C = 3) whole taps would leave most of a step idle, so
steps instead cover BLOCK_K consecutive elements of the flattened (tap, channel) reduction.

Strided dgrad. Input row h receives grad_output row p only where (h + pad - r*dilation) is a
multiple of the stride, so with stride 2 three taps in four would be masked off. Input pixels are
split by phase (h mod stride, w mod stride): within one phase the contributing taps are the same
for every pixel, r = r0 + j * tap_step, and the program loops over those only.

Split wgrad. The N*P*Q reduction is long and the output small, so it is cut into chunks, one per
program along grid axis 1; each writes its partial tile to an fp32 (fp64) workspace and a second
kernel sums the partials in a fixed order. No atomics: results do not depend on scheduling.

Depthwise (groups == C == K) has no reduction over channels to give tl.dot, so it gets its own
kernels on [pixels, channels] tiles as in pool2d.py: a gather over the taps (forward, and dgrad
with a stride-divisibility mask), and for wgrad a split reduction that accumulates up to _MAX_TAPS
taps per pass over the pixels.
"""
import math

import torch
import triton
import triton.language as tl

from ._activation import leaky_relu
from ._common import (INTERPRETING, accumulator_dtype, autotune_configs, cast_for_store, channel_block,
                                    check_4d, dot_dtype, input_precision, memory_format, target_programs)

# GEMM tiles. Hopper wgmma wants BLOCK_M a multiple of 64 per warpgroup and deep K tiles; the
# 128 x 128 and 128 x 256 tiles reuse each loaded element most, smaller ones keep enough programs
# for small batches or few channels. The first config is the only one the interpreter runs (it
# cannot benchmark), so it is small: CPU tests then cover several tiles and reduction steps.
_GEMM_CONFIGS = autotune_configs([
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
])
# Depthwise tiles in elements ([pixels, channels]); memory bound like pooling.
_DEPTHWISE_CONFIGS = autotune_configs([
    triton.Config({"BLOCK": 256}, num_warps=4),
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 4096}, num_warps=8),
])
# Depthwise wgrad holds up to _MAX_TAPS accumulators per element of its tile, so tiles are smaller.
_DEPTHWISE_WGRAD_CONFIGS = autotune_configs([
    triton.Config({"BLOCK": 256}, num_warps=4),
    triton.Config({"BLOCK": 128}, num_warps=4),
    triton.Config({"BLOCK": 512}, num_warps=4),
    triton.Config({"BLOCK": 512}, num_warps=8),
])
_MAX_GEMM_TILE = max(max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in _GEMM_CONFIGS)
_MAX_WGRAD_BLOCK_K = max(config.kwargs["BLOCK_K"] for config in _GEMM_CONFIGS)
_MAX_DEPTHWISE_BLOCK = max(config.kwargs["BLOCK"] for config in _DEPTHWISE_CONFIGS + _DEPTHWISE_WGRAD_CONFIGS)

# Reduction channels per group below which steps run over the flattened (tap, channel) reduction.
_FLAT_BELOW = 16
# channels_last depthwise: channels per tile, full 128-byte rows at fp16.
_MAX_BLOCK_C = 64
# Depthwise wgrad: taps accumulated together per pass over the pixels (a 3x3 kernel in one pass).
_MAX_TAPS = 16
# Split reductions (wgrad): enough programs to fill the GPU, but chunks long enough that the
# partials stay small next to the operands. The interpreter splits tiny inputs too, so CPU tests
# cover the cross-program sum.
_PROGRAMS_PER_SM = 2
_MIN_SPLIT_PIXELS = 32 if INTERPRETING else 4096
_MAX_SPLITS = 256

# What decides the best tile: the GEMM extents and the tap geometry. Dtypes are added by Triton.
_FWD_KEY = ["num_pixels", "group_in", "group_out", "groups", "kernel_h", "kernel_w", "stride_h", "stride_w",
            "CHANNELS_LAST", "FLAT"]
_DGRAD_KEY = ["batch", "in_h", "in_w", "group_in", "group_out", "groups", "kernel_h", "kernel_w", "stride_h",
              "stride_w", "CHANNELS_LAST", "FLAT"]
_WGRAD_KEY = ["num_pixels", "pixels_per_split", "group_in", "group_out", "groups", "kernel_h", "kernel_w",
              "stride_h", "stride_w", "CHANNELS_LAST", "FLAT"]
_DEPTHWISE_KEY = ["num_pixels", "channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "CHANNELS_LAST",
                  "BLOCK_C"]
# Channel counts, kernel size, stride and dilation stay specialised: divisibility by 16 gives
# vector loads and a 1x1 / stride-1 conv loses its tap arithmetic. Sizes and padding would only
# multiply compilations.
_UNSPECIALIZED = ["batch", "num_pixels", "pixels_per_split", "in_h", "in_w", "out_h", "out_w", "pad_h", "pad_w"]


# --- index helpers shared by the GEMM kernels ---------------------------------------------------

@triton.jit
def _offsets(n, h, w, c, size_h, size_w, channels, CHANNELS_LAST: tl.constexpr):
    # conv_offset() of dlk/conv2d.h; the arguments broadcast against each other. NCHW keeps the
    # channel term separate so a [pixels, channels] tile costs one add per element.
    if CHANNELS_LAST:
        return ((n * size_h + h) * size_w + w) * channels + c
    else:
        return (n * channels * size_h + h) * size_w + w + c * (size_h * size_w)


@triton.jit
def _weight_offsets(k, c, r, s, group_channels, kernel_h, kernel_w, CHANNELS_LAST: tl.constexpr):
    # conv_weight_offset() of dlk/conv2d.h: KRSC or KCRS, c within the group.
    if CHANNELS_LAST:
        return ((k * kernel_h + r) * kernel_w + s) * group_channels + c
    else:
        return ((k * group_channels + c) * kernel_h + r) * kernel_w + s


@triton.jit
def _reduction_steps(taps_h, taps_w, channels, FLAT: tl.constexpr, BLOCK: tl.constexpr):
    if FLAT:
        return tl.cdiv(taps_h * taps_w * channels, BLOCK)
    else:
        return taps_h * taps_w * tl.cdiv(channels, BLOCK)


@triton.jit
def _reduction_step(t, taps_h, taps_w, channels, CHANNELS_LAST: tl.constexpr, FLAT: tl.constexpr,
                    INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    """Step t of a reduction over taps_h x taps_w taps x `channels`: tap indices (jr, js), BLOCK
    channel indices and their mask. Tap-major: jr, js are scalars. FLAT: all four are [BLOCK]
    vectors over the flattened reduction in the weight's order ((r, s, c) in KRSC, (c, r, s) in KCRS)."""
    if FLAT:
        index = t * BLOCK + tl.arange(0, BLOCK)
        valid = index < taps_h * taps_w * channels
        if CHANNELS_LAST:
            c = index % channels
            tap = index // channels
            jr = tap // taps_w
            js = tap % taps_w
        else:
            js = index % taps_w
            jr = (index // taps_w) % taps_h
            c = index // (taps_w * taps_h)
    else:
        c_steps = tl.cdiv(channels, BLOCK)
        tap = t // c_steps
        c = (t % c_steps) * BLOCK + tl.arange(0, BLOCK)
        valid = c < channels
        jr = tap // taps_w
        js = tap % taps_w
    if INDEX_64:  # one image may pass 2**31 elements
        jr = jr.to(tl.int64)
        js = js.to(tl.int64)
        c = c.to(tl.int64)
    return jr, js, c, valid


@triton.jit
def _gather(ptr, base, h, w, pixel_mask, jr, js, c, c_mask, step_h, step_w, size_h, size_w, channels,
            CHANNELS_LAST: tl.constexpr, FLAT: tl.constexpr):
    """Tile [pixels, reduction] of an activation: element (i, j) is at row h[i] + jr[j] * step_h,
    column w[i] + js[j] * step_w, channel c[j] of the image of pixel i, whose offset at (h, w, 0) is
    base[i]; zero outside the tensor. Offsets are linear in (row, column, channel), so the pixel and
    reduction parts add once per element."""
    dh = jr * step_h
    dw = js * step_w
    delta = _offsets(0, dh, dw, c, size_h, size_w, channels, CHANNELS_LAST)
    if FLAT:
        rows = h[:, None] + dh[None, :]
        cols = w[:, None] + dw[None, :]
    else:
        rows = (h + dh)[:, None]
        cols = (w + dw)[:, None]
    mask = (pixel_mask[:, None] & (rows >= 0) & (rows < size_h) & (cols >= 0) & (cols < size_w)
            & c_mask[None, :])
    return tl.load(ptr + base[:, None] + delta[None, :], mask=mask, other=0.0)


@triton.jit
def _program_tile(pid, groups, num_n_tiles, INDEX_64: tl.constexpr):
    # (m tile, group, n tile), n fastest: programs that share an activation tile run together and
    # find it in L2.
    if INDEX_64:
        pid = pid.to(tl.int64)
    pid_n = pid % num_n_tiles
    rest = pid // num_n_tiles
    return rest // groups, rest % groups, pid_n


# --- forward ------------------------------------------------------------------------------------

@triton.autotune(configs=_GEMM_CONFIGS, key=_FWD_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _conv2d_fwd_kernel(
    input_ptr, weight_ptr, bias_ptr, residual_ptr, output_ptr,
    num_pixels, in_channels, in_h, in_w, out_channels, out_h, out_w,
    group_in, group_out, groups, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    negative_slope: tl.float64,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, FLAT: tl.constexpr, INDEX_64: tl.constexpr,
    DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m, group, pid_n = _program_tile(tl.program_id(0), groups, tl.cdiv(group_out, BLOCK_N), INDEX_64)
    pix = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pix_mask = pix < num_pixels
    ow = pix % out_w
    oh = (pix // out_w) % out_h
    n = pix // out_w // out_h
    top = oh * stride_h - pad_h
    left = ow * stride_w - pad_w
    k_local = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_mask = k_local < group_out
    k = group * group_out + k_local
    # Per-pixel and per-filter parts of the offsets, hoisted out of the reduction loop.
    a_base = _offsets(n, top, left, group * group_in, in_h, in_w, in_channels, CHANNELS_LAST)
    b_base = _weight_offsets(k, 0, 0, 0, group_in, kernel_h, kernel_w, CHANNELS_LAST)

    acc = tl.zeros([BLOCK_M, BLOCK_N], ACC_DTYPE)
    for t in range(0, _reduction_steps(kernel_h, kernel_w, group_in, FLAT, BLOCK_K)):
        jr, js, c, c_mask = _reduction_step(t, kernel_h, kernel_w, group_in, CHANNELS_LAST, FLAT, INDEX_64, BLOCK_K)
        a = _gather(input_ptr, a_base, top, left, pix_mask, jr, js, c, c_mask, dilation_h, dilation_w,
                    in_h, in_w, in_channels, CHANNELS_LAST, FLAT)
        b_delta = _weight_offsets(0, c, jr, js, group_in, kernel_h, kernel_w, CHANNELS_LAST)
        b = tl.load(weight_ptr + b_base[None, :] + b_delta[:, None], mask=c_mask[:, None] & k_mask[None, :],
                    other=0.0)
        acc = tl.dot(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    # Fused epilogue in the accumulator dtype: + bias + residual, then the (leaky) ReLU, then one rounding.
    if HAS_BIAS:
        acc += tl.load(bias_ptr + k, mask=k_mask, other=0.0).to(ACC_DTYPE)[None, :]
    out_offsets = _offsets(n[:, None], oh[:, None], ow[:, None], k[None, :], out_h, out_w, out_channels,
                           CHANNELS_LAST)
    out_mask = pix_mask[:, None] & k_mask[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(residual_ptr + out_offsets, mask=out_mask, other=0.0).to(ACC_DTYPE)
    if ACTIVATION:
        acc = leaky_relu(acc, negative_slope)
    tl.store(output_ptr + out_offsets, cast_for_store(acc, output_ptr.dtype.element_ty), mask=out_mask)


# --- dgrad --------------------------------------------------------------------------------------

@triton.jit
def _phase_taps(phase, pad, stride, dilation, kernel, tap_step):
    """Taps along one axis that reach input positions x = phase (mod stride): r = first + j * tap_step
    for j < count. The i-th such x reads grad_output at base + i - j * (dilation / gcd)."""
    # The valid r form one residue class modulo tap_step = stride / gcd(stride, dilation); find its
    # smallest member (tap_step itself when (phase + pad) is not a multiple of the gcd: no taps).
    first = tap_step
    for r in range(0, tap_step):
        first = tl.where(((phase + pad - r * dilation) % stride == 0) & (first == tap_step), r, first)
    count = tl.where((first < tap_step) & (first < kernel), tl.cdiv(kernel - first, tap_step), 0)
    # Exact whenever count > 0, so truncating and flooring division agree.
    base = (phase + pad - first * dilation) // stride
    return first, count, base


@triton.autotune(configs=_GEMM_CONFIGS, key=_DGRAD_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _conv2d_dgrad_kernel(
    grad_output_ptr, weight_ptr, grad_input_ptr,
    batch, in_channels, in_h, in_w, out_channels, out_h, out_w,
    group_in, group_out, groups, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    tap_step_h, tap_step_w, out_step_h, out_step_w,
    CHANNELS_LAST: tl.constexpr, FLAT: tl.constexpr, INDEX_64: tl.constexpr,
    DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # This program's phase: input pixels (phase_h + i * stride_h, phase_w + j * stride_w).
    phase = tl.program_id(1)
    phase_h = phase // stride_w
    phase_w = phase % stride_w
    rows = tl.cdiv(in_h - phase_h, stride_h)  # 0 when the stride exceeds the size
    cols = tl.cdiv(in_w - phase_w, stride_w)
    if INDEX_64:
        rows = rows.to(tl.int64)
    first_r, taps_h, base_p = _phase_taps(phase_h, pad_h, stride_h, dilation_h, kernel_h, tap_step_h)
    first_s, taps_w, base_q = _phase_taps(phase_w, pad_w, stride_w, dilation_w, kernel_w, tap_step_w)

    pid_m, group, pid_n = _program_tile(tl.program_id(0), groups, tl.cdiv(group_in, BLOCK_N), INDEX_64)
    pix = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pix_mask = pix < batch * rows * cols
    # An empty phase divides by 1 instead; all its pixels are masked.
    rows = tl.maximum(rows, 1)
    cols = tl.maximum(cols, 1)
    j = pix % cols
    i = (pix // cols) % rows
    n = pix // cols // rows
    c_local = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_mask = c_local < group_in
    k_first = group * group_out
    p = base_p + i
    q = base_q + j
    a_base = _offsets(n, p, q, k_first, out_h, out_w, out_channels, CHANNELS_LAST)
    b_base = _weight_offsets(0, c_local, 0, 0, group_in, kernel_h, kernel_w, CHANNELS_LAST)

    acc = tl.zeros([BLOCK_M, BLOCK_N], ACC_DTYPE)
    for t in range(0, _reduction_steps(taps_h, taps_w, group_out, FLAT, BLOCK_K)):
        jr, js, k, k_mask = _reduction_step(t, taps_h, taps_w, group_out, CHANNELS_LAST, FLAT, INDEX_64, BLOCK_K)
        a = _gather(grad_output_ptr, a_base, p, q, pix_mask, jr, js, k, k_mask, -out_step_h, -out_step_w,
                    out_h, out_w, out_channels, CHANNELS_LAST, FLAT)
        b_delta = _weight_offsets(k_first + k, 0, first_r + jr * tap_step_h, first_s + js * tap_step_w, group_in,
                                  kernel_h, kernel_w, CHANNELS_LAST)
        b = tl.load(weight_ptr + b_delta[:, None] + b_base[None, :], mask=k_mask[:, None] & c_mask[None, :],
                    other=0.0)
        acc = tl.dot(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    # Every pixel of the phase is stored, zeros where no tap reaches it, so grad_input needs no fill.
    offsets = _offsets(n[:, None], (phase_h + i * stride_h)[:, None], (phase_w + j * stride_w)[:, None],
                       (group * group_in + c_local)[None, :], in_h, in_w, in_channels, CHANNELS_LAST)
    tl.store(grad_input_ptr + offsets, cast_for_store(acc, grad_input_ptr.dtype.element_ty),
             mask=pix_mask[:, None] & c_mask[None, :])


# --- wgrad --------------------------------------------------------------------------------------

@triton.autotune(configs=_GEMM_CONFIGS, key=_WGRAD_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _conv2d_wgrad_kernel(
    grad_output_ptr, input_ptr, out_ptr,  # out: grad_weight, or the partials [splits, weight_numel]
    num_pixels, pixels_per_split, weight_numel, in_channels, in_h, in_w, out_channels, out_h, out_w,
    group_in, group_out, groups, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    CHANNELS_LAST: tl.constexpr, FLAT: tl.constexpr, INDEX_64: tl.constexpr,
    DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Tiles (weight-column tile, group, out-channel tile): the few out-channel tiles that gather the
    # same input columns run together.
    pid_n, group, pid_m = _program_tile(tl.program_id(0), groups, tl.cdiv(group_out, BLOCK_M), INDEX_64)
    split = tl.program_id(1)
    if INDEX_64:
        split = split.to(tl.int64)
    k = group * group_out + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    k_mask = k < (group + 1) * group_out
    jr, js, c_local, col_mask = _reduction_step(pid_n, kernel_h, kernel_w, group_in, CHANNELS_LAST, FLAT, INDEX_64,
                                                BLOCK_N)

    begin = split * pixels_per_split
    end = tl.minimum(begin + pixels_per_split, num_pixels)
    acc = tl.zeros([BLOCK_M, BLOCK_N], ACC_DTYPE)
    for start in range(begin, end, BLOCK_K):
        pix = start + tl.arange(0, BLOCK_K)
        pix_mask = pix < end
        ow = pix % out_w
        oh = (pix // out_w) % out_h
        n = pix // out_w // out_h
        a_offsets = _offsets(n[None, :], oh[None, :], ow[None, :], k[:, None], out_h, out_w, out_channels,
                             CHANNELS_LAST)
        a = tl.load(grad_output_ptr + a_offsets, mask=k_mask[:, None] & pix_mask[None, :], other=0.0)
        top = oh * stride_h - pad_h
        left = ow * stride_w - pad_w
        b = _gather(input_ptr, _offsets(n, top, left, group * group_in, in_h, in_w, in_channels, CHANNELS_LAST),
                    top, left, pix_mask, jr, js, c_local, col_mask, dilation_h, dilation_w, in_h, in_w, in_channels,
                    CHANNELS_LAST, FLAT)
        acc = tl.dot(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    rows = _weight_offsets(k, 0, 0, 0, group_in, kernel_h, kernel_w, CHANNELS_LAST)
    columns = _weight_offsets(0, c_local, jr, js, group_in, kernel_h, kernel_w, CHANNELS_LAST)
    tl.store(out_ptr + split * weight_numel + rows[:, None] + columns[None, :],
             cast_for_store(acc, out_ptr.dtype.element_ty), mask=k_mask[:, None] & col_mask[None, :])


@triton.jit(do_not_specialize=["numel", "num_splits"])
def _sum_splits_kernel(partial_ptr, out_ptr, numel, num_splits, INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    # Partials summed in split order, so the result depends only on the split, never on scheduling.
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if INDEX_64:
        offsets = offsets.to(tl.int64)
    mask = offsets < numel
    total = tl.load(partial_ptr + offsets, mask=mask, other=0.0)
    for _ in range(1, num_splits):
        partial_ptr += numel
        total += tl.load(partial_ptr + offsets, mask=mask, other=0.0)
    tl.store(out_ptr + offsets, cast_for_store(total, out_ptr.dtype.element_ty), mask=mask)


_SUM_BLOCK = 1024


# --- depthwise ----------------------------------------------------------------------------------

@triton.jit
def _depthwise_tile(first_pixel, first_channel, num_pixels, channels, size_h, size_w, BLOCK_P: tl.constexpr,
                    BLOCK_C: tl.constexpr):
    """Pixels (n, h, w) of a size_h x size_w grid as [BLOCK_P, 1] columns, channels as [1, BLOCK_C],
    and their masks. In NCHW BLOCK_C is 1: a tile is a run of one channel's planes."""
    pix = first_pixel + tl.arange(0, BLOCK_P)
    w = pix % size_w
    h = (pix // size_w) % size_h
    n = pix // size_w // size_h
    c = first_channel + tl.arange(0, BLOCK_C)
    return n[:, None], h[:, None], w[:, None], (pix < num_pixels)[:, None], c[None, :], (c < channels)[None, :]


@triton.autotune(configs=_DEPTHWISE_CONFIGS, key=_DEPTHWISE_KEY + ["DGRAD"])
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _depthwise_kernel(
    src_ptr, weight_ptr, bias_ptr, residual_ptr, dst_ptr,
    num_pixels, channels, src_h, src_w, dst_h, dst_w,
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, negative_slope: tl.float64,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr, DGRAD: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK: tl.constexpr,
):
    """Forward: dst = output, src = input. DGRAD: dst = grad_input, src = grad_output; input row y
    takes output row (y + pad - r * dilation) / stride where that is a whole number."""
    BLOCK_P: tl.constexpr = BLOCK // BLOCK_C
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    c_blocks = tl.cdiv(channels, BLOCK_C)
    n, y, x, pix_mask, c, c_mask = _depthwise_tile((pid // c_blocks) * BLOCK_P, (pid % c_blocks) * BLOCK_C,
                                                   num_pixels, channels, dst_h, dst_w, BLOCK_P, BLOCK_C)
    acc = tl.zeros([BLOCK_P, BLOCK_C], ACC_DTYPE)
    for r in range(0, kernel_h):
        if DGRAD:
            numerator = y + pad_h - r * dilation_h
            sy = numerator // stride_h
            row_mask = pix_mask & (numerator % stride_h == 0) & (sy >= 0) & (sy < src_h)
        else:
            sy = y * stride_h - pad_h + r * dilation_h
            row_mask = pix_mask & (sy >= 0) & (sy < src_h)
        for s in range(0, kernel_w):
            if DGRAD:
                numerator = x + pad_w - s * dilation_w
                sx = numerator // stride_w
                mask = row_mask & (numerator % stride_w == 0) & (sx >= 0) & (sx < src_w)
            else:
                sx = x * stride_w - pad_w + s * dilation_w
                mask = row_mask & (sx >= 0) & (sx < src_w)
            value = tl.load(src_ptr + _offsets(n, sy, sx, c, src_h, src_w, channels, CHANNELS_LAST),
                            mask=mask & c_mask, other=0.0)
            # Weight (C, 1, R, S): KCRS and KRSC are the same bytes.
            tap = tl.load(weight_ptr + (c * kernel_h + r) * kernel_w + s, mask=c_mask, other=0.0)
            acc += value.to(ACC_DTYPE) * tap.to(ACC_DTYPE)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=c_mask, other=0.0).to(ACC_DTYPE)
    offsets = _offsets(n, y, x, c, dst_h, dst_w, channels, CHANNELS_LAST)
    mask = pix_mask & c_mask
    if HAS_RESIDUAL:
        acc += tl.load(residual_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
    if ACTIVATION:
        acc = leaky_relu(acc, negative_slope)
    tl.store(dst_ptr + offsets, cast_for_store(acc, dst_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=_DEPTHWISE_WGRAD_CONFIGS, key=_DEPTHWISE_KEY + ["pixels_per_split"])
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _depthwise_wgrad_kernel(
    grad_output_ptr, input_ptr, out_ptr,  # out: grad_weight, or the partials [splits, weight_numel]
    num_pixels, pixels_per_split, weight_numel, channels, in_h, in_w, out_h, out_w,
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    TAPS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK: tl.constexpr,
):
    """grad_weight[c, r, s] = sum over pixels of grad_output * input at the tap: TAPS taps at a time,
    as [TAPS, pixels, channels] tiles, so each grad_output tile is loaded once per TAPS taps and the
    overlapping input windows come from cache."""
    BLOCK_P: tl.constexpr = BLOCK // BLOCK_C
    pid = tl.program_id(0)
    split = tl.program_id(1)
    if INDEX_64:
        pid = pid.to(tl.int64)
        split = split.to(tl.int64)
    first_channel = pid * BLOCK_C
    begin = split * pixels_per_split
    end = tl.minimum(begin + pixels_per_split, num_pixels)
    taps = kernel_h * kernel_w
    for first_tap in range(0, taps, TAPS):
        tap = first_tap + tl.arange(0, TAPS)
        tap_mask = (tap < taps)[:, None, None]
        dh = ((tap // kernel_w) * dilation_h)[:, None, None]
        dw = ((tap % kernel_w) * dilation_w)[:, None, None]
        acc = tl.zeros([TAPS, BLOCK_P, BLOCK_C], ACC_DTYPE)
        for start in range(begin, end, BLOCK_P):
            n, oh, ow, pix_mask, c, c_mask = _depthwise_tile(start, first_channel, end, channels, out_h, out_w,
                                                             BLOCK_P, BLOCK_C)
            g = tl.load(grad_output_ptr + _offsets(n, oh, ow, c, out_h, out_w, channels, CHANNELS_LAST),
                        mask=pix_mask & c_mask, other=0.0)
            top = oh * stride_h - pad_h
            left = ow * stride_w - pad_w
            rows = top[None] + dh
            cols = left[None] + dw
            mask = (tap_mask & (pix_mask & c_mask)[None] & (rows >= 0) & (rows < in_h) & (cols >= 0)
                    & (cols < in_w))
            base = _offsets(n, top, left, c, in_h, in_w, channels, CHANNELS_LAST)
            value = tl.load(input_ptr + base[None] + _offsets(0, dh, dw, 0, in_h, in_w, channels, CHANNELS_LAST),
                            mask=mask, other=0.0)
            acc += g.to(ACC_DTYPE)[None] * value.to(ACC_DTYPE)
        # Weight (C, 1, R, S): element (c, tap) at c * R * S + tap in both layouts.
        c = first_channel + tl.arange(0, BLOCK_C)
        tl.store(out_ptr + split * weight_numel + c[None, :] * taps + tap[:, None],
                 cast_for_store(tl.sum(acc, axis=1), out_ptr.dtype.element_ty),
                 mask=(tap < taps)[:, None] & (c < channels)[None, :])


# --- launchers ----------------------------------------------------------------------------------

def _gemm_dtypes(dtype, allow_tf32):
    return {"DOT_DTYPE": dot_dtype(dtype), "INPUT_PRECISION": input_precision(dtype, allow_tf32),
            "ACC_DTYPE": accumulator_dtype(dtype)}


def _needs_int64(channels, *numels):
    # Lanes past the end of the last tile still form indices; leave a tile of pixels of slack.
    return max(numels) + max(_MAX_GEMM_TILE, _MAX_DEPTHWISE_BLOCK) * max(channels, 1) >= 2**31


def _is_depthwise(in_channels, out_channels, groups):
    return groups == in_channels == out_channels


def _depthwise_block_c(channels, channels_last):
    return channel_block(channels, _MAX_BLOCK_C) if channels_last else 1


def _split(num_pixels, programs, align, device):
    """(splits, pixels_per_split) for a reduction over num_pixels shared by `programs` tiles; every
    split but the last is a whole number of `align`-pixel steps."""
    wanted = triton.cdiv(target_programs(device, _PROGRAMS_PER_SM), programs)
    affordable = max(1, num_pixels // _MIN_SPLIT_PIXELS)
    splits = max(1, min(wanted, affordable, _MAX_SPLITS))
    per_split = triton.cdiv(triton.cdiv(num_pixels, splits), align) * align
    return triton.cdiv(num_pixels, per_split), per_split


def _pair(values):
    return int(values[0]), int(values[1])


def _check_operands(op, names, first, second, channels_last):
    check_4d(op, names[0], first, channels_last)
    check_4d(op, names[1], second, channels_last)
    if first.dtype != second.dtype or first.device != second.device:
        raise ValueError(f"{op} (triton): {names[0]} and {names[1]} must share dtype and device, got "
                         f"{first.dtype} on {first.device} and {second.dtype} on {second.device}")


def _check_groups(op, in_channels, out_channels, groups):
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(f"{op} (triton): groups must be positive and divide both C = {in_channels} and "
                         f"K = {out_channels}, got {groups}")


def _check_like(op, name, tensor, shape, reference, fmt):
    if (tuple(tensor.shape) != tuple(shape) or tensor.dtype != reference.dtype or tensor.device != reference.device
            or not tensor.is_contiguous(memory_format=fmt)):
        raise ValueError(f"{op} (triton): {name} must be a contiguous {reference.dtype} tensor of shape "
                         f"{tuple(shape)} on {reference.device}, got {tensor.dtype} of shape {tuple(tensor.shape)}, "
                         f"strides {tensor.stride()} on {tensor.device}")


def conv2d_forward(input, weight, bias, residual, stride, padding, dilation, groups, output_size, activation,
                   channels_last, allow_tf32, negative_slope=0.0):
    """output = act(conv2d(input, weight) + bias + residual), shape (N, K, P, Q), act = LeakyReLU(negative_slope)
    if `activation` (slope 0: ReLU; _activation.py) else identity,
    in the input's layout. padding is (top, left), possibly negative; output_size = (P, Q) implies
    the bottom / right padding. bias (K,) and residual (like output) may be None."""
    op = "conv2d_forward"
    _check_operands(op, ("input", "weight"), input, weight, channels_last)
    batch, in_channels, in_h, in_w = input.shape
    out_channels, group_in, kernel_h, kernel_w = weight.shape
    groups = int(groups)
    _check_groups(op, in_channels, out_channels, groups)
    if group_in * groups != in_channels:
        raise ValueError(f"{op} (triton): input has C = {in_channels} channels but weight expects "
                         f"{group_in} x groups = {group_in * groups}")
    out_h, out_w = _pair(output_size)
    output = torch.empty((batch, out_channels, out_h, out_w), dtype=input.dtype, device=input.device,
                         memory_format=memory_format(channels_last))
    if bias is not None:
        _check_like(op, "bias", bias, (out_channels,), input, torch.contiguous_format)
    if residual is not None:
        _check_like(op, "residual", residual, output.shape, input, memory_format(channels_last))
    if output.numel() == 0:
        return output

    (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w) = _pair(stride), _pair(padding), _pair(dilation)
    num_pixels = batch * out_h * out_w
    index_64 = _needs_int64(max(in_channels, out_channels), input.numel(), output.numel(), weight.numel())
    flags = {"HAS_BIAS": bias is not None, "HAS_RESIDUAL": residual is not None, "ACTIVATION": bool(activation),
             "CHANNELS_LAST": channels_last, "INDEX_64": index_64}
    bias = bias if bias is not None else weight  # never read
    residual = residual if residual is not None else output  # never read
    if _is_depthwise(in_channels, out_channels, groups):
        block_c = _depthwise_block_c(in_channels, channels_last)
        c_blocks = triton.cdiv(in_channels, block_c)
        _depthwise_kernel[lambda meta: (triton.cdiv(num_pixels, meta["BLOCK"] // block_c) * c_blocks,)](
            input, weight, bias, residual, output,
            num_pixels, in_channels, in_h, in_w, out_h, out_w,
            kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, float(negative_slope),
            DGRAD=False, ACC_DTYPE=accumulator_dtype(input.dtype), BLOCK_C=block_c, **flags,
        )
        return output

    group_out = out_channels // groups
    _conv2d_fwd_kernel[lambda meta: (triton.cdiv(num_pixels, meta["BLOCK_M"]) * groups
                                     * triton.cdiv(group_out, meta["BLOCK_N"]),)](
        input, weight, bias, residual, output,
        num_pixels, in_channels, in_h, in_w, out_channels, out_h, out_w,
        group_in, group_out, groups, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        float(negative_slope), FLAT=group_in < _FLAT_BELOW, **flags, **_gemm_dtypes(input.dtype, allow_tf32),
    )
    return output


def conv2d_backward_input(grad_output, weight, input_size, stride, padding, dilation, groups, channels_last,
                          allow_tf32):
    """grad_input (N, C, H, W) of conv2d_forward, C = weight.shape[1] * groups, input_size = (H, W),
    in grad_output's layout. Every element is written."""
    op = "conv2d_backward_input"
    _check_operands(op, ("grad_output", "weight"), grad_output, weight, channels_last)
    batch, out_channels, out_h, out_w = grad_output.shape
    _, group_in, kernel_h, kernel_w = weight.shape
    groups = int(groups)
    in_channels = group_in * groups
    if weight.shape[0] != out_channels:
        raise ValueError(f"{op} (triton): grad_output has K = {out_channels} channels but weight has "
                         f"{weight.shape[0]} filters")
    _check_groups(op, in_channels, out_channels, groups)
    in_h, in_w = _pair(input_size)
    grad_input = torch.empty((batch, in_channels, in_h, in_w), dtype=grad_output.dtype, device=grad_output.device,
                             memory_format=memory_format(channels_last))
    if grad_input.numel() == 0:
        return grad_input
    if grad_output.numel() == 0:
        return grad_input.zero_()

    (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w) = _pair(stride), _pair(padding), _pair(dilation)
    index_64 = _needs_int64(max(in_channels, out_channels), grad_input.numel(), grad_output.numel(), weight.numel())
    if _is_depthwise(in_channels, out_channels, groups):
        num_pixels = batch * in_h * in_w
        block_c = _depthwise_block_c(in_channels, channels_last)
        c_blocks = triton.cdiv(in_channels, block_c)
        _depthwise_kernel[lambda meta: (triton.cdiv(num_pixels, meta["BLOCK"] // block_c) * c_blocks,)](
            grad_output, weight, weight, grad_output, grad_input,
            num_pixels, in_channels, out_h, out_w, in_h, in_w,
            kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, 0.0,
            HAS_BIAS=False, HAS_RESIDUAL=False, ACTIVATION=False, DGRAD=True, CHANNELS_LAST=channels_last,
            INDEX_64=index_64, ACC_DTYPE=accumulator_dtype(grad_output.dtype), BLOCK_C=block_c,
        )
        return grad_input

    gcd_h, gcd_w = math.gcd(stride_h, dilation_h), math.gcd(stride_w, dilation_w)
    group_out = out_channels // groups
    # Pixels of the largest phase; smaller phases leave their last tiles partly masked.
    phase_pixels = batch * triton.cdiv(in_h, stride_h) * triton.cdiv(in_w, stride_w)
    _conv2d_dgrad_kernel[lambda meta: (triton.cdiv(phase_pixels, meta["BLOCK_M"]) * groups
                                       * triton.cdiv(group_in, meta["BLOCK_N"]), stride_h * stride_w)](
        grad_output, weight, grad_input,
        batch, in_channels, in_h, in_w, out_channels, out_h, out_w,
        group_in, group_out, groups, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        stride_h // gcd_h, stride_w // gcd_w, dilation_h // gcd_h, dilation_w // gcd_w,
        CHANNELS_LAST=channels_last, FLAT=group_out < _FLAT_BELOW, INDEX_64=index_64,
        **_gemm_dtypes(grad_output.dtype, allow_tf32),
    )
    return grad_input


def conv2d_backward_weight(grad_output, input, kernel_size, stride, padding, dilation, groups, channels_last,
                           allow_tf32):
    """grad_weight (K, C/groups, R, S) of conv2d_forward in the input dtype, KRSC when channels_last
    else KCRS; kernel_size = (R, S). Deterministic: the reduction over N*P*Q is split in a fixed way
    and summed in a fixed order."""
    op = "conv2d_backward_weight"
    _check_operands(op, ("grad_output", "input"), grad_output, input, channels_last)
    batch, out_channels, out_h, out_w = grad_output.shape
    _, in_channels, in_h, in_w = input.shape
    if input.shape[0] != batch:
        raise ValueError(f"{op} (triton): grad_output and input must have the same batch size, got {batch} and "
                         f"{input.shape[0]}")
    groups = int(groups)
    _check_groups(op, in_channels, out_channels, groups)
    group_in, group_out = in_channels // groups, out_channels // groups
    kernel_h, kernel_w = _pair(kernel_size)
    grad_weight = torch.empty((out_channels, group_in, kernel_h, kernel_w), dtype=input.dtype, device=input.device,
                              memory_format=memory_format(channels_last))
    num_pixels = batch * out_h * out_w
    if grad_weight.numel() == 0:
        return grad_weight
    if num_pixels == 0:
        return grad_weight.zero_()

    (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w) = _pair(stride), _pair(padding), _pair(dilation)
    depthwise = _is_depthwise(in_channels, out_channels, groups)
    if depthwise:
        block_c = _depthwise_block_c(in_channels, channels_last)
        splits, per_split = _split(num_pixels, triton.cdiv(in_channels, block_c), _MAX_DEPTHWISE_BLOCK // block_c,
                                   input.device)
    else:
        flat = group_in < _FLAT_BELOW

        def tiles(block_m, block_n):
            taps = kernel_h * kernel_w
            columns = triton.cdiv(taps * group_in, block_n) if flat else taps * triton.cdiv(group_in, block_n)
            return groups * triton.cdiv(group_out, block_m) * columns

        # The split is fixed before autotuning picks a tile, so it is sized for a typical 64 x 64 one.
        splits, per_split = _split(num_pixels, tiles(64, 64), _MAX_WGRAD_BLOCK_K, input.device)
    numel = grad_weight.numel()
    if splits == 1:
        out = grad_weight
    else:
        out = torch.empty((splits, numel), dtype=torch.float64 if input.dtype == torch.float64 else torch.float32,
                          device=input.device)
    index_64 = _needs_int64(max(in_channels, out_channels), input.numel(), grad_output.numel(), out.numel())

    if depthwise:
        _depthwise_wgrad_kernel[(triton.cdiv(in_channels, block_c), splits)](
            grad_output, input, out,
            num_pixels, per_split, numel, in_channels, in_h, in_w, out_h, out_w,
            kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
            CHANNELS_LAST=channels_last, INDEX_64=index_64, ACC_DTYPE=accumulator_dtype(input.dtype),
            TAPS=min(triton.next_power_of_2(kernel_h * kernel_w), _MAX_TAPS), BLOCK_C=block_c,
        )
    else:
        _conv2d_wgrad_kernel[lambda meta: (tiles(meta["BLOCK_M"], meta["BLOCK_N"]), splits)](
            grad_output, input, out,
            num_pixels, per_split, numel, in_channels, in_h, in_w, out_channels, out_h, out_w,
            group_in, group_out, groups, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
            CHANNELS_LAST=channels_last, FLAT=flat, INDEX_64=index_64, **_gemm_dtypes(input.dtype, allow_tf32),
        )
    if splits > 1:
        _sum_splits_kernel[(triton.cdiv(numel, _SUM_BLOCK),)](
            out, grad_weight, numel, splits, INDEX_64=index_64, BLOCK=_SUM_BLOCK,
        )
    return grad_weight

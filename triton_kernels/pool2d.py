"""Triton kernels for 2-D pooling: max (with indices and dilation), average, adaptive average.

Forward and backward share one kernel each; the mode and the layout are compile-time flags.
The window math mirrors csrc/include/dlk/pool2d.h (max_pool_span, avg_pool_span,
adaptive_pool_span, pool_output_range, pool_offset), which follows ATen exactly, so values,
indices, tie-breaking and NaN propagation match torch.

Tiling. A program owns a tile of BLOCK elements shaped [pixels, BLOCK_C channels]:
- channels_last: BLOCK_C consecutive channels of BLOCK // BLOCK_C pixels, so every load and
  store is contiguous along C;
- NCHW: BLOCK_C == 1 and the "pixel" index runs over (n, c, h, w) in memory order, so the
  output (forward) or grad_input (backward) tile is one contiguous run.
The backward is gather style: one lane per input element loops over the few outputs whose
window can contain it (pool_output_range) and writes once, so it needs no atomics and is
deterministic.
"""


import torch
import triton
import triton.language as tl

from ._common import (accumulator_dtype, autotune_configs, cast_for_store, channel_block, check_4d,
                                    memory_format)

MODE_MAX, MODE_AVG, MODE_ADAPTIVE_AVG = 0, 1, 2

# Tile sizes in elements. Pooling is memory bound: the tile only has to keep enough bytes in
# flight per SM, so a few sizes and warp counts cover the shapes that matter. The first config
# is the only one used by the interpreter, which cannot benchmark; it stays small so the
# interpreter is quick on small shapes.
_CONFIGS = autotune_configs([
    triton.Config({"BLOCK": 512}, num_warps=4),
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 4096}, num_warps=8),
])
_MAX_BLOCK = max(config.kwargs["BLOCK"] for config in _CONFIGS)

# The geometry decides the best tile. Only `channels` is specialised (its divisibility lets
# channels_last tiles use vector loads); everything else would only multiply compilations. The
# spatial sizes are left opaque on purpose: in NCHW, proving the output run contiguous makes
# Triton give each thread several consecutive outputs, which spreads a warp's strided input
# loads over 4x more cache lines than one output per thread does.
_TUNING_KEY = ["num_pixels", "channels", "in_h", "in_w", "out_h", "out_w", "stride_h", "stride_w",
               "MODE", "CHANNELS_LAST", "BLOCK_C"]
_UNSPECIALIZED = ["num_pixels", "in_h", "in_w", "out_h", "out_w", "kernel_h", "kernel_w", "stride_h",
                  "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w", "count_include_pad",
                  "divisor_override", "taps_h", "taps_w", "reach_h", "reach_w"]

# Channels per tile in channels_last: wide enough for full 128-byte rows at fp32/fp16.
_MAX_BLOCK_C = 64


# --- window math, mirroring csrc/include/dlk/pool2d.h -----------------------------------------

@triton.jit
def _pixel_offset(outer, h, w, size_h, size_w, channels, CHANNELS_LAST: tl.constexpr):
    # pool_offset() for channel 0 of the pixel; `outer` is n for NHWC and n * C + c for NCHW.
    if CHANNELS_LAST:
        return ((outer * size_h + h) * size_w + w) * channels
    else:
        return (outer * size_h + h) * size_w + w


@triton.jit
def _max_pool_span(o, size, kernel, stride, pad, dilation):
    begin = o * stride - pad
    end = tl.minimum(begin + (kernel - 1) * dilation + 1, size)
    # First tap at or after 0 on the dilation grid; `where` also evaluates this for begin >= 0,
    # where the (then negative) quotient is discarded.
    begin = tl.where(begin < 0, begin + ((dilation - 1 - begin) // dilation) * dilation, begin)
    return begin, end


@triton.jit
def _avg_pool_span(o, size, kernel, stride, pad, count_include_pad):
    begin = o * stride - pad
    end = tl.minimum(begin + kernel, size + pad)
    padded_count = end - begin
    begin = tl.maximum(begin, 0)
    end = tl.minimum(end, size)
    count = tl.where(count_include_pad != 0, padded_count, tl.maximum(end - begin, 0))
    return begin, end, count


@triton.jit
def _adaptive_pool_span(o, size, out):
    begin = (o * size) // out
    end = ((o + 1) * size + out - 1) // out
    return begin, end


@triton.jit
def _pool_output_range(i, size, out, kernel, stride, pad, dilation, MODE: tl.constexpr):
    if MODE == 2:
        first = (i * out) // size
        last = tl.minimum(((i + 1) * out + size - 1) // size, out)
    else:
        if MODE == 0:
            extent = (kernel - 1) * dilation + 1
        else:
            extent = kernel
        padded = i + pad
        first = tl.where(padded < extent, 0, (padded - extent) // stride + 1)
        last = tl.minimum(padded // stride + 1, out)
    return first, last


# --- forward ----------------------------------------------------------------------------------

@triton.jit
def _tile_coordinates(num_pixels, channels, size_h, size_w, CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK: tl.constexpr):
    """This program's tile: BLOCK_C channels (1 in NCHW) x BLOCK // BLOCK_C pixels of a size_h x size_w
    grid, as channel indices, (h, w, n or n*C + c) coordinates and masks."""
    BLOCK_P: tl.constexpr = BLOCK // BLOCK_C
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    num_c_blocks = tl.cdiv(channels, BLOCK_C)
    if CHANNELS_LAST:
        pid_c = pid % num_c_blocks
        pid_p = pid // num_c_blocks
    else:
        pid_c = pid * 0
        pid_p = pid
    ch = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    pix = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    w = pix % size_w
    h = (pix // size_w) % size_h
    outer = pix // size_w // size_h
    return ch, ch < channels, h, w, outer, pix < num_pixels


@triton.autotune(configs=_CONFIGS, key=_TUNING_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _pool2d_fwd_kernel(
    input_ptr, output_ptr, indices_ptr,
    num_pixels, channels, in_h, in_w, out_h, out_w,
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    count_include_pad, divisor_override,
    taps_h, taps_w,  # loop trip counts: the kernel, or the largest adaptive window
    MODE: tl.constexpr, CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK: tl.constexpr,
):
    BLOCK_P: tl.constexpr = BLOCK // BLOCK_C
    ch, ch_mask, oh, ow, outer, pix_mask = _tile_coordinates(
        num_pixels, channels, out_h, out_w, CHANNELS_LAST, INDEX_64, BLOCK_C, BLOCK)

    if MODE == 0:
        h_begin, h_end = _max_pool_span(oh, in_h, kernel_h, stride_h, pad_h, dilation_h)
        w_begin, w_end = _max_pool_span(ow, in_w, kernel_w, stride_w, pad_w, dilation_w)
        h_step = dilation_h
        w_step = dilation_w
    elif MODE == 1:
        h_begin, h_end, count_h = _avg_pool_span(oh, in_h, kernel_h, stride_h, pad_h, count_include_pad)
        w_begin, w_end, count_w = _avg_pool_span(ow, in_w, kernel_w, stride_w, pad_w, count_include_pad)
        divisor = tl.where(divisor_override != 0, divisor_override, count_h * count_w)
        h_step = 1
        w_step = 1
    else:
        h_begin, h_end = _adaptive_pool_span(oh, in_h, out_h)
        w_begin, w_end = _adaptive_pool_span(ow, in_w, out_w)
        divisor = (h_end - h_begin) * (w_end - w_begin)
        h_step = 1
        w_step = 1
    if MODE != 0:
        # Windows that lie entirely in the padding give 0, not 0 / 0.
        empty = (h_end <= h_begin) | (w_end <= w_begin)
        divisor = tl.where(empty, 1, divisor).to(ACC_DTYPE)[:, None]

    tile_mask = pix_mask[:, None] & ch_mask[None, :]
    if MODE == 0:
        best = tl.full([BLOCK_P, BLOCK_C], float("-inf"), ACC_DTYPE)
        # ATen seeds the index with the first in-bounds tap, so an all -inf window still
        # reports a position inside it.
        best_index = tl.broadcast_to((h_begin * in_w + w_begin)[:, None], [BLOCK_P, BLOCK_C])
    else:
        total = tl.zeros([BLOCK_P, BLOCK_C], ACC_DTYPE)

    # h outer, w inner: the order ATen visits taps, which decides ties and rounding.
    for kh in range(0, taps_h):
        h = h_begin + kh * h_step
        row_ok = pix_mask & (h < h_end)
        for kw in range(0, taps_w):
            w = w_begin + kw * w_step
            tap_mask = (row_ok & (w < w_end))[:, None] & ch_mask[None, :]
            offsets = _pixel_offset(outer, h, w, in_h, in_w, channels, CHANNELS_LAST)[:, None] + ch[None, :]
            if MODE == 0:
                value = tl.load(input_ptr + offsets, mask=tap_mask, other=float("-inf")).to(ACC_DTYPE)
                # NaN wins and a later NaN replaces an earlier one, as in ATen. Masked taps read
                # -inf, which never wins.
                take = (value > best) | (value != value)
                best = tl.where(take, value, best)
                best_index = tl.where(take, (h * in_w + w)[:, None], best_index)
            else:
                total += tl.load(input_ptr + offsets, mask=tap_mask, other=0.0).to(ACC_DTYPE)

    out_offsets = _pixel_offset(outer, oh, ow, out_h, out_w, channels, CHANNELS_LAST)[:, None] + ch[None, :]
    if MODE == 0:
        tl.store(output_ptr + out_offsets, cast_for_store(best, output_ptr.dtype.element_ty), mask=tile_mask)
        tl.store(indices_ptr + out_offsets, best_index.to(tl.int64), mask=tile_mask)
    else:
        mean = tl.where(empty[:, None], 0.0, total / divisor)
        tl.store(output_ptr + out_offsets, cast_for_store(mean, output_ptr.dtype.element_ty), mask=tile_mask)


# --- backward ---------------------------------------------------------------------------------

@triton.autotune(configs=_CONFIGS, key=_TUNING_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _pool2d_bwd_kernel(
    grad_output_ptr, indices_ptr, grad_input_ptr,
    num_pixels, channels, in_h, in_w, out_h, out_w,
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    count_include_pad, divisor_override,
    reach_h, reach_w,  # the most outputs along each axis whose window can contain one input
    MODE: tl.constexpr, CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK: tl.constexpr,
):
    BLOCK_P: tl.constexpr = BLOCK // BLOCK_C
    ch, ch_mask, h, w, outer, pix_mask = _tile_coordinates(
        num_pixels, channels, in_h, in_w, CHANNELS_LAST, INDEX_64, BLOCK_C, BLOCK)

    oh_first, oh_last = _pool_output_range(h, in_h, out_h, kernel_h, stride_h, pad_h, dilation_h, MODE)
    ow_first, ow_last = _pool_output_range(w, in_w, out_w, kernel_w, stride_w, pad_w, dilation_w, MODE)
    if MODE == 0:
        own_index = (h * in_w + w).to(tl.int64)[:, None]

    grad = tl.zeros([BLOCK_P, BLOCK_C], ACC_DTYPE)
    # oh outer, ow inner: the order ATen's gather kernels sum in.
    for i in range(0, reach_h):
        oh = oh_first + i
        row_ok = pix_mask & (oh < oh_last)
        if MODE == 0:
            # A window whose taps all fall in the padding read no input: no gradient (see pool2d.cpp).
            window_h_begin, window_h_end = _max_pool_span(oh, in_h, kernel_h, stride_h, pad_h, dilation_h)
            row_ok = row_ok & (window_h_begin < window_h_end)
        elif MODE == 1:
            _, _, count_h = _avg_pool_span(oh, in_h, kernel_h, stride_h, pad_h, count_include_pad)
        else:
            span_h_begin, span_h_end = _adaptive_pool_span(oh, in_h, out_h)
            row_ok = row_ok & (span_h_begin <= h) & (h < span_h_end)
        for j in range(0, reach_w):
            ow = ow_first + j
            ok = row_ok & (ow < ow_last)
            if MODE == 0:
                window_w_begin, window_w_end = _max_pool_span(ow, in_w, kernel_w, stride_w, pad_w, dilation_w)
                ok = ok & (window_w_begin < window_w_end)
            elif MODE == 2:
                span_w_begin, span_w_end = _adaptive_pool_span(ow, in_w, out_w)
                ok = ok & (span_w_begin <= w) & (w < span_w_end)
            tap_mask = ok[:, None] & ch_mask[None, :]
            offsets = _pixel_offset(outer, oh, ow, out_h, out_w, channels, CHANNELS_LAST)[:, None] + ch[None, :]
            g = tl.load(grad_output_ptr + offsets, mask=tap_mask, other=0.0).to(ACC_DTYPE)
            if MODE == 0:
                winner = tl.load(indices_ptr + offsets, mask=tap_mask, other=-1)
                grad += tl.where(winner == own_index, g, 0.0)
            else:
                if MODE == 1:
                    _, _, count_w = _avg_pool_span(ow, in_w, kernel_w, stride_w, pad_w, count_include_pad)
                    divisor = tl.where(divisor_override != 0, divisor_override, count_h * count_w)
                else:
                    divisor = (span_h_end - span_h_begin) * (span_w_end - span_w_begin)
                # Lanes outside the range may see a zero divisor; keep their 0 / 0 out of the sum.
                divisor = tl.where(ok, divisor, 1).to(ACC_DTYPE)
                grad += tl.where(tap_mask, g / divisor[:, None], 0.0)

    in_offsets = _pixel_offset(outer, h, w, in_h, in_w, channels, CHANNELS_LAST)[:, None] + ch[None, :]
    tile_mask = pix_mask[:, None] & ch_mask[None, :]
    tl.store(grad_input_ptr + in_offsets, cast_for_store(grad, grad_input_ptr.dtype.element_ty), mask=tile_mask)


# --- launchers --------------------------------------------------------------------------------

def _most_covering(size, other):
    """Bound on ceil((k + 1) * size / other) - floor(k * size / other) over all k.

    With (size, other) = (in, out) it is the longest adaptive window; with (out, in) the most
    adaptive windows that share one input. ceil(size / other) + 1, or size / other when exact.
    """
    if size % other == 0:
        return size // other
    return min(-(-size // other) + 1, size)


def _tile_channels(channels, channels_last):
    return channel_block(channels, _MAX_BLOCK_C) if channels_last else 1


def _needs_int64(numel, channels, in_size, out_size):
    # Lanes past the end of the last tile still form offsets, and adaptive windows multiply an
    # output index by the input size; leave room for both before choosing 32-bit arithmetic.
    slack = _MAX_BLOCK * max(channels, 1)
    return (numel + slack >= 2**31 or (in_size[0] + 1) * (out_size[0] + 1) >= 2**31
            or (in_size[1] + 1) * (out_size[1] + 1) >= 2**31)


def _launch_grid(num_pixels, channels, block_c, channels_last):
    c_blocks = triton.cdiv(channels, block_c) if channels_last else 1
    return lambda meta: (triton.cdiv(num_pixels, meta["BLOCK"] // block_c) * c_blocks,)


def pool2d_forward(input, mode, kernel, stride, padding, dilation, output_size, count_include_pad,
                   divisor_override, channels_last):
    """Max (mode 0), average (1) or adaptive average (2) pooling of a 4-D tensor.

    Returns (output, indices); indices hold the flat h * W + w of each max within its plane
    for mode 0, and are an empty int64 tensor otherwise. Arguments are assumed validated.
    """
    check_4d("pool2d", "input", input, channels_last)
    batch, channels, in_h, in_w = input.shape
    out_h, out_w = int(output_size[0]), int(output_size[1])
    fmt = memory_format(channels_last)
    output = torch.empty((batch, channels, out_h, out_w), dtype=input.dtype, device=input.device,
                         memory_format=fmt)
    if mode == MODE_MAX:
        indices = torch.empty((batch, channels, out_h, out_w), dtype=torch.int64, device=input.device,
                              memory_format=fmt)
    else:
        indices = torch.empty(0, dtype=torch.int64, device=input.device)
    if output.numel() == 0:
        return output, indices

    if mode == MODE_ADAPTIVE_AVG:
        kernel, stride, padding, dilation = (1, 1), (1, 1), (0, 0), (1, 1)
        taps = (_most_covering(in_h, out_h), _most_covering(in_w, out_w))
    else:
        taps = (int(kernel[0]), int(kernel[1]))
    num_pixels = output.numel() // channels if channels_last else output.numel()
    block_c = _tile_channels(channels, channels_last)
    _pool2d_fwd_kernel[_launch_grid(num_pixels, channels, block_c, channels_last)](
        input, output, indices if mode == MODE_MAX else output,
        num_pixels, channels, in_h, in_w, out_h, out_w,
        int(kernel[0]), int(kernel[1]), int(stride[0]), int(stride[1]),
        int(padding[0]), int(padding[1]), int(dilation[0]), int(dilation[1]),
        int(bool(count_include_pad)), int(divisor_override or 0),
        taps[0], taps[1],
        MODE=int(mode), CHANNELS_LAST=channels_last,
        INDEX_64=_needs_int64(max(input.numel(), output.numel()), channels, (in_h, in_w), (out_h, out_w)),
        ACC_DTYPE=accumulator_dtype(input.dtype), BLOCK_C=block_c,
    )
    return output, indices


def pool2d_backward(grad_output, indices, mode, input_size, kernel, stride, padding, dilation,
                    count_include_pad, divisor_override, channels_last):
    """Gradient of pool2d_forward with respect to its input, in the given memory format.

    Deterministic: each input element sums the gradients of the outputs that used it.
    """
    check_4d("pool2d", "grad_output", grad_output, channels_last)
    batch, channels, out_h, out_w = grad_output.shape
    in_h, in_w = int(input_size[0]), int(input_size[1])
    if mode == MODE_MAX:
        if indices.dtype != torch.int64 or indices.shape != grad_output.shape:
            raise ValueError(f"pool2d (triton): indices must be int64 of shape {tuple(grad_output.shape)}, "
                             f"got {indices.dtype} of shape {tuple(indices.shape)}")
        if not indices.is_contiguous(memory_format=memory_format(channels_last)):
            raise ValueError("pool2d (triton): indices must be contiguous in the memory format of grad_output")
    grad_input_shape = (batch, channels, in_h, in_w)
    fmt = memory_format(channels_last)
    grad_input = torch.empty(grad_input_shape, dtype=grad_output.dtype, device=grad_output.device,
                             memory_format=fmt)
    if grad_input.numel() == 0:
        return grad_input
    if grad_output.numel() == 0:
        return grad_input.zero_()

    if mode == MODE_ADAPTIVE_AVG:
        kernel, stride, padding, dilation = (1, 1), (1, 1), (0, 0), (1, 1)
        reach = (_most_covering(out_h, in_h), _most_covering(out_w, in_w))
    else:
        extent_h = (int(kernel[0]) - 1) * (int(dilation[0]) if mode == MODE_MAX else 1) + 1
        extent_w = (int(kernel[1]) - 1) * (int(dilation[1]) if mode == MODE_MAX else 1) + 1
        reach = (min(triton.cdiv(extent_h, int(stride[0])), out_h),
                 min(triton.cdiv(extent_w, int(stride[1])), out_w))
    num_pixels = grad_input.numel() // channels if channels_last else grad_input.numel()
    block_c = _tile_channels(channels, channels_last)
    _pool2d_bwd_kernel[_launch_grid(num_pixels, channels, block_c, channels_last)](
        grad_output, indices if mode == MODE_MAX else grad_output, grad_input,
        num_pixels, channels, in_h, in_w, out_h, out_w,
        int(kernel[0]), int(kernel[1]), int(stride[0]), int(stride[1]),
        int(padding[0]), int(padding[1]), int(dilation[0]), int(dilation[1]),
        int(bool(count_include_pad)), int(divisor_override or 0),
        reach[0], reach[1],
        MODE=int(mode), CHANNELS_LAST=channels_last,
        INDEX_64=_needs_int64(max(grad_input.numel(), grad_output.numel()), channels, (in_h, in_w),
                              (out_h, out_w)),
        ACC_DTYPE=accumulator_dtype(grad_output.dtype), BLOCK_C=block_c,
    )
    return grad_input

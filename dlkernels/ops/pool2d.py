"""2-D pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d.

Public functions pick a backend (dlkernels._backends.dispatch); for ours they validate their
arguments and compute the output size the ATen way, then call the dlk::max_pool2d, ... ops, which
carry fake implementations for torch.compile and autograd formulas whose backward is itself a dlk
op. Every backend of ours implements the same two entry points, pool2d_forward and pool2d_backward.
"""
from __future__ import annotations

import torch
from torch import Tensor

import torch.nn.functional as F

from dlkernels._backends import runs_torch_now, dispatch, implementation
from dlkernels._enums import PoolMode
from dlkernels._library import define
from dlkernels._validation import as_layout, check_tensor, layout_of, pair

MAX, AVG, ADAPTIVE_AVG = int(PoolMode.MAX), int(PoolMode.AVG), int(PoolMode.ADAPTIVE_AVG)  # generated from C++
NO_DILATION = [1, 1]


def _implementation(backend: str):
    return implementation("pool2d", backend)


def _channels_last(x: Tensor) -> bool:
    return layout_of(x) == torch.channels_last


def _empty_like_layout(x: Tensor, shape, channels_last: bool, dtype=None) -> Tensor:
    return torch.empty(shape, dtype=dtype or x.dtype, device=x.device, memory_format=_memory_format(channels_last))


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


# ----------------------------------------------------------------------------- max_pool2d
def _max_pool2d_impl(x, kernel, stride, padding, dilation, output_size, backend):
    return _implementation(backend).pool2d_forward(x, MAX, kernel, stride, padding, dilation, output_size, True, 0,
                                                   _channels_last(x))


def _max_pool2d_fake(x, kernel, stride, padding, dilation, output_size, backend):
    shape = (*x.shape[:2], *output_size)
    return (_empty_like_layout(x, shape, _channels_last(x)),
            _empty_like_layout(x, shape, _channels_last(x), torch.int64))


def _max_pool2d_backward_impl(grad_output, indices, input_size, kernel, stride, padding, dilation, channels_last,
                              backend):
    return _implementation(backend).pool2d_backward(
        grad_output, indices, MAX, input_size, kernel, stride, padding, dilation, True, 0, channels_last)


def _max_pool2d_backward_fake(grad_output, indices, input_size, kernel, stride, padding, dilation, channels_last,
                              backend):
    return _empty_like_layout(grad_output, (*grad_output.shape[:2], *input_size), channels_last)


_max_pool2d_backward = define(
    "max_pool2d_backward(Tensor grad_output, Tensor indices, int[] input_size, int[] kernel, int[] stride, "
    "int[] padding, int[] dilation, bool channels_last, str backend) -> Tensor",
    _max_pool2d_backward_impl, _max_pool2d_backward_fake)


def _max_pool2d_setup_context(ctx, inputs, output):
    x, kernel, stride, padding, dilation, _, backend = inputs
    ctx.save_for_backward(output[1])
    ctx.args = (list(x.shape[2:]), kernel, stride, padding, dilation, _channels_last(x), backend)
    ctx.mark_non_differentiable(output[1])


def _max_pool2d_grad(ctx, grad_output, _grad_indices):
    (indices,) = ctx.saved_tensors
    input_size, kernel, stride, padding, dilation, channels_last, backend = ctx.args
    grad_output = as_layout(grad_output, _memory_format(channels_last))
    grad_input = _max_pool2d_backward(grad_output, indices, input_size, kernel, stride, padding, dilation,
                                      channels_last, backend)
    return grad_input, None, None, None, None, None, None


_max_pool2d = define(
    "max_pool2d(Tensor x, int[] kernel, int[] stride, int[] padding, int[] dilation, int[] output_size, "
    "str backend) -> (Tensor, Tensor)",
    _max_pool2d_impl, _max_pool2d_fake, setup_context=_max_pool2d_setup_context, backward=_max_pool2d_grad)


def _max_pool2d_values_impl(x, kernel, stride, padding, dilation, output_size, backend):
    # Nothing will ask for the gradient or the indices: the C++ and CUDA kernels then skip the int64
    # indices (8 bytes per output, four times an fp16 output). The Triton kernel always writes them.
    skip = {} if backend == "triton" else {"need_indices": False}
    out, _ = _implementation(backend).pool2d_forward(x, MAX, kernel, stride, padding, dilation, output_size, True, 0,
                                                     _channels_last(x), **skip)
    return out


def _max_pool2d_values_fake(x, kernel, stride, padding, dilation, output_size, backend):
    return _empty_like_layout(x, (*x.shape[:2], *output_size), _channels_last(x))


# Max pooling without indices, for inference; no derivative (max_pool2d above has one).
_max_pool2d_values = define(
    "max_pool2d_values(Tensor x, int[] kernel, int[] stride, int[] padding, int[] dilation, int[] output_size, "
    "str backend) -> Tensor",
    _max_pool2d_values_impl, _max_pool2d_values_fake)


# ----------------------------------------------------------------------------- avg_pool2d
def _avg_pool2d_impl(x, kernel, stride, padding, output_size, count_include_pad, divisor_override, backend):
    out, _ = _implementation(backend).pool2d_forward(x, AVG, kernel, stride, padding, NO_DILATION, output_size,
                                                     count_include_pad, divisor_override, _channels_last(x))
    return out


def _avg_pool2d_fake(x, kernel, stride, padding, output_size, count_include_pad, divisor_override, backend):
    return _empty_like_layout(x, (*x.shape[:2], *output_size), _channels_last(x))


def _avg_pool2d_backward_impl(grad_output, input_size, kernel, stride, padding, count_include_pad, divisor_override,
                              channels_last, backend):
    no_indices = torch.empty(0, dtype=torch.int64, device=grad_output.device)
    return _implementation(backend).pool2d_backward(
        grad_output, no_indices, AVG, input_size, kernel, stride, padding, NO_DILATION, count_include_pad,
        divisor_override, channels_last)


def _avg_pool2d_backward_fake(grad_output, input_size, kernel, stride, padding, count_include_pad, divisor_override,
                              channels_last, backend):
    return _empty_like_layout(grad_output, (*grad_output.shape[:2], *input_size), channels_last)


_avg_pool2d_backward = define(
    "avg_pool2d_backward(Tensor grad_output, int[] input_size, int[] kernel, int[] stride, int[] padding, "
    "bool count_include_pad, int divisor_override, bool channels_last, str backend) -> Tensor",
    _avg_pool2d_backward_impl, _avg_pool2d_backward_fake)


def _avg_pool2d_setup_context(ctx, inputs, output):
    x, kernel, stride, padding, _, count_include_pad, divisor_override, backend = inputs
    ctx.args = (list(x.shape[2:]), kernel, stride, padding, count_include_pad, divisor_override,
                _channels_last(x), backend)


def _avg_pool2d_grad(ctx, grad_output):
    input_size, kernel, stride, padding, count_include_pad, divisor_override, channels_last, backend = ctx.args
    grad_output = as_layout(grad_output, _memory_format(channels_last))
    grad_input = _avg_pool2d_backward(grad_output, input_size, kernel, stride, padding, count_include_pad,
                                      divisor_override, channels_last, backend)
    return grad_input, None, None, None, None, None, None, None


_avg_pool2d = define(
    "avg_pool2d(Tensor x, int[] kernel, int[] stride, int[] padding, int[] output_size, bool count_include_pad, "
    "int divisor_override, str backend) -> Tensor",
    _avg_pool2d_impl, _avg_pool2d_fake, setup_context=_avg_pool2d_setup_context, backward=_avg_pool2d_grad)


# -------------------------------------------------------------------- adaptive_avg_pool2d
_ADAPTIVE_GEOMETRY = ([1, 1], [1, 1], [0, 0], NO_DILATION)  # kernel, stride, padding, dilation: unused


def _adaptive_avg_pool2d_impl(x, output_size, backend):
    out, _ = _implementation(backend).pool2d_forward(x, ADAPTIVE_AVG, *_ADAPTIVE_GEOMETRY, output_size, True, 0,
                                                     _channels_last(x))
    return out


def _adaptive_avg_pool2d_fake(x, output_size, backend):
    return _empty_like_layout(x, (*x.shape[:2], *output_size), _channels_last(x))


def _adaptive_avg_pool2d_backward_impl(grad_output, input_size, channels_last, backend):
    no_indices = torch.empty(0, dtype=torch.int64, device=grad_output.device)
    return _implementation(backend).pool2d_backward(
        grad_output, no_indices, ADAPTIVE_AVG, input_size, *_ADAPTIVE_GEOMETRY, True, 0, channels_last)


def _adaptive_avg_pool2d_backward_fake(grad_output, input_size, channels_last, backend):
    return _empty_like_layout(grad_output, (*grad_output.shape[:2], *input_size), channels_last)


_adaptive_avg_pool2d_backward = define(
    "adaptive_avg_pool2d_backward(Tensor grad_output, int[] input_size, bool channels_last, str backend) -> Tensor",
    _adaptive_avg_pool2d_backward_impl, _adaptive_avg_pool2d_backward_fake)


def _adaptive_avg_pool2d_setup_context(ctx, inputs, output):
    x, _, backend = inputs
    ctx.args = (list(x.shape[2:]), _channels_last(x), backend)


def _adaptive_avg_pool2d_grad(ctx, grad_output):
    input_size, channels_last, backend = ctx.args
    grad_output = as_layout(grad_output, _memory_format(channels_last))
    return _adaptive_avg_pool2d_backward(grad_output, input_size, channels_last, backend), None, None


_adaptive_avg_pool2d = define(
    "adaptive_avg_pool2d(Tensor x, int[] output_size, str backend) -> Tensor",
    _adaptive_avg_pool2d_impl, _adaptive_avg_pool2d_fake, setup_context=_adaptive_avg_pool2d_setup_context,
    backward=_adaptive_avg_pool2d_grad)


# ------------------------------------------------------------------------- public API
def pooling_output_size(op: str, size: int, kernel: int, stride: int, pad: int, dilation: int,
                        ceil_mode: bool) -> int:
    """ATen's pooling_output_shape: with ceil_mode the last window must start inside input + left pad."""
    numerator = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _prepare(op: str, input, kernel_size, stride, padding, dilation, ceil_mode):
    """Validated 4-D input in a kernel layout, the geometry, and the output size."""
    check_tensor(op, "input", input, ranks=(3, 4))
    kernel = pair(op, "kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else pair(op, "stride", stride, minimum=1)
    padding = pair(op, "padding", padding, minimum=0)
    dilation = pair(op, "dilation", dilation, minimum=1)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding must be at most half of kernel_size, got padding={padding} "
                         f"and kernel_size={kernel}")
    x = input.unsqueeze(0) if input.dim() == 3 else input
    out_size = [pooling_output_size(op, x.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i], ceil_mode)
                for i in range(2)]
    if min(out_size) < 1:
        raise ValueError(f"{op}: kernel_size={kernel} with padding={padding} and dilation={dilation} does not fit "
                         f"input of spatial size {tuple(x.shape[2:])} (output size would be {tuple(out_size)})")
    return as_layout(x, layout_of(x)), list(kernel), list(stride), list(padding), list(dilation), out_size


def _restore_rank(input: Tensor, out: Tensor) -> Tensor:
    return out.squeeze(0) if input.dim() == 3 else out


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False, *, backend: str = "auto"):
    """torch.nn.functional.max_pool2d; `backend` is "auto", "cuda", "triton", "reference" or "torch"."""
    if runs_torch_now(backend, input):
        return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                            return_indices=return_indices)
    def prepare(chosen: str):
        x, kernel, strides, pads, dilations, out_size = _prepare("max_pool2d", input, kernel_size, stride, padding,
                                                                  dilation, ceil_mode)

        def run():
            if not return_indices and not (x.requires_grad and torch.is_grad_enabled()):
                return _restore_rank(input, _max_pool2d_values(x, kernel, strides, pads, dilations, out_size, chosen))
            out, indices = _max_pool2d(x, kernel, strides, pads, dilations, out_size, chosen)
            out, indices = _restore_rank(input, out), _restore_rank(input, indices)
            return (out, indices) if return_indices else out
        return run

    def run_torch():
        return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                            return_indices=return_indices)

    return dispatch("max_pool2d", backend, input, prepare, run_torch,
                    key=lambda: _key(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices))


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None, *, backend: str = "auto"):
    """torch.nn.functional.avg_pool2d; `backend` is "auto", "cuda", "triton", "reference" or "torch"."""
    if runs_torch_now(backend, input):
        return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    def prepare(chosen: str):
        if divisor_override is not None and (isinstance(divisor_override, bool)
                                             or not isinstance(divisor_override, int) or divisor_override == 0):
            raise ValueError(f"avg_pool2d: divisor_override must be a non-zero int or None, got {divisor_override!r}")
        x, kernel, strides, pads, _, out_size = _prepare("avg_pool2d", input, kernel_size, stride, padding, 1,
                                                         ceil_mode)
        return lambda: _restore_rank(input, _avg_pool2d(x, kernel, strides, pads, out_size, bool(count_include_pad),
                                                        divisor_override or 0, chosen))

    def run_torch():
        return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    return dispatch("avg_pool2d", backend, input, prepare, run_torch,
                    key=lambda: _key(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                     divisor_override))


def adaptive_avg_pool2d(input: Tensor, output_size, *, backend: str = "auto"):
    """torch.nn.functional.adaptive_avg_pool2d (None in output_size keeps that input size)."""
    if runs_torch_now(backend, input):
        return F.adaptive_avg_pool2d(input, output_size)
    op = "adaptive_avg_pool2d"

    def prepare(chosen: str):
        check_tensor(op, "input", input, ranks=(3, 4))
        x = input.unsqueeze(0) if input.dim() == 3 else input
        size = output_size
        if isinstance(size, (list, tuple)) and len(size) == 2:
            size = tuple(x.shape[2 + i] if s is None else s for i, s in enumerate(size))
        out_size = list(pair(op, "output_size", size, minimum=1))
        x = as_layout(x, layout_of(x))
        return lambda: _restore_rank(input, _adaptive_avg_pool2d(x, out_size, chosen))

    return dispatch(op, backend, input, prepare, lambda: F.adaptive_avg_pool2d(input, output_size),
                    key=lambda: _key(input, output_size))


def _key(input: Tensor, *arguments):
    """The shape class of a call, for autotune: shape, strides, dtype and the op's other arguments."""
    return (tuple(input.shape), input.stride(), input.dtype,
            *(tuple(a) if isinstance(a, list) else a for a in arguments))

"""2-D pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d as torch.library custom ops.

Public functions validate their arguments and compute the output size the ATen way; the custom ops
(dlk::max_pool2d, ...) carry fake implementations for torch.compile and autograd formulas whose
backward is itself a custom op. Every backend implements the same two entry points,
pool2d_forward and pool2d_backward (see csrc/bindings/pool2d.cpp for the schema).
"""
from __future__ import annotations

import torch
from torch import Tensor

from dlkernels._backends import implementation, resolve_backend
from dlkernels._validation import as_layout, check_tensor, layout_of, pair

MAX, AVG, ADAPTIVE_AVG = 0, 1, 2  # dlk::PoolMode in csrc/include/dlk/pool2d.h
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
@torch.library.custom_op("dlk::max_pool2d", mutates_args=())
def _max_pool2d(x: Tensor, kernel: list[int], stride: list[int], padding: list[int], dilation: list[int],
                output_size: list[int], backend: str) -> tuple[Tensor, Tensor]:
    return _implementation(backend).pool2d_forward(x, MAX, kernel, stride, padding, dilation, output_size, True, 0,
                                                   _channels_last(x))


@_max_pool2d.register_fake
def _(x, kernel, stride, padding, dilation, output_size, backend):
    shape = (*x.shape[:2], *output_size)
    return (_empty_like_layout(x, shape, _channels_last(x)),
            _empty_like_layout(x, shape, _channels_last(x), torch.int64))


@torch.library.custom_op("dlk::max_pool2d_backward", mutates_args=())
def _max_pool2d_backward(grad_output: Tensor, indices: Tensor, input_size: list[int], kernel: list[int],
                         stride: list[int], padding: list[int], dilation: list[int], channels_last: bool,
                         backend: str) -> Tensor:
    return _implementation(backend).pool2d_backward(
        grad_output, indices, MAX, input_size, kernel, stride, padding, dilation, True, 0, channels_last)


@_max_pool2d_backward.register_fake
def _(grad_output, indices, input_size, kernel, stride, padding, dilation, channels_last, backend):
    return _empty_like_layout(grad_output, (*grad_output.shape[:2], *input_size), channels_last)


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


_max_pool2d.register_autograd(_max_pool2d_grad, setup_context=_max_pool2d_setup_context)


# ----------------------------------------------------------------------------- avg_pool2d
@torch.library.custom_op("dlk::avg_pool2d", mutates_args=())
def _avg_pool2d(x: Tensor, kernel: list[int], stride: list[int], padding: list[int], output_size: list[int],
                count_include_pad: bool, divisor_override: int, backend: str) -> Tensor:
    out, _ = _implementation(backend).pool2d_forward(x, AVG, kernel, stride, padding, NO_DILATION, output_size,
                                                     count_include_pad, divisor_override, _channels_last(x))
    return out


@_avg_pool2d.register_fake
def _(x, kernel, stride, padding, output_size, count_include_pad, divisor_override, backend):
    return _empty_like_layout(x, (*x.shape[:2], *output_size), _channels_last(x))


@torch.library.custom_op("dlk::avg_pool2d_backward", mutates_args=())
def _avg_pool2d_backward(grad_output: Tensor, input_size: list[int], kernel: list[int], stride: list[int],
                         padding: list[int], count_include_pad: bool, divisor_override: int,
                         channels_last: bool, backend: str) -> Tensor:
    no_indices = torch.empty(0, dtype=torch.int64, device=grad_output.device)
    return _implementation(backend).pool2d_backward(
        grad_output, no_indices, AVG, input_size, kernel, stride, padding, NO_DILATION, count_include_pad,
        divisor_override, channels_last)


@_avg_pool2d_backward.register_fake
def _(grad_output, input_size, kernel, stride, padding, count_include_pad, divisor_override, channels_last,
      backend):
    return _empty_like_layout(grad_output, (*grad_output.shape[:2], *input_size), channels_last)


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


_avg_pool2d.register_autograd(_avg_pool2d_grad, setup_context=_avg_pool2d_setup_context)


# -------------------------------------------------------------------- adaptive_avg_pool2d
_ADAPTIVE_GEOMETRY = ([1, 1], [1, 1], [0, 0], NO_DILATION)  # kernel, stride, padding, dilation: unused


@torch.library.custom_op("dlk::adaptive_avg_pool2d", mutates_args=())
def _adaptive_avg_pool2d(x: Tensor, output_size: list[int], backend: str) -> Tensor:
    out, _ = _implementation(backend).pool2d_forward(x, ADAPTIVE_AVG, *_ADAPTIVE_GEOMETRY, output_size, True, 0,
                                                     _channels_last(x))
    return out


@_adaptive_avg_pool2d.register_fake
def _(x, output_size, backend):
    return _empty_like_layout(x, (*x.shape[:2], *output_size), _channels_last(x))


@torch.library.custom_op("dlk::adaptive_avg_pool2d_backward", mutates_args=())
def _adaptive_avg_pool2d_backward(grad_output: Tensor, input_size: list[int], channels_last: bool,
                                  backend: str) -> Tensor:
    no_indices = torch.empty(0, dtype=torch.int64, device=grad_output.device)
    return _implementation(backend).pool2d_backward(
        grad_output, no_indices, ADAPTIVE_AVG, input_size, *_ADAPTIVE_GEOMETRY, True, 0, channels_last)


@_adaptive_avg_pool2d_backward.register_fake
def _(grad_output, input_size, channels_last, backend):
    return _empty_like_layout(grad_output, (*grad_output.shape[:2], *input_size), channels_last)


def _adaptive_avg_pool2d_setup_context(ctx, inputs, output):
    x, _, backend = inputs
    ctx.args = (list(x.shape[2:]), _channels_last(x), backend)


def _adaptive_avg_pool2d_grad(ctx, grad_output):
    input_size, channels_last, backend = ctx.args
    grad_output = as_layout(grad_output, _memory_format(channels_last))
    return _adaptive_avg_pool2d_backward(grad_output, input_size, channels_last, backend), None, None


_adaptive_avg_pool2d.register_autograd(_adaptive_avg_pool2d_grad, setup_context=_adaptive_avg_pool2d_setup_context)


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
    """torch.nn.functional.max_pool2d; `backend` is "auto", "cuda", "triton" or "cpu"."""
    x, kernel, stride, padding, dilation, out_size = _prepare("max_pool2d", input, kernel_size, stride, padding,
                                                              dilation, ceil_mode)
    backend = resolve_backend("max_pool2d", backend, x.device)
    out, indices = _max_pool2d(x, kernel, stride, padding, dilation, out_size, backend)
    out, indices = _restore_rank(input, out), _restore_rank(input, indices)
    return (out, indices) if return_indices else out


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None, *, backend: str = "auto"):
    """torch.nn.functional.avg_pool2d; `backend` is "auto", "cuda", "triton" or "cpu"."""
    if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(divisor_override, int)
                                         or divisor_override == 0):
        raise ValueError(f"avg_pool2d: divisor_override must be a non-zero int or None, got {divisor_override!r}")
    x, kernel, stride, padding, _, out_size = _prepare("avg_pool2d", input, kernel_size, stride, padding, 1,
                                                       ceil_mode)
    backend = resolve_backend("avg_pool2d", backend, x.device)
    out = _avg_pool2d(x, kernel, stride, padding, out_size, bool(count_include_pad), divisor_override or 0, backend)
    return _restore_rank(input, out)


def adaptive_avg_pool2d(input: Tensor, output_size, *, backend: str = "auto"):
    """torch.nn.functional.adaptive_avg_pool2d (None in output_size keeps that input size)."""
    op = "adaptive_avg_pool2d"
    check_tensor(op, "input", input, ranks=(3, 4))
    x = input.unsqueeze(0) if input.dim() == 3 else input
    if isinstance(output_size, (list, tuple)) and len(output_size) == 2:
        output_size = tuple(x.shape[2 + i] if s is None else s for i, s in enumerate(output_size))
    out_size = list(pair(op, "output_size", output_size, minimum=1))
    backend = resolve_backend(op, backend, x.device)
    out = _adaptive_avg_pool2d(as_layout(x, layout_of(x)), out_size, backend)
    return _restore_rank(input, out)

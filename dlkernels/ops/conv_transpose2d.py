"""2-D transposed convolution: torch.nn.functional.conv_transpose2d on conv2d's data-gradient kernels.

conv_transpose2d(x, w) is the data gradient of a conv2d whose weight is w (in_channels, out_channels / groups,
kH, kW) and whose output is x: every backend's conv2d_backward_input (dlkernels/_native/conv2d.py,
triton_kernels/conv2d.py) computes it, with x in the role of grad_output. Its gradients are conv2d's other two
kernels with the roles swapped: grad_x is the forward conv2d of grad_y with w, grad_w the conv2d weight gradient
with x as grad_output and grad_y as input. Both run as dlk ops that carry their own autograd formulas, so this
op is differentiable to any order.

The public function picks a backend (dlkernels._backends.dispatch); "torch" is F.conv_transpose2d.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dlkernels._backends import dispatch, implementation
from dlkernels._library import define
from dlkernels._validation import FLOAT_DTYPES, as_layout, check_tensor, layout_of, pair
from dlkernels.ops.conv2d import DIRECT, _conv2d_backward, _conv2d_plain

OP = "conv_transpose2d"


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


# ----------------------------------------------------------------------------- dlk op
def _conv_transpose2d_impl(x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], padding: list[int],
                           dilation: list[int], groups: int, output_size: list[int], channels_last: bool,
                           allow_tf32: bool, backend: str) -> Tensor:
    out = implementation("conv2d", backend).conv2d_backward_input(x, weight, output_size, stride, padding, dilation,
                                                                  groups, channels_last, allow_tf32)
    if bias is not None:  # the data-gradient kernels have no epilogue: one in-place pass
        out.add_(bias.view(1, -1, 1, 1))
    return out


def _conv_transpose2d_fake(x, weight, bias, stride, padding, dilation, groups, output_size, channels_last,
                           allow_tf32, backend):
    return torch.empty((x.shape[0], weight.shape[1] * groups, *output_size), dtype=x.dtype, device=x.device,
                       memory_format=_memory_format(channels_last))


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, _, channels_last, allow_tf32, backend = inputs
    ctx.save_for_backward(x, weight)
    ctx.args = (stride, padding, dilation, groups, channels_last, allow_tf32, backend)


def _backward(ctx, grad_output):
    x, weight = ctx.saved_tensors
    stride, padding, dilation, groups, channels_last, allow_tf32, backend = ctx.args
    grad_output = as_layout(grad_output, _memory_format(channels_last))
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input = grad_weight = grad_bias = None
    if need_input:  # the forward conv2d of grad_output, whose output has x's size
        grad_input = _conv2d_plain(grad_output, weight, stride, padding, dilation, groups, list(x.shape[2:]),
                                   channels_last, allow_tf32, DIRECT, backend)
    if need_weight:  # conv2d's weight gradient with x as its grad_output and grad_output as its input
        _, grad_weight = _conv2d_backward(x, grad_output, weight, stride, padding, dilation, groups, channels_last,
                                          allow_tf32, DIRECT, backend, False, True)
    if need_bias:
        grad_bias = grad_output.sum((0, 2, 3), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
        grad_bias = grad_bias.to(x.dtype)
    return grad_input, grad_weight, grad_bias, *([None] * 8)


_conv_transpose2d = define(
    "conv_transpose2d(Tensor x, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, "
    "int groups, int[] output_size, bool channels_last, bool allow_tf32, str backend) -> Tensor",
    _conv_transpose2d_impl, _conv_transpose2d_fake, setup_context=_setup_context, backward=_backward)


# ----------------------------------------------------------------------------- argument handling
def _check_like(name: str, value: Tensor, like: Tensor) -> None:
    if value.dtype != like.dtype:
        raise TypeError(f"{OP}: {name} dtype {value.dtype} does not match the input's {like.dtype}")
    if value.device != like.device:
        raise ValueError(f"{OP}: {name} is on {value.device} but the input is on {like.device}")


def _validate(input, weight, bias, groups) -> None:
    check_tensor(OP, "input", input, ranks=(3, 4), dtypes=FLOAT_DTYPES)
    check_tensor(OP, "weight", weight, ranks=(4,), dtypes=FLOAT_DTYPES)
    _check_like("weight", weight, input)
    if bias is not None:
        check_tensor(OP, "bias", bias, ranks=(1,), dtypes=FLOAT_DTYPES)
        _check_like("bias", bias, input)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{OP}: groups must be a positive int, got {groups!r}")
    channels = input.shape[-3]
    if channels % groups:
        raise ValueError(f"{OP}: groups={groups} must divide the input channels ({channels})")
    if weight.shape[0] != channels:
        raise ValueError(f"{OP}: weight of shape {tuple(weight.shape)} expects {weight.shape[0]} input channels "
                         f"(its first dimension), but the input has {channels}")
    if bias is not None and bias.shape != (weight.shape[1] * groups,):
        raise ValueError(f"{OP}: bias must have shape ({weight.shape[1] * groups},), got {tuple(bias.shape)}")


def output_size_of(input_size, kernel_size, stride, padding, output_padding, dilation) -> list[int]:
    """torch's: (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1, per axis."""
    return [(i - 1) * s - 2 * p + d * (k - 1) + o + 1
            for i, k, s, p, o, d in zip(input_size, kernel_size, stride, padding, output_padding, dilation)]


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                     output_padding=0, groups: int = 1, dilation=1, *, backend: str = "auto") -> Tensor:
    """F.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation).

    backend: "auto", "cuda", "triton", "reference" or "torch". Ours run conv2d's data-gradient kernels; fp32
    inputs use TF32 tensor cores on GPU exactly when torch.backends.cudnn.allow_tf32 allows cuDNN to.
    """
    def prepare(chosen: str):
        return _prepare(input, weight, bias, stride, padding, output_padding, groups, dilation, chosen)

    def run_torch():
        return F.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)

    def key():
        return (tuple(input.shape), input.stride(), input.dtype, tuple(weight.shape), weight.stride(), bias is None,
                str(stride), str(padding), str(output_padding), groups, str(dilation))

    return dispatch(OP, backend, input, prepare, run_torch, key=key)


def _prepare(input, weight, bias, stride, padding, output_padding, groups, dilation, backend: str):
    """Validates one call for our backend `backend`; returns the thunk that runs it."""
    _validate(input, weight, bias, groups)
    stride = pair(OP, "stride", stride, minimum=1)
    padding = pair(OP, "padding", padding, minimum=0)
    output_padding = pair(OP, "output_padding", output_padding, minimum=0)
    dilation = pair(OP, "dilation", dilation, minimum=1)
    if any(o >= max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"{OP}: output_padding must be smaller than stride or dilation, got output_padding "
                         f"{output_padding}, stride {stride}, dilation {dilation}")
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    output_size = output_size_of(x.shape[2:], weight.shape[2:], stride, padding, output_padding, dilation)
    if min(output_size) < 1:
        raise ValueError(f"{OP}: padding {padding} leaves no output for input size {tuple(x.shape[2:])} (output "
                         f"size would be {tuple(output_size)})")
    channels_last = layout_of(x) == torch.channels_last
    fmt = _memory_format(channels_last)
    allow_tf32 = x.dtype == torch.float32 and x.device.type == "cuda" and torch.backends.cudnn.allow_tf32

    def run():
        out = _conv_transpose2d(as_layout(x, fmt), as_layout(weight, fmt), None if bias is None else bias.contiguous(),
                                list(stride), list(padding), list(dilation), groups, output_size, channels_last,
                                allow_tf32, backend)
        return out if batched else out.squeeze(0)
    return run


__all__ = ["conv_transpose2d", "output_size_of"]

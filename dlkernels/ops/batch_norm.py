"""Fused BatchNorm (+ residual) (+ ReLU or LeakyReLU): y = act(batch_norm(x) + residual), forward and backward.

Two custom ops carry it:
- dlk::batch_norm_stats computes per-channel mean and 1/std of a batch and updates the running
  statistics in place (it mutates, so it has no autograd formula; it runs on a detached input);
- dlk::batch_norm_relu normalises with given statistics. With batch_stats=True the statistics are
  those of `input` itself and its backward includes their dependence on `input` (BatchNorm's
  training gradient); with batch_stats=False they are constants (eval mode).
The activation reaches the kernels as an on/off flag and one negative_slope (ReLU = slope 0): one epilogue
serves both, and the backward scales the gradient by 1 or the slope from the saved output's sign.
Every backend implements the four steps of csrc/bindings/batch_norm.cpp under the same names.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

import torch.nn.functional as F

from dlkernels._backends import dispatch, implementation
from dlkernels._library import define
from dlkernels._validation import FLOAT_DTYPES, as_layout, layout_of

ACTIVATIONS = ("relu", "leaky_relu", None)


def _impl(backend: str):
    return implementation("batch_norm", backend)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _batch_norm_stats_impl(x, running_mean, running_var, momentum, eps, channels_last, backend):
    return _impl(backend).batch_norm_stats(x, running_mean, running_var, momentum, eps, channels_last)


def _batch_norm_stats_fake(x, running_mean, running_var, momentum, eps, channels_last, backend):
    stat = x.new_empty(x.shape[1], dtype=_stat_dtype(x.dtype))
    return stat, torch.empty_like(stat)


# Mutates the running statistics, so no autograd formula: it runs on a detached input.
_batch_norm_stats = define(
    "batch_norm_stats(Tensor x, Tensor(a!)? running_mean, Tensor(b!)? running_var, float momentum, float eps, "
    "bool channels_last, str backend) -> (Tensor, Tensor)",
    _batch_norm_stats_impl, _batch_norm_stats_fake)


def _batch_norm_relu_impl(x, mean, invstd, weight, bias, residual, batch_stats, activation, channels_last, backend,
                          negative_slope=0.0):
    return _impl(backend).batch_norm_apply(x, mean, invstd, weight, bias, residual, activation, channels_last,
                                           negative_slope)


def _batch_norm_relu_fake(x, mean, invstd, weight, bias, residual, batch_stats, activation, channels_last, backend,
                          negative_slope=0.0):
    return torch.empty_like(x, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _batch_norm_relu_backward_impl(grad_output, output, x, mean, invstd, weight, batch_stats, activation,
                                   want_grad_residual, channels_last, backend, negative_slope=0.0):
    impl = _impl(backend)
    sum_dy, sum_dy_xhat = impl.batch_norm_backward_reduce(grad_output, output, x, mean, invstd, activation,
                                                          channels_last, negative_slope)
    grad_input, grad_residual = impl.batch_norm_backward_apply(
        grad_output, output, x, mean, invstd, weight, sum_dy, sum_dy_xhat, batch_stats, activation,
        want_grad_residual, channels_last, negative_slope)
    # d/dweight = sum(g * xhat), d/dbias = sum(g): the two reductions the input gradient needed anyway.
    return grad_input, sum_dy_xhat, sum_dy, grad_residual


def _batch_norm_relu_backward_fake(grad_output, output, x, mean, invstd, weight, batch_stats, activation,
                                   want_grad_residual, channels_last, backend, negative_slope=0.0):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    grad_residual = torch.empty_like(x, memory_format=fmt) if want_grad_residual else x.new_empty(0)
    return torch.empty_like(x, memory_format=fmt), torch.empty_like(mean), torch.empty_like(mean), grad_residual


_batch_norm_relu_backward = define(
    "batch_norm_relu_backward(Tensor grad_output, Tensor? output, Tensor x, Tensor mean, Tensor invstd, "
    "Tensor? weight, bool batch_stats, bool activation, bool want_grad_residual, bool channels_last, str backend, "
    "float negative_slope=0.0) -> (Tensor, Tensor, Tensor, Tensor)",
    _batch_norm_relu_backward_impl, _batch_norm_relu_backward_fake)


def _setup_context(ctx, inputs, output):
    x, mean, invstd, weight, bias, residual, batch_stats, activation, channels_last, backend, *slope = inputs
    ctx.save_for_backward(x, mean, invstd, weight, output if activation else None)
    ctx.options = (batch_stats, activation, channels_last, backend, residual is not None, *slope)


def _backward(ctx, grad_output):
    x, mean, invstd, weight, output = ctx.saved_tensors
    batch_stats, activation, channels_last, backend, has_residual, *slope = ctx.options
    grad_output = as_layout(grad_output, torch.channels_last if channels_last else torch.contiguous_format)
    grad_input, grad_weight, grad_bias, grad_residual = _batch_norm_relu_backward(
        grad_output, output, x, mean, invstd, weight, batch_stats, activation,
        has_residual and ctx.needs_input_grad[5], channels_last, backend, *slope)
    needs = ctx.needs_input_grad
    return (grad_input if needs[0] else None, None, None, grad_weight if needs[3] else None,
            grad_bias if needs[4] else None, grad_residual if needs[5] else None, *([None] * (len(needs) - 6)))


_batch_norm_relu = define(
    "batch_norm_relu(Tensor x, Tensor mean, Tensor invstd, Tensor? weight, Tensor? bias, Tensor? residual, "
    "bool batch_stats, bool activation, bool channels_last, str backend, float negative_slope=0.0) -> Tensor",
    _batch_norm_relu_impl, _batch_norm_relu_fake, setup_context=_setup_context, backward=_backward)


# ------------------------------------------------------------------------- public API
def _check_per_channel(name: str, value, channels: int, device: torch.device, op: str = "batch_norm_relu") -> None:
    if value is None:
        return
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(value).__name__}")
    if value.shape != (channels,):
        raise ValueError(f"{op}: {name} must have shape ({channels},) to match the input's channels, "
                         f"got {tuple(value.shape)}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} has unsupported dtype {value.dtype}")
    if value.device != device:
        raise ValueError(f"{op}: {name} is on {value.device} but input is on {device}")


def _validate(input, running_mean, running_var, weight, bias, training, momentum, eps, residual, activation,
              negative_slope, *, op: str = "batch_norm_relu", per_replica: bool = False):
    """per_replica: the input is one replica's slice of a synchronised batch, which may be empty or hold one
    value per channel (torch's SyncBatchNorm allows both)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() not in (2, 3, 4):
        raise ValueError(f"{op}: input must be 2-D, 3-D or 4-D (N, C, ...), got shape {tuple(input.shape)}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: input has unsupported dtype {input.dtype}; supported: float16, bfloat16, "
                        "float32, float64")
    if input.numel() == 0 and not per_replica:
        raise ValueError(f"{op}: input must not be empty, got shape {tuple(input.shape)}")
    channels = input.shape[1]
    for name, value in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                        ("bias", bias)):
        _check_per_channel(name, value, channels, input.device, op)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must both be given or both be None")
    if not training and running_mean is None:
        raise ValueError(f"{op}: running_mean and running_var are required when training=False")
    if training and not per_replica and input.numel() // channels <= 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got input of shape "
                         f"{tuple(input.shape)}")
    if residual is not None:
        if not isinstance(residual, Tensor):
            raise TypeError(f"{op}: residual must be a torch.Tensor or None, got {type(residual).__name__}")
        if residual.shape != input.shape or residual.dtype != input.dtype or residual.device != input.device:
            raise ValueError(f"{op}: residual must match the input's shape, dtype and device; got "
                             f"{tuple(residual.shape)} {residual.dtype} on {residual.device} for input "
                             f"{tuple(input.shape)} {input.dtype} on {input.device}")
    _check_activation(activation, negative_slope)
    if activation == "leaky_relu" and not negative_slope >= 0:
        raise ValueError(f"{op}: negative_slope must be >= 0 for our kernels (the backward reads the slope from the "
                         f"output's sign), got {negative_slope}; backend='auto' or 'torch' runs it")
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"{op}: momentum must be in [0, 1], got {momentum}")
    if float(eps) < 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps}")


def _check_activation(activation, negative_slope) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"batch_norm_relu: activation must be 'relu', 'leaky_relu' or None, got {activation!r}")
    if activation == "leaky_relu" and (isinstance(negative_slope, bool)
                                       or not isinstance(negative_slope, (int, float))):
        raise TypeError(f"batch_norm_relu: negative_slope must be a float, got {negative_slope!r}")


def batch_norm_relu(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                    weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
                    momentum: float = 0.1, eps: float = 1e-5, *, residual: Tensor | None = None,
                    activation: str | None = "relu", negative_slope: float = 0.01, backend: str = "auto") -> Tensor:
    """act(F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps) + residual).

    activation: "relu" (default), "leaky_relu" (F.leaky_relu with `negative_slope`, torch's default 0.01) or
    None; negative_slope is read only for "leaky_relu". Our kernels run slopes >= 0 (slope 0 is ReLU exactly,
    -inf -> 0 included); a negative slope raises ValueError on an explicit backend of ours and runs torch under
    "auto". `backend` is "auto", "cuda", "triton", "reference" or "torch" (F.batch_norm, then the residual add
    and the activation). Running statistics are updated in place when training, exactly as torch does
    (unbiased variance), once per call. Ours compute statistics in fp32 (fp64 for float64 input).
    """
    def prepare(chosen: str):
        _validate(input, running_mean, running_var, weight, bias, training, momentum, eps, residual, activation,
                  negative_slope)
        return lambda: _batch_norm_relu_ours(input, running_mean, running_var, weight, bias, training, momentum,
                                             eps, residual, activation, negative_slope, chosen)

    def run_torch():
        _check_activation(activation, negative_slope)
        out = F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        if residual is not None:
            out = out + residual
        if activation == "leaky_relu":
            return F.leaky_relu(out, negative_slope)
        return out if activation is None else torch.relu(out)

    # Training updates the running statistics: autotune must not time (and so repeat) such calls.
    # The slope is no part of the key: it changes no kernel's speed.
    key = None if training else (lambda: _key(input, running_mean, weight, bias, residual, activation))
    return dispatch("batch_norm_relu", backend, input, prepare, run_torch, key=key)


def _key(input: Tensor, running_mean, weight, bias, residual, activation):
    """The shape class of an eval-mode call, for autotune."""
    return (tuple(input.shape), input.stride(), input.dtype, running_mean is None, weight is None, bias is None,
            residual is None, activation)


class KernelOperands(NamedTuple):
    """A call's operands in the form the kernels take them (see kernel_operands)."""
    x: Tensor                   # the input as an (N, C, H, W) image in the layout below
    residual: Tensor | None     # in x's layout
    channels_last: bool
    stat_dtype: torch.dtype     # of mean, invstd and the affine parameters
    slope: float                # the activation's negative slope: 0 for ReLU (and unused without activation)

    def as_stat(self, t: Tensor | None) -> Tensor | None:
        """t in stat_dtype; a differentiable cast, for half parameters."""
        return None if t is None else t.to(self.stat_dtype)

    def restore_shape(self, out: Tensor, input: Tensor) -> Tensor:
        return out.reshape(input.shape) if input.dim() < 4 else out


def kernel_operands(input: Tensor, residual: Tensor | None, activation: str | None,
                    negative_slope: float) -> KernelOperands:
    """What batch_norm_relu and sync_batch_norm_relu hand the kernels: (N, C) and (N, C, L) inputs as
    (N, C, L, 1) images, kept in their own layout (channels_last or contiguous), the residual in that layout."""
    x = input.reshape(*input.shape, *(1,) * (4 - input.dim())) if input.dim() < 4 else input
    channels_last = layout_of(x) == torch.channels_last
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = as_layout(x, fmt)
    res = None if residual is None else as_layout(residual.reshape(x.shape), fmt)
    slope = float(negative_slope) if activation == "leaky_relu" else 0.0
    return KernelOperands(x, res, channels_last, _stat_dtype(x.dtype), slope)


def _batch_norm_relu_ours(input, running_mean, running_var, weight, bias, training, momentum, eps, residual,
                          activation, negative_slope, backend):
    operands = kernel_operands(input, residual, activation, negative_slope)
    x, channels_last, stat_dtype, as_stat = operands.x, operands.channels_last, operands.stat_dtype, operands.as_stat
    if training:
        stats_mean, stats_var = as_stat(running_mean), as_stat(running_var)
        mean, invstd = _batch_norm_stats(x.detach(), stats_mean, stats_var, float(momentum), float(eps),
                                         channels_last, backend)
        for running, updated in ((running_mean, stats_mean), (running_var, stats_var)):
            if running is not None and updated is not running:
                with torch.no_grad():
                    running.copy_(updated)
    else:
        mean = running_mean.detach().to(stat_dtype)
        invstd = torch.rsqrt(running_var.detach().to(stat_dtype) + eps)
    out = _batch_norm_relu(x, mean, invstd, as_stat(weight), as_stat(bias), operands.residual, bool(training),
                           activation is not None, channels_last, backend, operands.slope)
    return operands.restore_shape(out, input)

"""Fused BatchNorm (+ residual) (+ ReLU / LeakyReLU) over the C ABI: drop-in for torch.ops.dlk_C.batch_norm_*.

Same names, arguments and results as the ops in csrc/bindings/batch_norm.cpp, with the checks and
output allocation of csrc/bindings/batch_norm_binding.h; the kernels are csrc/cpu/batch_norm.cpp
and csrc/cuda/batch_norm.cu, reached through csrc/capi/batch_norm_{cpu,cuda}.cpp. Per-channel
tensors hold float32, or float64 when the input is float64.
"""
from __future__ import annotations

from ctypes import POINTER, c_double, c_int, c_int64, c_void_p

import torch

from dlkernels import _native
from dlkernels._native._family import data_ptr, dtype_code, launch_cuda_with_workspace

_p = c_void_p
_GEOMETRY = [c_int, c_int64, c_int64, c_int64, c_int]  # dtype, N, C, S, channels_last
_STATS = [_p] * 5 + [c_double, c_double, *_GEOMETRY]
_APPLY = [_p] * 7 + [c_int, c_double, *_GEOMETRY]  # ..., activation, negative_slope
_BACKWARD_REDUCE = [_p] * 7 + [c_int, c_double, *_GEOMETRY]  # ..., activation, negative_slope
_BACKWARD_APPLY = [_p] * 10 + [c_int, c_int, c_double, *_GEOMETRY]  # ..., training, activation, negative_slope
_WORKSPACE = [_p, c_int64, _p]  # workspace, workspace_bytes, stream
_native.declare({
    "dlk_batch_norm_stats_cpu": _STATS,
    "dlk_batch_norm_apply_cpu": _APPLY,
    "dlk_batch_norm_backward_reduce_cpu": _BACKWARD_REDUCE,
    "dlk_batch_norm_backward_apply_cpu": _BACKWARD_APPLY,
    "dlk_batch_norm_stats_workspace_bytes_cuda": [*_STATS, POINTER(c_int64)],
    "dlk_batch_norm_stats_cuda": [*_STATS, *_WORKSPACE],
    "dlk_batch_norm_apply_cuda": [*_APPLY, _p],
    "dlk_batch_norm_backward_reduce_workspace_bytes_cuda": [*_BACKWARD_REDUCE, POINTER(c_int64)],
    "dlk_batch_norm_backward_reduce_cuda": [*_BACKWARD_REDUCE, *_WORKSPACE],
    "dlk_batch_norm_backward_apply_cuda": [*_BACKWARD_APPLY, _p],
})


def _fail(message: str):
    raise RuntimeError(f"dlkernels batch_norm: {message}")


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _stat_dtype(input: torch.Tensor) -> torch.dtype:
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _geometry(input: torch.Tensor, channels_last: bool, what: str) -> tuple:
    """(dtype code, N, C, S, channels_last) after the input checks of the old binding."""
    if input.dim() != 4:
        _fail(f"input must be 4-D, got {input.dim()}-D")
    if not input.is_contiguous(memory_format=_memory_format(channels_last)):
        _fail(f"input must be contiguous in {'channels_last' if channels_last else 'NCHW'} layout")
    batch, channels, height, width = input.shape
    return dtype_code(input, what), batch, channels, height * width, int(channels_last)


def _check_like_input(t: torch.Tensor, input: torch.Tensor, name: str, channels_last: bool) -> None:
    if not (t.shape == input.shape and t.dtype == input.dtype and t.device == input.device
            and t.is_contiguous(memory_format=_memory_format(channels_last))):
        _fail(f"{name} must have the input's shape, dtype, layout and device")


def _check_per_channel(t: torch.Tensor, input: torch.Tensor, name: str) -> None:
    if not (t.dim() == 1 and t.shape[0] == input.shape[1] and t.is_contiguous() and t.dtype == _stat_dtype(input)
            and t.device == input.device):
        _fail(f"{name} must be a contiguous 1-D {_stat_dtype(input)} tensor of length C = {input.shape[1]} "
              "on the input's device")


def _optional_per_channel(t: torch.Tensor | None, input: torch.Tensor, name: str) -> int | None:
    if t is None:
        return None
    _check_per_channel(t, input, name)
    return t.data_ptr()


def _activation_output(output: torch.Tensor | None, input: torch.Tensor, activation: bool,
                       channels_last: bool) -> int | None:
    if not activation:
        return None
    if output is None:
        _fail("output is needed with the activation (its sign picks the gradient's scale)")
    _check_like_input(output, input, "output", channels_last)
    return output.data_ptr()


def _empty_like_input(input: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return torch.empty(input.shape, dtype=input.dtype, device=input.device,
                       memory_format=_memory_format(channels_last))


def _empty_per_channel(input: torch.Tensor) -> torch.Tensor:
    return torch.empty((input.shape[1],), dtype=_stat_dtype(input), device=input.device)


def _run(entry: str, args: tuple, like: torch.Tensor, with_workspace: bool = False) -> None:
    what = f"batch_norm_{entry}"
    if like.device.type == "cpu":
        lib = _native.cpu_lib()
        _native.check(getattr(lib, f"dlk_{what}_cpu")(*args), lib, what)
    elif like.device.type == "cuda":
        lib = _native.cuda_lib()
        if with_workspace:
            launch_cuda_with_workspace(getattr(lib, f"dlk_{what}_workspace_bytes_cuda"),
                                       getattr(lib, f"dlk_{what}_cuda"), args, like, what)
        else:
            _native.launch_cuda(getattr(lib, f"dlk_{what}_cuda"), args, like.device.index, what)
    else:
        _fail(f"no native kernel for {like.device.type} tensors")


def batch_norm_stats(input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                     momentum: float, eps: float, channels_last: bool):
    geometry = _geometry(input, channels_last, "batch_norm_stats")
    mean, invstd = _empty_per_channel(input), _empty_per_channel(input)
    running_mean_ptr = _optional_per_channel(running_mean, input, "running_mean")
    running_var_ptr = _optional_per_channel(running_var, input, "running_var")
    _run("stats", (input.data_ptr(), mean.data_ptr(), invstd.data_ptr(), running_mean_ptr, running_var_ptr,
                   momentum, eps, *geometry), input, with_workspace=True)
    return mean, invstd


def batch_norm_apply(input: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, weight: torch.Tensor | None,
                     bias: torch.Tensor | None, residual: torch.Tensor | None, activation: bool, channels_last: bool,
                     negative_slope: float = 0.0):
    geometry = _geometry(input, channels_last, "batch_norm_apply")
    _check_per_channel(mean, input, "mean")
    _check_per_channel(invstd, input, "invstd")
    weight_ptr = _optional_per_channel(weight, input, "weight")
    bias_ptr = _optional_per_channel(bias, input, "bias")
    if residual is not None:
        _check_like_input(residual, input, "residual", channels_last)
    output = _empty_like_input(input, channels_last)
    _run("apply", (input.data_ptr(), mean.data_ptr(), invstd.data_ptr(), weight_ptr, bias_ptr, data_ptr(residual),
                   output.data_ptr(), int(activation), float(negative_slope), *geometry), input)
    return output


def batch_norm_backward_reduce(grad_output: torch.Tensor, output: torch.Tensor | None, input: torch.Tensor,
                               mean: torch.Tensor, invstd: torch.Tensor, activation: bool, channels_last: bool,
                               negative_slope: float = 0.0):
    geometry = _geometry(input, channels_last, "batch_norm_backward_reduce")
    _check_like_input(grad_output, input, "grad_output", channels_last)
    _check_per_channel(mean, input, "mean")
    _check_per_channel(invstd, input, "invstd")
    output_ptr = _activation_output(output, input, activation, channels_last)
    sum_dy, sum_dy_xhat = _empty_per_channel(input), _empty_per_channel(input)
    _run("backward_reduce", (grad_output.data_ptr(), output_ptr, input.data_ptr(), mean.data_ptr(), invstd.data_ptr(),
                             sum_dy.data_ptr(), sum_dy_xhat.data_ptr(), int(activation), float(negative_slope),
                             *geometry),
         input, with_workspace=True)
    return sum_dy, sum_dy_xhat


def batch_norm_backward_apply(grad_output: torch.Tensor, output: torch.Tensor | None, input: torch.Tensor,
                              mean: torch.Tensor, invstd: torch.Tensor, weight: torch.Tensor | None,
                              sum_dy: torch.Tensor, sum_dy_xhat: torch.Tensor, training: bool, activation: bool,
                              want_grad_residual: bool, channels_last: bool, negative_slope: float = 0.0):
    geometry = _geometry(input, channels_last, "batch_norm_backward_apply")
    _check_like_input(grad_output, input, "grad_output", channels_last)
    _check_per_channel(mean, input, "mean")
    _check_per_channel(invstd, input, "invstd")
    _check_per_channel(sum_dy, input, "sum_dy")
    _check_per_channel(sum_dy_xhat, input, "sum_dy_xhat")
    output_ptr = _activation_output(output, input, activation, channels_last)
    weight_ptr = _optional_per_channel(weight, input, "weight")
    grad_input = _empty_like_input(input, channels_last)
    grad_residual = (_empty_like_input(input, channels_last) if want_grad_residual
                     else torch.empty((0,), dtype=input.dtype, device=input.device))
    _run("backward_apply", (grad_output.data_ptr(), output_ptr, input.data_ptr(), mean.data_ptr(), invstd.data_ptr(),
                            weight_ptr, sum_dy.data_ptr(), sum_dy_xhat.data_ptr(), grad_input.data_ptr(),
                            grad_residual.data_ptr() if want_grad_residual else None, int(training), int(activation),
                            float(negative_slope), *geometry), input)
    return grad_input, grad_residual

"""conv2d family over the C ABI (csrc/capi/conv2d_api.h): the five `torch.ops.dlk_C` convolution ops
with the same names, arguments and results, on CPU tensors (libdlk_cpu.so) and CUDA tensors
(libdlk_cuda.so). Allocation and checks follow csrc/bindings/conv2d_binding.h: they keep a direct call
from reaching a kernel with tensors it would misread; user-facing validation is dlkernels/ops/conv2d.py's.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from dlkernels import _native
from dlkernels._native._family import data_ptr, dtype_code, launch_cuda_with_workspace

_p, _i64, _int, _f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
# DLK_CONV2D_GEOMETRY_PARAMS: batch, C, H, W, K, P, Q, then kernel, stride, pad, dilation (h, w each),
# groups, channels_last, allow_tf32.
_GEOMETRY = [_i64] * 7 + [_int] * 11
_FORWARD = [_p] * 5 + _GEOMETRY + [_int, _f64, _int]  # ..., activation, negative_slope, dtype
_BACKWARD = [_p] * 3 + _GEOMETRY + [_int]  # ..., dtype
_TRANSFORM = [_p, _p, _i64, _i64, _int, _int, _int]  # weight, transformed, K, C, tile, channels_last, dtype
# input, transformed_weight, bias, residual, output, N, C, H, W, K, P, Q, pad_h, pad_w, tile, channels_last,
# allow_tf32, activation, negative_slope, dtype
_WINOGRAD = [_p] * 5 + [_i64] * 7 + [_int] * 6 + [_f64, _int]
_WORKSPACE = [_p, _i64, _p]  # workspace, workspace_bytes, stream
_QUERY = [ctypes.POINTER(_i64)]

_native.declare({
    "dlk_conv2d_forward_cpu": _FORWARD,
    "dlk_conv2d_backward_input_cpu": _BACKWARD,
    "dlk_conv2d_backward_weight_cpu": _BACKWARD,
    "dlk_conv2d_winograd_transform_weight_cpu": _TRANSFORM,
    "dlk_conv2d_winograd_cpu": _WINOGRAD,
    "dlk_conv2d_forward_cuda": _FORWARD + [_p],
    "dlk_conv2d_backward_input_cuda": _BACKWARD + [_p],
    "dlk_conv2d_backward_weight_workspace_bytes_cuda": _BACKWARD + _QUERY,
    "dlk_conv2d_backward_weight_cuda": _BACKWARD + _WORKSPACE,
    "dlk_conv2d_winograd_transform_weight_cuda": _TRANSFORM + [_p],
    "dlk_conv2d_winograd_workspace_bytes_cuda": _WINOGRAD + _QUERY,
    "dlk_conv2d_winograd_cuda": _WINOGRAD + _WORKSPACE,
})


def _fail(message: str) -> None:
    raise RuntimeError(f"dlkernels conv2d: {message}")


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _check_tensor(t: Tensor, name: str, channels_last: bool, like: Tensor) -> None:
    if t.dim() != 4:
        _fail(f"{name} must be 4-D, got {t.dim()}-D")
    if not t.is_contiguous(memory_format=_memory_format(channels_last)):
        _fail(f"{name} must be contiguous in {'channels_last' if channels_last else 'NCHW'} layout")
    if t.dtype != like.dtype or t.device != like.device:
        _fail(f"{name} must have the dtype and device of the input")


def _geometry(input_shape, weight_shape, output_size, stride, padding, dilation, groups: int, channels_last: bool,
              allow_tf32: bool) -> tuple:
    """The DLK_CONV2D_GEOMETRY_PARAMS tuple from (N, C, H, W), (K, C/groups, R, S) and (P, Q)."""
    if len(stride) != 2 or len(padding) != 2 or len(dilation) != 2 or len(output_size) != 2:
        _fail("stride, padding, dilation and sizes must have two entries each")
    if not (groups >= 1 and input_shape[1] % groups == 0 and weight_shape[0] % groups == 0
            and weight_shape[1] * groups == input_shape[1]):
        _fail(f"channels do not match groups (input {list(input_shape)}, weight {list(weight_shape)}, "
              f"groups {groups})")
    if min(stride) < 1 or min(dilation) < 1:
        _fail("stride and dilation must be positive")
    if output_size[0] < 1 or output_size[1] < 1:
        _fail("output size must be positive")
    return (*input_shape, weight_shape[0], output_size[0], output_size[1], weight_shape[2], weight_shape[3],
            stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups, channels_last,
            allow_tf32)


def _check_epilogue(bias: Tensor | None, residual: Tensor | None, input: Tensor, out_channels: int,
                    output_shape: list[int], channels_last: bool) -> None:
    if bias is not None and not (bias.dim() == 1 and bias.shape[0] == out_channels and bias.is_contiguous()
                                 and bias.dtype == input.dtype and bias.device == input.device):
        _fail(f"bias must be a contiguous ({out_channels},) tensor like the input")
    if residual is not None:
        _check_tensor(residual, "residual", channels_last, input)
        if list(residual.shape) != output_shape:
            _fail(f"residual must have the output's shape {output_shape}, got {list(residual.shape)}")


def _run(entry: str, args: tuple, like: Tensor, workspace: bool = False) -> None:
    """dlk_conv2d_<entry>_cpu or _cuda, by the device of `like`."""
    what = entry if entry.startswith("winograd_transform") else f"conv2d_{entry}"
    if like.is_cuda:
        lib = _native.cuda_lib()
        launch = getattr(lib, f"dlk_conv2d_{entry}_cuda")
        if workspace:
            query = getattr(lib, f"dlk_conv2d_{entry}_workspace_bytes_cuda")
            launch_cuda_with_workspace(query, launch, args, like, what)
        else:
            _native.launch_cuda(launch, args, like.device.index, what)
    elif like.device.type == "cpu":
        lib = _native.cpu_lib()
        _native.check(getattr(lib, f"dlk_conv2d_{entry}_cpu")(*args), lib, what)
    else:
        _fail(f"{what} runs on CPU or CUDA tensors, got a {like.device.type} tensor")


def conv2d_forward(input: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, stride: list[int],
                   padding: list[int], dilation: list[int], groups: int, output_size: list[int], activation: bool,
                   channels_last: bool, allow_tf32: bool, negative_slope: float = 0.0) -> Tensor:
    """act(conv2d(input, weight) + bias + residual); act = LeakyReLU(negative_slope) if `activation` (slope 0:
    ReLU), else identity."""
    _check_tensor(input, "input", channels_last, input)
    _check_tensor(weight, "weight", channels_last, input)
    dtype = dtype_code(input, "conv2d_forward")
    geometry = _geometry(input.shape, weight.shape, output_size, stride, padding, dilation, groups, channels_last,
                         allow_tf32)
    shape = [input.shape[0], weight.shape[0], output_size[0], output_size[1]]
    _check_epilogue(bias, residual, input, weight.shape[0], shape, channels_last)
    output = torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=_memory_format(channels_last))
    _run("forward", (input.data_ptr(), weight.data_ptr(), data_ptr(bias), data_ptr(residual), output.data_ptr(),
                     *geometry, int(activation), float(negative_slope), dtype), input)
    return output


def conv2d_backward_input(grad_output: Tensor, weight: Tensor, input_size: list[int], stride: list[int],
                          padding: list[int], dilation: list[int], groups: int, channels_last: bool,
                          allow_tf32: bool) -> Tensor:
    _check_tensor(grad_output, "grad_output", channels_last, grad_output)
    _check_tensor(weight, "weight", channels_last, grad_output)
    dtype = dtype_code(grad_output, "conv2d_backward_input")
    if len(input_size) != 2:
        _fail("input_size must have two entries")
    if grad_output.shape[1] != weight.shape[0]:
        _fail(f"grad_output has {grad_output.shape[1]} channels but the weight has {weight.shape[0]} filters")
    input_shape = [grad_output.shape[0], weight.shape[1] * groups, input_size[0], input_size[1]]
    geometry = _geometry(input_shape, weight.shape, grad_output.shape[2:], stride, padding, dilation, groups,
                         channels_last, allow_tf32)
    grad_input = torch.empty(input_shape, dtype=grad_output.dtype, device=grad_output.device,
                             memory_format=_memory_format(channels_last))
    _run("backward_input", (grad_output.data_ptr(), weight.data_ptr(), grad_input.data_ptr(), *geometry, dtype),
         grad_output)
    return grad_input


def conv2d_backward_weight(grad_output: Tensor, input: Tensor, kernel_size: list[int], stride: list[int],
                           padding: list[int], dilation: list[int], groups: int, channels_last: bool,
                           allow_tf32: bool) -> Tensor:
    _check_tensor(grad_output, "grad_output", channels_last, input)
    _check_tensor(input, "input", channels_last, input)
    dtype = dtype_code(input, "conv2d_backward_weight")
    if len(kernel_size) != 2:
        _fail("kernel_size must have two entries")
    if groups < 1 or input.shape[1] % groups != 0:
        _fail("groups must divide the input channels")
    if grad_output.shape[0] != input.shape[0]:
        _fail("grad_output and input batch sizes differ")
    weight_shape = [grad_output.shape[1], input.shape[1] // groups, kernel_size[0], kernel_size[1]]
    geometry = _geometry(input.shape, weight_shape, grad_output.shape[2:], stride, padding, dilation, groups,
                         channels_last, allow_tf32)
    grad_weight = torch.empty(weight_shape, dtype=input.dtype, device=input.device,
                              memory_format=_memory_format(channels_last))
    _run("backward_weight", (grad_output.data_ptr(), input.data_ptr(), grad_weight.data_ptr(), *geometry, dtype),
         input, workspace=True)
    return grad_weight


def _winograd_alpha(tile: int) -> int:
    if tile not in (2, 4):
        _fail(f"Winograd tile must be 2 or 4, got {tile}")
    return tile + 2


def winograd_transform_weight(weight: Tensor, tile: int, channels_last: bool) -> Tensor:
    alpha = _winograd_alpha(tile)
    _check_tensor(weight, "weight", channels_last, weight)
    dtype = dtype_code(weight, "winograd_transform_weight")
    if weight.shape[2] != 3 or weight.shape[3] != 3:
        _fail(f"Winograd needs a 3x3 weight, got {list(weight.shape)}")
    out_channels, in_channels = weight.shape[0], weight.shape[1]
    transformed = torch.empty((alpha * alpha, out_channels, in_channels), dtype=weight.dtype, device=weight.device)
    _run("winograd_transform_weight", (weight.data_ptr(), transformed.data_ptr(), out_channels, in_channels, tile,
                                       channels_last, dtype), weight)
    return transformed


def conv2d_winograd(input: Tensor, transformed_weight: Tensor, bias: Tensor | None, residual: Tensor | None,
                    padding: list[int], output_size: list[int], tile: int, activation: bool, channels_last: bool,
                    allow_tf32: bool, negative_slope: float = 0.0) -> Tensor:
    alpha = _winograd_alpha(tile)
    _check_tensor(input, "input", channels_last, input)
    dtype = dtype_code(input, "conv2d_winograd")
    u = transformed_weight
    if not (u.dim() == 3 and u.shape[0] == alpha * alpha and u.shape[2] == input.shape[1] and u.is_contiguous()
            and u.dtype == input.dtype and u.device == input.device):
        _fail(f"transformed_weight must be a contiguous ({alpha * alpha}, K, {input.shape[1]}) tensor like the input "
              f"(from winograd_transform_weight with tile {tile}), got {list(u.shape)}")
    out_channels = u.shape[1]
    _geometry(input.shape, (out_channels, input.shape[1], 3, 3), output_size, (1, 1), padding, (1, 1), 1,
              channels_last, allow_tf32)
    shape = [input.shape[0], out_channels, output_size[0], output_size[1]]
    _check_epilogue(bias, residual, input, out_channels, shape, channels_last)
    output = torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=_memory_format(channels_last))
    _run("winograd", (input.data_ptr(), u.data_ptr(), data_ptr(bias), data_ptr(residual), output.data_ptr(),
                      *input.shape, out_channels, output_size[0], output_size[1], padding[0], padding[1], tile,
                      channels_last, allow_tf32, int(activation), float(negative_slope), dtype), input,
         workspace=True)
    return output

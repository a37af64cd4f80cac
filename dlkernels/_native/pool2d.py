"""2-D pooling over the C ABI: drop-in for torch.ops.dlk_C.pool2d_forward / pool2d_backward.

Same names, arguments and results as the ops in csrc/bindings/pool2d.cpp, with the checks and
output allocation of csrc/bindings/pool2d_binding.h; the kernels are csrc/cpu/pool2d.cpp and
csrc/cuda/pool2d.cu, reached through csrc/capi/pool2d_{cpu,cuda}.cpp.
"""
from __future__ import annotations

from ctypes import c_int, c_int64, c_void_p

import torch

from dlkernels import _native
from dlkernels._native._family import dtype_code

MAX_MODE = 0
_GEOMETRY = [c_int, c_int64, c_int64, c_int64, c_int64, c_int64, c_int64, c_int, c_int64, c_int64, c_int64,
             c_int64, c_int64, c_int64, c_int64, c_int64, c_int, c_int64, c_int]
_FORWARD = [c_void_p, c_void_p, c_void_p, *_GEOMETRY]
_BACKWARD = [c_void_p, c_void_p, c_void_p, *_GEOMETRY]
_native.declare({
    "dlk_pool2d_forward_cpu": _FORWARD,
    "dlk_pool2d_backward_cpu": _BACKWARD,
    "dlk_pool2d_forward_cuda": [*_FORWARD, c_void_p],
    "dlk_pool2d_backward_cuda": [*_BACKWARD, c_void_p],
})


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _check_layout(t: torch.Tensor, name: str, channels_last: bool) -> torch.memory_format:
    if t.dim() != 4:
        raise RuntimeError(f"dlkernels pool2d: {name} must be 4-D, got {t.dim()}-D")
    memory_format = _memory_format(channels_last)
    if not t.is_contiguous(memory_format=memory_format):
        raise RuntimeError(f"dlkernels pool2d: {name} must be contiguous in "
                           f"{'channels_last' if channels_last else 'NCHW'} layout")
    return memory_format


def _geometry(mode, kernel, stride, padding, dilation, count_include_pad, divisor_override) -> tuple:
    if not 0 <= mode <= 2:
        raise RuntimeError(f"dlkernels pool2d: mode must be 0, 1 or 2, got {mode}")
    if len(kernel) != 2 or len(stride) != 2 or len(padding) != 2 or len(dilation) != 2:
        raise RuntimeError("dlkernels pool2d: kernel, stride, padding and dilation must have two entries each")
    return (mode, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
            int(count_include_pad), divisor_override)


def _launch(entry: str, device: torch.device, args: tuple) -> None:
    what = f"pool2d_{entry}"
    if device.type == "cpu":
        lib = _native.cpu_lib()
        _native.check(getattr(lib, f"dlk_{what}_cpu")(*args), lib, what)
    elif device.type == "cuda":
        _native.launch_cuda(getattr(_native.cuda_lib(), f"dlk_{what}_cuda"), args, device.index, what)
    else:
        raise RuntimeError(f"dlkernels {what}: no native kernel for {device.type} tensors")


def pool2d_forward(input: torch.Tensor, mode: int, kernel, stride, padding, dilation, output_size,
                   count_include_pad: bool, divisor_override: int, channels_last: bool, need_indices: bool = True):
    """Returns (output, indices). Max pooling with need_indices=False (no gradient will be asked for)
    returns empty indices, and the kernels skip writing the int64 indices: 8 bytes per output."""
    memory_format = _check_layout(input, "input", channels_last)
    if len(output_size) != 2:
        raise RuntimeError("dlkernels pool2d: output_size must have two entries")
    geometry = _geometry(mode, kernel, stride, padding, dilation, count_include_pad, divisor_override)
    dtype = dtype_code(input, "pool2d_forward")
    batch, channels, in_h, in_w = input.shape
    out_h, out_w = output_size
    output = torch.empty((batch, channels, out_h, out_w), dtype=input.dtype, device=input.device,
                         memory_format=memory_format)
    writes_indices = mode == MAX_MODE and need_indices
    if writes_indices:
        indices = torch.empty((batch, channels, out_h, out_w), dtype=torch.int64, device=input.device,
                              memory_format=memory_format)
    else:
        indices = torch.empty((0,), dtype=torch.int64, device=input.device)
    _launch("forward", input.device,
            (input.data_ptr(), output.data_ptr(), indices.data_ptr() if writes_indices else None,
             dtype, batch, channels, in_h, in_w, out_h, out_w, *geometry, int(channels_last)))
    return output, indices


def pool2d_backward(grad_output: torch.Tensor, indices: torch.Tensor, mode: int, input_size, kernel, stride,
                    padding, dilation, count_include_pad: bool, divisor_override: int, channels_last: bool):
    memory_format = _check_layout(grad_output, "grad_output", channels_last)
    if len(input_size) != 2:
        raise RuntimeError("dlkernels pool2d: input_size must have two entries")
    geometry = _geometry(mode, kernel, stride, padding, dilation, count_include_pad, divisor_override)
    dtype = dtype_code(grad_output, "pool2d_backward")
    batch, channels, out_h, out_w = grad_output.shape
    in_h, in_w = input_size
    indices_ptr = None
    if mode == MAX_MODE:
        # Dense in one memory format is all the kernels need; strides of size-1 dims may differ.
        if (indices.dtype != torch.int64 or indices.shape != grad_output.shape
                or indices.device != grad_output.device):
            raise RuntimeError("dlkernels pool2d: indices must be int64 with grad_output's shape and device")
        if not indices.is_contiguous(memory_format=memory_format):
            raise RuntimeError("dlkernels pool2d: indices must be contiguous like grad_output")
        indices_ptr = indices.data_ptr()
    grad_input = torch.empty((batch, channels, in_h, in_w), dtype=grad_output.dtype, device=grad_output.device,
                             memory_format=memory_format)
    _launch("backward", grad_output.device,
            (grad_output.data_ptr(), indices_ptr, grad_input.data_ptr(), dtype,
             batch, channels, in_h, in_w, out_h, out_w, *geometry, int(channels_last)))
    return grad_input

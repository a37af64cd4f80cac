"""Helpers the conv2d, attention and rnn family modules share on top of dlkernels._native.

  DTYPE_CODES                    torch dtype -> the int value of dlk::DType (csrc/include/dlk/common.h)
  dtype_code(t, what)            that code for a tensor, RuntimeError for other dtypes (as the old binding)
  data_ptr(t)                    a tensor's address, or None for an absent optional tensor
  launch_cuda_with_workspace     workspace query, torch allocation and launch with the device current
"""
from __future__ import annotations

import ctypes

import torch

from dlkernels._enums import DType

from dlkernels import _native

DTYPE_CODES = {torch.float16: int(DType.FLOAT16), torch.bfloat16: int(DType.BFLOAT16), torch.float32: int(DType.FLOAT32),
               torch.float64: int(DType.FLOAT64)}


def dtype_code(t: torch.Tensor, what: str) -> int:
    code = DTYPE_CODES.get(t.dtype)
    if code is None:
        raise RuntimeError(f"dlkernels {what}: unsupported dtype {t.dtype} (expected float16, bfloat16, float32 or "
                           "float64)")
    return code


def data_ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def launch_cuda_with_workspace(query, launch, args: tuple, like: torch.Tensor, what: str) -> None:
    """launch(*args, workspace, workspace_bytes, stream) after query(*args, &workspace_bytes), both with
    `like`'s device current (the size may depend on the device). The workspace comes from torch's caching
    allocator: freeing it on return is safe, the block is reused only by work queued later on the same stream."""
    index = like.device.index
    previous = torch._C._cuda_getDevice()
    if previous != index:
        torch._C._cuda_setDevice(index)
    try:
        workspace_bytes = ctypes.c_int64()
        status = query(*args, ctypes.byref(workspace_bytes))
        if status == 0:
            size = workspace_bytes.value
            workspace = torch.empty(size, dtype=torch.uint8, device=like.device) if size > 0 else None
            status = launch(*args, None if workspace is None else workspace.data_ptr(), size,
                            torch._C._cuda_getCurrentRawStream(index))
    finally:
        if previous != index:
            torch._C._cuda_setDevice(previous)
    _native.check(status, _native.cuda_lib(), what)

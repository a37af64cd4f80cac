"""rnn family over the C ABI (csrc/capi/rnn_api.h): `rnn_layer_forward` and `rnn_layer_backward` with
the names, arguments and results of the `torch.ops.dlk_C` ops, on CPU tensors (libdlk_cpu.so) and CUDA
tensors (libdlk_cuda.so). Allocation and checks follow csrc/bindings/rnn_binding.h; outputs that do
not apply to the cell are (0,) tensors, as there.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from dlkernels import _native
from dlkernels._native._family import data_ptr, dtype_code, launch_cuda_with_workspace

CELLS = {"lstm": 0, "gru": 1}  # dlk::RnnCell
GATES = {"lstm": 4, "gru": 3}

_p, _i64, _int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_COMMON = [_int, _i64, _i64, _i64, _int, _p, _p, _p, _p]  # cell, T, B, H, reverse, lengths, w_hh, h0, c0
_FORWARD = _COMMON + [_p] * 7 + [_int, _int]  # b_hh, x_proj, h_all, c_all, h_n, c_n, saved; training, dtype
_BACKWARD = _COMMON + [_p] * 10 + [_int]  # h_all, c_all, saved, 3 grads in, 4 grads out; dtype
_WORKSPACE = [_p, _i64, _p]
_QUERY = [ctypes.POINTER(_i64)]

_native.declare({
    "dlk_rnn_layer_forward_cpu": _FORWARD,
    "dlk_rnn_layer_backward_cpu": _BACKWARD,
    "dlk_rnn_layer_forward_workspace_bytes_cuda": _FORWARD + _QUERY,
    "dlk_rnn_layer_forward_cuda": _FORWARD + _WORKSPACE,
    "dlk_rnn_layer_backward_workspace_bytes_cuda": _BACKWARD + _QUERY,
    "dlk_rnn_layer_backward_cuda": _BACKWARD + _WORKSPACE,
})


def _fail(message: str) -> None:
    raise RuntimeError(f"dlkernels rnn: {message}")


def _cell_code(cell: str) -> int:
    code = CELLS.get(cell)
    if code is None:
        _fail(f'cell must be "lstm" or "gru", got "{cell}"')
    return code


def _acc_dtype(like: Tensor) -> torch.dtype:
    """c_all, saved and grad_x_proj hold the accumulation dtype: float, or double for double input."""
    return torch.float64 if like.dtype == torch.float64 else torch.float32


def _check(t: Tensor, name: str, shape: tuple, dtype: torch.dtype, like: Tensor) -> None:
    if t.shape == shape and t.dtype == dtype and t.device == like.device and t.is_contiguous():
        return  # the common case, tested at once; what follows names the fault
    if tuple(t.shape) != shape:
        _fail(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if t.dtype != dtype:
        _fail(f"{name} must be {dtype}, got {t.dtype}")
    if t.device != like.device:
        _fail(f"{name} is on {t.device}, expected {like.device}")
    if not t.is_contiguous():
        _fail(f"{name} must be contiguous")


def _optional(t: Tensor | None, name: str, shape: tuple, dtype: torch.dtype, like: Tensor) -> int | None:
    if t is None:
        return None
    _check(t, name, shape, dtype, like)
    return t.data_ptr()


def _common(cell: str, steps: int, batch: int, hidden: int, like: Tensor, w_hh: Tensor, h0: Tensor,
            c0: Tensor | None, lengths: Tensor | None, reverse: bool) -> tuple:
    """The DLK_RNN_PARAMS tuple, checked as fill_rnn_params did."""
    if steps <= 0 or batch <= 0 or hidden <= 0:
        _fail(f"empty sequence, batch or hidden size (T={steps}, B={batch}, H={hidden})")
    _check(w_hh, "w_hh", (GATES[cell] * hidden, hidden), like.dtype, like)
    _check(h0, "h0", (batch, hidden), like.dtype, like)
    if cell == "lstm":
        if c0 is None:
            _fail("c0 is required for an LSTM")
        _check(c0, "c0", (batch, hidden), like.dtype, like)
    return (CELLS[cell], steps, batch, hidden, reverse, _optional(lengths, "lengths", (batch,), torch.int32, like),
            w_hh.data_ptr(), h0.data_ptr(), data_ptr(c0) if cell == "lstm" else None)


def _run(entry: str, args: tuple, like: Tensor) -> None:
    what = f"rnn_layer_{entry}"
    if like.is_cuda:
        lib = _native.cuda_lib()
        launch_cuda_with_workspace(getattr(lib, f"dlk_rnn_layer_{entry}_workspace_bytes_cuda"),
                                   getattr(lib, f"dlk_rnn_layer_{entry}_cuda"), args, like, what)
    elif like.device.type == "cpu":
        lib = _native.cpu_lib()
        _native.check(getattr(lib, f"dlk_rnn_layer_{entry}_cpu")(*args), lib, what)
    else:
        _fail(f"{what} runs on CPU or CUDA tensors, got a {like.device.type} tensor")


def rnn_layer_forward(cell: str, x_proj: Tensor, w_hh: Tensor, b_hh: Tensor | None, h0: Tensor, c0: Tensor | None,
                      lengths: Tensor | None, reverse: bool,
                      training: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    _cell_code(cell)
    gates = GATES[cell]
    dtype = dtype_code(x_proj, "rnn_layer_forward")
    if x_proj.dim() != 3 or x_proj.shape[2] % gates != 0:
        _fail(f"x_proj must be (T, B, {gates}*H), got {list(x_proj.shape)}")
    if not x_proj.is_contiguous():
        _fail("x_proj must be contiguous")
    steps, batch, hidden = x_proj.shape[0], x_proj.shape[1], x_proj.shape[2] // gates
    common = _common(cell, steps, batch, hidden, x_proj, w_hh, h0, c0, lengths, reverse)
    lstm = cell == "lstm"
    if lstm and b_hh is not None:
        _fail("an LSTM takes no b_hh (x_proj includes b_ih + b_hh)")
    b_hh_ptr = None if lstm else _optional(b_hh, "b_hh", (gates * hidden,), x_proj.dtype, x_proj)

    acc = _acc_dtype(x_proj)  # new_empty: the cheapest allocation from Python, this runs per call
    h_all = x_proj.new_empty((steps, batch, hidden))
    c_all = x_proj.new_empty((steps, batch, hidden), dtype=acc) if lstm else x_proj.new_empty(0)
    h_n = x_proj.new_empty((batch, hidden))
    c_n = x_proj.new_empty((batch, hidden)) if lstm else x_proj.new_empty(0)
    saved = x_proj.new_empty((steps, batch, 4 * hidden) if training else 0, dtype=acc)
    _run("forward", (*common, b_hh_ptr, x_proj.data_ptr(), h_all.data_ptr(), c_all.data_ptr() if lstm else None,
                     h_n.data_ptr(), c_n.data_ptr() if lstm else None, saved.data_ptr() if training else None,
                     training, dtype), x_proj)
    return h_all, c_all, h_n, c_n, saved


def rnn_layer_backward(cell: str, grad_h_all: Tensor | None, grad_h_n: Tensor | None, grad_c_n: Tensor | None,
                       w_hh: Tensor, h0: Tensor, c0: Tensor | None, h_all: Tensor, c_all: Tensor, saved: Tensor,
                       lengths: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _cell_code(cell)
    lstm = cell == "lstm"
    dtype = dtype_code(h_all, "rnn_layer_backward")
    if h_all.dim() != 3:
        _fail(f"h_all must be (T, B, H), got {list(h_all.shape)}")
    steps, batch, hidden = h_all.shape
    gate_width = GATES[cell] * hidden
    common = _common(cell, steps, batch, hidden, h_all, w_hh, h0, c0, lengths, reverse)
    _check(h_all, "h_all", (steps, batch, hidden), h_all.dtype, h_all)
    acc = _acc_dtype(h_all)
    if saved.numel() == 0:
        _fail("saved is empty: run the forward with training=True")
    _check(saved, "saved", (steps, batch, 4 * hidden), acc, h_all)
    if lstm:
        _check(c_all, "c_all", (steps, batch, hidden), acc, h_all)
    grads_in = (_optional(grad_h_all, "grad_h_all", (steps, batch, hidden), h_all.dtype, h_all),
                _optional(grad_h_n, "grad_h_n", (batch, hidden), h_all.dtype, h_all),
                _optional(grad_c_n, "grad_c_n", (batch, hidden), h_all.dtype, h_all) if lstm else None)

    grad_x_proj = h_all.new_empty((steps, batch, gate_width), dtype=acc)
    grad_gh = h_all.new_empty(0, dtype=acc) if lstm else torch.empty_like(grad_x_proj)
    grad_h0 = h_all.new_empty((batch, hidden))
    grad_c0 = h_all.new_empty((batch, hidden)) if lstm else h_all.new_empty(0)
    _run("backward", (*common, h_all.data_ptr(), c_all.data_ptr() if lstm else None, saved.data_ptr(), *grads_in,
                      grad_x_proj.data_ptr(), None if lstm else grad_gh.data_ptr(), grad_h0.data_ptr(),
                      grad_c0.data_ptr() if lstm else None, dtype), h_all)
    return grad_x_proj, grad_gh, grad_h0, grad_c0

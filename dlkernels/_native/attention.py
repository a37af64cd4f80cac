"""attention family over the C ABI (csrc/capi/attention_api.h): `attention_forward` and
`attention_backward` with the names, arguments and results of the `torch.ops.dlk_C` ops, on CPU tensors
(libdlk_cpu.so) and CUDA tensors (libdlk_cuda.so), plus `attention_wgmma_available()` (formerly
dlkernels._C's). Allocation and checks follow csrc/bindings/attention_binding.h; they never read tensor
data (cu_seqlens may live on the GPU; the CPU library checks their values itself).
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from dlkernels import _native
from dlkernels._native._family import data_ptr, dtype_code, launch_cuda_with_workspace

HEAD_DIMS = (32, 64, 96, 128, 256)  # kAttentionHeadDims in csrc/include/dlk/attention.h
_INT32_MAX = 2**31 - 1

_p, _i64, _int, _double = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
# DLK_ATTENTION_PARAMS: q, k, v, bias, cu_seqlens_q, cu_seqlens_k; batch, heads_q, heads_kv, head_dim, seqlen_q,
# seqlen_k; total_q, total_k; (batch, head, row) strides of q, k, v, bias; scale, causal, causal_bottom_right,
# dropout_p, seed (the address of an int64), allow_tf32.
_COMMON = [_p] * 6 + [_int] * 6 + [_i64] * 14 + [_double, _int, _int, _double, _p, _int]
_STRIDED = [_p, _i64, _i64, _i64]
_FORWARD = _COMMON + _STRIDED + [_p, _int]  # out + strides, lse, dtype
_BACKWARD = _COMMON + _STRIDED * 2 + [_p] + _STRIDED * 3 + [_int]  # out, grad_out, lse, grad_q/k/v, dtype

_native.declare({
    "dlk_attention_forward_cpu": _FORWARD,
    "dlk_attention_backward_cpu": _BACKWARD,
    "dlk_attention_forward_cuda": _FORWARD + [_p],
    "dlk_attention_forward_wgmma_available_cuda": [],
    "dlk_attention_backward_workspace_bytes_cuda": _BACKWARD + [ctypes.POINTER(_i64)],
    "dlk_attention_backward_cuda": _BACKWARD + [_p, _i64, _p],
})


def _fail(message: str) -> None:
    raise RuntimeError(f"dlkernels attention: {message}")


def _layout_strides(stride: tuple, varlen: bool) -> tuple[int, int, int]:
    """(batch, head, row) strides of a dense (B, H, N, D) or varlen (total, H, D) tensor's strides."""
    return (0, stride[1], stride[0]) if varlen else stride[:3]


def _strides(t: Tensor, varlen: bool) -> tuple[int, int, int]:
    return _layout_strides(t.stride(), varlen)


def _check_head_tensor(t: Tensor, name: str, varlen: bool, q: Tensor) -> None:
    if t.dim() != (3 if varlen else 4):
        layout = "3-D (total, heads, head_dim)" if varlen else "4-D (batch, heads, seq, head_dim)"
        _fail(f"{name} must be {layout}, got shape {list(t.shape)}")
    if t.dtype != q.dtype or t.device != q.device:
        _fail(f"{name} must have q's dtype and device")
    if t.shape[-1] != q.shape[-1] or t.stride(-1) != 1:
        _fail(f"{name} must have q's head dim and a unit stride on it, got shape {list(t.shape)} and strides "
              f"{list(t.stride())}")


def _check_like(t: Tensor, name: str, like: Tensor, like_name: str) -> None:
    if not (t.shape == like.shape and t.dtype == like.dtype and t.device == like.device and t.stride(-1) == 1):
        _fail(f"{name} must have the shape, dtype and device of {like_name} and a unit stride on the head dim")


def _stat_dtype(q: Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _contiguous(cu_seqlens: Tensor | None) -> Tensor | None:
    return None if cu_seqlens is None else cu_seqlens.contiguous()


def _common(q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
            causal_bottom_right, dropout_p, seed, allow_tf32) -> tuple[tuple, bool, list[int]]:
    """(the DLK_ATTENTION_PARAMS tuple, varlen, lse shape), as fill_attention_params checked and filled them."""
    if (cu_seqlens_q is None) != (cu_seqlens_k is None):
        _fail("give both cu_seqlens_q and cu_seqlens_k, or neither")
    varlen = cu_seqlens_q is not None
    q_shape, k_shape = q.shape, k.shape
    q_stride, k_stride, v_stride = q.stride(), k.stride(), v.stride()
    rank = 3 if varlen else 4
    # One combined test on the fast path (these checks run on every call); the detailed ones name the fault.
    if not (len(q_shape) == rank and len(k_shape) == rank and k_shape == v.shape and k_shape[-1] == q_shape[-1]
            and q_stride[-1] == 1 and k_stride[-1] == 1 and v_stride[-1] == 1 and k.dtype == q.dtype
            and v.dtype == q.dtype and k.device == q.device and v.device == q.device):
        _check_head_tensor(q, "q", varlen, q)
        _check_head_tensor(k, "k", varlen, q)
        _check_head_tensor(v, "v", varlen, q)
        _fail(f"k and v must have the same shape, got {list(k.shape)} and {list(v.shape)}")
    head_dim = q_shape[-1]
    if head_dim not in HEAD_DIMS:
        _fail(f"unsupported head dim {head_dim}")
    heads_q, heads_kv = q_shape[1], k_shape[1]  # the head axis is 1 in both layouts
    if heads_kv < 1 or heads_q % heads_kv != 0:
        _fail(f"the query heads ({heads_q}) must be a multiple of the key/value heads ({heads_kv})")
    if not 0.0 <= dropout_p < 1.0:
        _fail(f"dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p > 0 and not (isinstance(seed, Tensor) and seed.dtype == torch.int64 and seed.numel() >= 1
                              and seed.device == q.device):
        _fail("dropout needs its seed as an int64 tensor on q's device (the kernels read its first element)")
    if varlen:
        for cu in (cu_seqlens_q, cu_seqlens_k):
            if not (cu.dtype == torch.int32 and cu.dim() == 1 and cu.numel() >= 1 and cu.device == q.device):
                _fail("cu_seqlens must be contiguous 1-D int32 tensors on q's device")
        if cu_seqlens_q.numel() != cu_seqlens_k.numel():
            _fail("cu_seqlens_q and cu_seqlens_k must have the same length")
        if bias is not None:
            _fail("bias is not supported with cu_seqlens")
        if max_seqlen_q < 0 or max_seqlen_k < 0:
            _fail("max_seqlen must not be negative")
        batch, total_q = cu_seqlens_q.numel() - 1, q_shape[0]
        lse_shape = [heads_q, total_q]
    else:
        if k_shape[0] != q_shape[0]:
            _fail("q and k must have the same batch size")
        if max_seqlen_q != q_shape[2] or max_seqlen_k != k_shape[2]:
            _fail(f"dense inputs need max_seqlen_q = q.size(2) and max_seqlen_k = k.size(2), got {max_seqlen_q} and "
                  f"{max_seqlen_k}")
        batch, total_q = q_shape[0], q_shape[0] * q_shape[2]
        lse_shape = [batch, heads_q, max_seqlen_q]
    if max_seqlen_q > _INT32_MAX or max_seqlen_k > _INT32_MAX or q_shape[0] > _INT32_MAX:
        _fail("sequence lengths must fit in 32 bits")
    bias_strides = (0, 0, 0)
    if bias is not None:
        full = (batch, heads_q, max_seqlen_q, max_seqlen_k)
        if not (tuple(bias.shape) == full and bias.dtype == q.dtype and bias.device == q.device
                and (bias.stride(3) == 1 or max_seqlen_k <= 1)):
            _fail(f"bias must be a (B, Hq, Nq, Nk) = {list(full)} tensor of q's dtype and device with a unit stride "
                  f"on the key axis (broadcast by expand), got shape {list(bias.shape)} and strides "
                  f"{list(bias.stride())}")
        bias_strides = bias.stride()[:3]
    common = (q.data_ptr(), k.data_ptr(), v.data_ptr(), data_ptr(bias), data_ptr(cu_seqlens_q),
              data_ptr(cu_seqlens_k), batch, heads_q, heads_kv, head_dim, max_seqlen_q, max_seqlen_k, total_q,
              k_shape[0], *_layout_strides(q_stride, varlen), *_layout_strides(k_stride, varlen),
              *_layout_strides(v_stride, varlen), *bias_strides, scale, causal, causal_bottom_right, dropout_p,
              data_ptr(seed) if dropout_p > 0 else None, allow_tf32)
    return common, varlen, lse_shape


def _run(entry: str, args: tuple, q: Tensor) -> None:
    what = f"attention_{entry}"
    if q.is_cuda:
        lib = _native.cuda_lib()
        launch = getattr(lib, f"dlk_attention_{entry}_cuda")
        if entry == "backward":
            launch_cuda_with_workspace(lib.dlk_attention_backward_workspace_bytes_cuda, launch, args, q, what)
        else:
            _native.launch_cuda(launch, args, q.device.index, what)
    elif q.device.type == "cpu":
        lib = _native.cpu_lib()
        _native.check(getattr(lib, f"dlk_attention_{entry}_cpu")(*args), lib, what)
    else:
        _fail(f"{what} runs on CPU or CUDA tensors, got a {q.device.type} tensor")


def attention_forward(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, cu_seqlens_q: Tensor | None,
                      cu_seqlens_k: Tensor | None, max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: bool,
                      causal_bottom_right: bool, dropout_p: float, seed: Tensor | None,
                      allow_tf32: bool) -> tuple[Tensor, Tensor]:
    cu_seqlens_q, cu_seqlens_k = _contiguous(cu_seqlens_q), _contiguous(cu_seqlens_k)
    common, varlen, lse_shape = _common(q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                        scale, causal, causal_bottom_right, dropout_p, seed, allow_tf32)
    dtype = dtype_code(q, "attention_forward")
    out = torch.empty_like(q)  # keeps q's dense permuted layout (e.g. from a transpose)
    lse = torch.empty(lse_shape, dtype=_stat_dtype(q), device=q.device)
    _run("forward", (*common, out.data_ptr(), *_strides(out, varlen), lse.data_ptr(), dtype), q)
    return out, lse


def attention_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                       bias: Tensor | None, cu_seqlens_q: Tensor | None, cu_seqlens_k: Tensor | None,
                       max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: bool, causal_bottom_right: bool,
                       dropout_p: float, seed: Tensor | None, allow_tf32: bool) -> tuple[Tensor, Tensor, Tensor]:
    cu_seqlens_q, cu_seqlens_k = _contiguous(cu_seqlens_q), _contiguous(cu_seqlens_k)
    common, varlen, lse_shape = _common(q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                        scale, causal, causal_bottom_right, dropout_p, seed, allow_tf32)
    dtype = dtype_code(q, "attention_backward")
    _check_like(grad_out, "grad_out", q, "q")
    _check_like(out, "out", q, "q")
    stat_dtype = _stat_dtype(q)
    if not (list(lse.shape) == lse_shape and lse.is_contiguous() and lse.dtype == stat_dtype
            and lse.device == q.device):
        _fail(f"lse must be the forward's contiguous {stat_dtype} tensor of shape {lse_shape}, got {lse.dtype} of "
              f"shape {list(lse.shape)}")
    grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _run("backward", (*common, out.data_ptr(), *_strides(out, varlen), grad_out.data_ptr(),
                      *_strides(grad_out, varlen), lse.data_ptr(), grad_q.data_ptr(), *_strides(grad_q, varlen),
                      grad_k.data_ptr(), *_strides(grad_k, varlen), grad_v.data_ptr(), *_strides(grad_v, varlen),
                      dtype), q)
    return grad_q, grad_k, grad_v


def attention_wgmma_available() -> bool:
    """Whether the CUDA attention forward runs the Hopper (wgmma) kernel now (it reads DLK_ATTENTION_WGMMA and
    the current device); False without the CUDA library."""
    if not _native.has_cuda_lib():
        return False
    return bool(_native.cuda_lib().dlk_attention_forward_wgmma_available_cuda())

"""Flash attention (FlashAttention-2 algorithm): softmax(scale * q k^T + mask) v without the N x N matrix.

Two custom ops carry it: dlk::attention (out, lse) and dlk::attention_backward (dq, dk, dv), with
fake implementations for torch.compile and the autograd formula. Backends implement
attention_forward / attention_backward of csrc/bindings/attention.cpp under the same names
(triton_kernels/attention.py); the contract is csrc/include/dlk/attention.h.

Public functions:
- attention(q, k, v, *, causal, scale, dropout_p, attn_mask, cu_seqlens_q/k, max_seqlen_q/k,
  return_lse, backend): FlashAttention's conventions: causal masks align bottom-right when the query
  and key lengths differ; variable-length batches are packed (total, heads, head_dim) tensors.
- scaled_dot_product_attention: torch.nn.functional.scaled_dot_product_attention's signature and
  semantics (is_causal aligns top-left, as SDPA's does).

Precision: fp16 and bf16 run with fp32 accumulation; fp32 runs exactly, or on TF32 tensor cores
on GPU when torch.backends.cuda.matmul.allow_tf32 is set (the flag that governs torch's own
fp32 matmuls). float64 is accepted by the CPU reference only. Dropout draws its Philox seed with
torch.randint on q's device (torch's generator for that device), so torch.manual_seed makes it
reproducible and a captured CUDA graph draws a new seed at every replay; the kernels read the seed
from that tensor, never on the host, and the backward recomputes
the same mask. Rows that can see no key (fully masked) give 0, and zero gradients.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

import torch.nn.functional as F

from dlkernels._backends import runs_torch_now, capturing, dispatch, implementation
from dlkernels._library import define

OP = "attention"
HEAD_DIMS = (32, 64, 96, 128, 256)
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _impl(backend: str):
    return implementation("attention", backend)


def _lse_shape(q: Tensor, varlen: bool) -> tuple[int, ...]:
    return (q.shape[1], q.shape[0]) if varlen else tuple(q.shape[:3])


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------- dlk ops
def _attention_impl(q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                    causal_bottom_right, dropout_p, seed, allow_tf32, backend):
    return _impl(backend).attention_forward(q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                            scale, causal, causal_bottom_right, dropout_p, seed, allow_tf32)


def _attention_fake(q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                    causal_bottom_right, dropout_p, seed, allow_tf32, backend):
    lse = q.new_empty(_lse_shape(q, cu_seqlens_q is not None), dtype=_stat_dtype(q.dtype))
    return torch.empty_like(q), lse


def _attention_backward_impl(grad_out, q, k, v, out, lse, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                             max_seqlen_k, scale, causal, causal_bottom_right, dropout_p, seed, allow_tf32, backend):
    return _impl(backend).attention_backward(grad_out, q, k, v, out, lse, bias, cu_seqlens_q, cu_seqlens_k,
                                             max_seqlen_q, max_seqlen_k, scale, causal, causal_bottom_right,
                                             dropout_p, seed, allow_tf32)


def _attention_backward_fake(grad_out, q, k, v, out, lse, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                             max_seqlen_k, scale, causal, causal_bottom_right, dropout_p, seed, allow_tf32, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


_OPTIONS_SCHEMA = ("int max_seqlen_q, int max_seqlen_k, float scale, bool causal, bool causal_bottom_right, "
                   "float dropout_p, Tensor? seed, bool allow_tf32, str backend")

_attention_backward = define(
    "attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? bias, "
    f"Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, {_OPTIONS_SCHEMA}) -> (Tensor, Tensor, Tensor)",
    _attention_backward_impl, _attention_backward_fake)


_SEED_OPTION = 6  # index of the seed tensor in the options (max_seqlen_q ... backend)


def _setup_context(ctx, inputs, output):
    q, k, v, bias, cu_seqlens_q, cu_seqlens_k, *options = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, bias, cu_seqlens_q, cu_seqlens_k, options[_SEED_OPTION])
    options[_SEED_OPTION] = None  # saved above: tensors travel through save_for_backward
    ctx.options = options
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, bias, cu_seqlens_q, cu_seqlens_k, seed = ctx.saved_tensors
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    options = list(ctx.options)
    options[_SEED_OPTION] = seed
    grad_q, grad_k, grad_v = _attention_backward(grad_out, q, k, v, out, lse, bias, cu_seqlens_q, cu_seqlens_k,
                                                 *options)
    return grad_q, grad_k, grad_v, *([None] * 12)


_attention = define(
    "attention(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, "
    f"{_OPTIONS_SCHEMA}) -> (Tensor, Tensor)",
    _attention_impl, _attention_fake, setup_context=_setup_context, backward=_backward)


# ----------------------------------------------------------------------------- validation
def _check_qkv(op: str, q, k, v, varlen: bool) -> None:
    rank = 3 if varlen else 4
    layout = "(total, heads, head_dim)" if varlen else "(batch, heads, seq, head_dim)"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != rank:
            raise ValueError(f"{op}: {name} must be {rank}-D {layout}, got shape {tuple(t.shape)}")
        if t.dtype not in (*KERNEL_DTYPES, torch.float64):
            raise TypeError(f"{op}: {name} has unsupported dtype {t.dtype}; supported: float16, bfloat16, float32 "
                            "(float64 on CPU)")
        if t.numel() == 0:
            raise ValueError(f"{op}: {name} must not be empty, got shape {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise TypeError(f"{op}: {name} dtype {t.dtype} does not match q's {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{op}: {name} is on {t.device} but q is on {q.device}")
    head_dim = q.shape[-1]
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"{op}: head_dim {head_dim} is not supported; supported: {HEAD_DIMS}")
    if k.shape[-1] != head_dim or v.shape[-1] != head_dim:
        raise ValueError(f"{op}: q, k and v must share the head dim, got {q.shape[-1]}, {k.shape[-1]} and "
                         f"{v.shape[-1]}")
    if k.shape != v.shape:
        raise ValueError(f"{op}: k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    head_axis = -2 if varlen else -3
    heads_q, heads_kv = q.shape[head_axis], k.shape[head_axis]
    if heads_q % heads_kv:
        raise ValueError(f"{op}: the number of query heads ({heads_q}) must be a multiple of the number of key/value "
                         f"heads ({heads_kv}) for grouped-query attention")
    if not varlen and k.shape[0] != q.shape[0]:
        raise ValueError(f"{op}: q and k must have the same batch size, got {q.shape[0]} and {k.shape[0]}")


def _check_cu_seqlens(op: str, name: str, cu: Tensor, total: int, batch: int | None, device) -> int:
    """Validates one cu_seqlens tensor; returns the number of sequences."""
    if not isinstance(cu, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(cu).__name__}")
    if cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() < 2:
        raise ValueError(f"{op}: {name} must be a 1-D int32 tensor of batch + 1 offsets, got {cu.dtype} of shape "
                         f"{tuple(cu.shape)}")
    if cu.device != device:
        raise ValueError(f"{op}: {name} is on {cu.device} but q is on {device}")
    if batch is not None and cu.numel() != batch + 1:
        raise ValueError(f"{op}: cu_seqlens_q and cu_seqlens_k must have the same length, got {batch + 1} and "
                         f"{cu.numel()}")
    # A value check reads the data on the host: skipped while tracing and while a CUDA graph is captured (the
    # GPU kernels then fill a sequence longer than max_seqlen with NaN rather than read past it).
    if not torch.compiler.is_compiling() and not capturing():
        values = cu.tolist()
        if values[0] != 0 or values[-1] != total or any(b < a for a, b in zip(values, values[1:])):
            raise ValueError(f"{op}: {name} must start at 0, never decrease and end at the number of tokens "
                             f"({total}), got {values}")
    return cu.numel() - 1


def _max_seqlen(op: str, name: str, given, cu: Tensor) -> int:
    if given is None:
        if torch.compiler.is_compiling() or capturing():
            raise ValueError(f"{op}: {name} must be given under torch.compile and in CUDA graph capture (it cannot "
                             "be read from cu_seqlens there)")
        return int((cu[1:] - cu[:-1]).max())
    if not isinstance(given, int) or isinstance(given, bool) or given < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {given!r}")
    if not torch.compiler.is_compiling() and not capturing() and int((cu[1:] - cu[:-1]).max()) > given:
        raise ValueError(f"{op}: {name}={given} is smaller than the longest sequence in cu_seqlens")
    return given


def _additive_bias(op: str, attn_mask, q: Tensor, heads_q: int, seqlen_k: int) -> Tensor | None:
    """attn_mask (bool: True = attend, or additive float) as an additive bias of q's dtype, broadcast to
    (B, Hq, Nq, Nk) with a unit stride on the key axis."""
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"{op}: attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}")
    if attn_mask.device != q.device:
        raise ValueError(f"{op}: attn_mask is on {attn_mask.device} but q is on {q.device}")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(f"{op}: attn_mask must be bool or floating point, got {attn_mask.dtype}")
    if attn_mask.requires_grad:
        raise NotImplementedError(f"{op}: gradients with respect to attn_mask are not supported; detach it")
    target = (q.shape[0], heads_q, q.shape[2], seqlen_k)
    if attn_mask.dim() > 4 or any(m not in (1, t) for m, t in zip(attn_mask.shape[::-1], target[::-1])):
        raise ValueError(f"{op}: attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (batch, heads, "
                         f"seq_q, seq_k) = {target}")
    if attn_mask.dtype == torch.bool:
        bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~attn_mask, -math.inf)
    else:
        bias = attn_mask.to(q.dtype)
    bias = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))
    if bias.shape[-1] != seqlen_k or bias.stride(-1) != 1:  # the kernels read whole key rows
        bias = bias.expand(*bias.shape[:-1], seqlen_k).contiguous()
    return bias.expand(target)


def _prepare(op, q, k, v, *, causal, causal_bottom_right, scale, dropout_p, attn_mask, cu_seqlens_q, cu_seqlens_k,
             max_seqlen_q, max_seqlen_k, backend):
    """Validates a call for our backend `backend`; returns a thunk giving (out, lse) from dlk::attention."""
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    _check_qkv(op, q, k, v, varlen)
    if not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p!r}")
    head_dim = q.shape[-1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if varlen:
        if cu_seqlens_q is None or cu_seqlens_k is None:
            raise ValueError(f"{op}: give both cu_seqlens_q and cu_seqlens_k, or neither")
        if attn_mask is not None:
            raise ValueError(f"{op}: attn_mask is not supported with variable-length (cu_seqlens) batches")
        batch = _check_cu_seqlens(op, "cu_seqlens_q", cu_seqlens_q, q.shape[0], None, q.device)
        _check_cu_seqlens(op, "cu_seqlens_k", cu_seqlens_k, k.shape[0], batch, q.device)
        max_seqlen_q = _max_seqlen(op, "max_seqlen_q", max_seqlen_q, cu_seqlens_q)
        max_seqlen_k = _max_seqlen(op, "max_seqlen_k", max_seqlen_k, cu_seqlens_k)
        bias = None
    else:
        max_seqlen_q, max_seqlen_k = q.shape[2], k.shape[2]
        bias = _additive_bias(op, attn_mask, q, q.shape[1], k.shape[2])
    if q.dtype == torch.float64 and backend != "reference":
        raise TypeError(f"{op}: float64 is supported by the reference backend only, not by {backend!r}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    allow_tf32 = q.dtype == torch.float32 and q.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    dropout_p = float(dropout_p)

    def run():
        # The seed comes from torch's generator only when dropping, so dropout-free calls leave the RNG alone.
        # It stays on the device: an RNG op a CUDA graph replays with fresh philox offsets, and no host sync.
        seed = torch.randint(0, 2**62, (1,), device=q.device) if dropout_p > 0 else None
        return _attention(q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, bool(causal),
                          causal_bottom_right, dropout_p, seed, allow_tf32, backend)
    return run


# ----------------------------------------------------------------------------- torch backend
def _torch_dense(q, k, v, *, causal, scale, dropout_p, attn_mask) -> tuple[Tensor, Tensor]:
    """attention's semantics from torch ops on (batch, heads, seq, head_dim): GQA, bottom-right causal, fully
    masked rows give 0; returns (out, lse) with lse in float32 (float64 for float64 input)."""
    group = q.shape[-3] // k.shape[-3]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    stat_dtype = _stat_dtype(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q.to(stat_dtype), k.to(stat_dtype).transpose(-2, -1)) * scale
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool \
            else scores + attn_mask.to(stat_dtype)
    if causal:
        seqlen_q, seqlen_k = q.shape[-2], k.shape[-2]
        visible = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool, device=q.device).tril(seqlen_k - seqlen_q)
        scores = scores.masked_fill(~visible, -math.inf)
    lse = torch.logsumexp(scores, dim=-1)
    finite_lse = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    probabilities = torch.exp(scores - finite_lse.unsqueeze(-1))  # exp(-inf) = 0 for masked rows
    if dropout_p > 0:
        probabilities = F.dropout(probabilities, dropout_p)
    out = torch.matmul(probabilities, v.to(stat_dtype)).to(q.dtype)
    return out, lse


def _torch_attention(q, k, v, *, causal, scale, dropout_p, attn_mask, cu_seqlens_q, cu_seqlens_k, want_lse=True):
    """attention's semantics from torch. Without the log-sum-exp, and where torch's SDPA means the same thing
    (no mask; causal only when Nq == Nk, where top-left and bottom-right alignment agree; as many k/v heads as
    q heads, since SDPA's enable_gqa needs torch >= 2.5), it is one SDPA call: the composed path costs about
    eight times SDPA's host time on tiny inputs. lse is None then."""
    if (not want_lse and cu_seqlens_q is None and cu_seqlens_k is None and attn_mask is None
            and q.shape[-3] == k.shape[-3] and (not causal or q.shape[-2] == k.shape[-2])):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale), None
    if cu_seqlens_q is None and cu_seqlens_k is None:
        return _torch_dense(q, k, v, causal=causal, scale=scale, dropout_p=dropout_p, attn_mask=attn_mask)
    if cu_seqlens_q is None or cu_seqlens_k is None:
        raise ValueError("attention: give both cu_seqlens_q and cu_seqlens_k, or neither")
    outs, lses = [], []  # one dense call per packed sequence: (len, heads, dim) -> (1, heads, len, dim)
    bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for (q0, q1), (k0, k1) in zip(zip(bounds_q, bounds_q[1:]), zip(bounds_k, bounds_k[1:])):
        out, lse = _torch_dense(*(t[a:b].transpose(0, 1)[None] for t, a, b in ((q, q0, q1), (k, k0, k1), (v, k0, k1))),
                                causal=causal, scale=scale, dropout_p=dropout_p, attn_mask=None)
        outs.append(out[0].transpose(0, 1))
        lses.append(lse[0])
    return torch.cat(outs), torch.cat(lses, dim=-1)


# ----------------------------------------------------------------------------- public API
def attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, scale: float | None = None,
              dropout_p: float = 0.0, attn_mask: Tensor | None = None, cu_seqlens_q: Tensor | None = None,
              cu_seqlens_k: Tensor | None = None, max_seqlen_q: int | None = None, max_seqlen_k: int | None = None,
              return_lse: bool = False, backend: str = "auto"):
    """Flash attention on (batch, heads, seq, head_dim) tensors, or packed (total, heads, head_dim) ones with
    cu_seqlens_q / cu_seqlens_k (int32 offsets of each sequence, FlashAttention's varlen convention).

    k and v may have fewer heads than q (grouped-query / multi-query attention). causal=True lets query i of a
    sequence with Nq queries and Nk keys see keys j <= i + Nk - Nq (bottom-right aligned, as FlashAttention
    >= 2.1). attn_mask: bool (True = attend) or additive float, broadcastable to (batch, heads, Nq, Nk).
    scale defaults to 1/sqrt(head_dim). return_lse=True also returns the log-sum-exp of each row (float32;
    (batch, heads, Nq), or (heads, total_q) for packed input).

    backend: "auto", "cuda", "triton", "reference" or "torch" (the same computation composed from torch ops;
    its dropout draws torch's own mask, not our Philox one).
    """
    if runs_torch_now(backend, q):  # what dispatch would run, without building its closures
        out, lse = _torch_attention(q, k, v, causal=causal, scale=scale, dropout_p=dropout_p, attn_mask=attn_mask,
                                    cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, want_lse=return_lse)
        return (out, lse) if return_lse else out

    def prepare(chosen: str):
        return _prepare(OP, q, k, v, causal=causal, causal_bottom_right=True, scale=scale, dropout_p=dropout_p,
                        attn_mask=attn_mask, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                        max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, backend=chosen)

    def run_torch():
        return _torch_attention(q, k, v, causal=causal, scale=scale, dropout_p=dropout_p, attn_mask=attn_mask,
                                cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, want_lse=return_lse)

    out, lse = dispatch(OP, backend, q, prepare, run_torch)
    return (out, lse) if return_lse else out


def _prepare_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, backend):
    op = "scaled_dot_product_attention"
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or t.dim() < 2:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{op}: {name} must be a tensor of shape (..., seq, head_dim), got {shape}")
    if is_causal and attn_mask is not None:
        raise ValueError(f"{op}: attn_mask and is_causal cannot both be set")
    if query.dim() != key.dim() or key.dim() != value.dim():
        raise ValueError(f"{op}: query, key and value must have the same rank, got {query.dim()}, {key.dim()} and "
                         f"{value.dim()}")
    # (..., heads, seq, head_dim): a 2-D or 3-D input has no head axis (one head).
    heads_q = query.shape[-3] if query.dim() >= 4 else 1
    heads_kv = key.shape[-3] if key.dim() >= 4 else 1
    if heads_q != heads_kv and not enable_gqa:
        raise ValueError(f"{op}: query has {heads_q} heads and key/value {heads_kv}; pass enable_gqa=True for "
                         "grouped-query attention")
    # Batch dimensions (all before heads, seq, head_dim) broadcast against each other, as in SDPA.
    head_axes = 3 if query.dim() >= 4 else 2
    batch_shapes = [t.shape[:-head_axes] for t in (query, key, value)]
    try:
        batch = torch.broadcast_shapes(*batch_shapes)
    except RuntimeError:
        raise ValueError(f"{op}: the batch dimensions of query, key and value do not broadcast: "
                         f"{', '.join(str(tuple(b)) for b in batch_shapes)}") from None
    query, key, value = (t.expand(*batch, *t.shape[-head_axes:]) for t in (query, key, value))
    lead = query.shape[:-2]

    def as_4d(t: Tensor) -> Tensor:  # (batch, heads, seq, head_dim), leading dimensions flattened into batch
        if t.dim() == 2:
            return t[None, None]
        if t.dim() == 3:
            return t.unsqueeze(1)
        return t.reshape(-1, *t.shape[-3:])

    mask = attn_mask
    if isinstance(mask, Tensor) and query.dim() == 3 and mask.dim() == 3:  # (batch, L, S) -> (batch, 1, L, S)
        mask = mask.unsqueeze(1)
    elif isinstance(mask, Tensor) and query.dim() > 4:
        mask = mask.expand(*lead, *mask.shape[-2:]).reshape(-1, heads_q, *mask.shape[-2:])
    run = _prepare(op, as_4d(query), as_4d(key), as_4d(value), causal=is_causal, causal_bottom_right=False,
                   scale=scale, dropout_p=dropout_p, attn_mask=mask, cu_seqlens_q=None, cu_seqlens_k=None,
                   max_seqlen_q=None, max_seqlen_k=None, backend=backend)

    def run_ours():
        out, _ = run()
        return out.reshape(*lead, *out.shape[-2:])
    return run_ours


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False, *, backend: str = "auto") -> Tensor:
    """torch.nn.functional.scaled_dot_product_attention; `backend` is "auto", "cuda", "triton", "reference" or
    "torch". Ours take (..., L, E) tensors with head_dim in HEAD_DIMS, is_causal aligned top-left, bool masks
    True = attend; rows that attend to nothing give 0 (SDPA's math backend gives 0 or NaN depending on the
    version). Batch dimensions (those before heads) broadcast as in SDPA; leading dimensions beyond (batch,
    heads) are flattened into the batch. "auto" runs torch's SDPA for every call ours do not cover."""
    # enable_gqa is passed on only when set: torch < 2.5 has no such argument.
    gqa = {"enable_gqa": True} if enable_gqa else {}
    if runs_torch_now(backend, query):
        return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, **gqa)
    return dispatch(
        "scaled_dot_product_attention", backend, query,
        lambda chosen: _prepare_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, chosen),
        lambda: F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, **gqa))


__all__ = ["HEAD_DIMS", "attention", "scaled_dot_product_attention"]

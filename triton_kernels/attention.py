"""Triton flash-attention kernels: forward and backward (FlashAttention-2 algorithm, after Triton's
06-fused-attention tutorial). Semantics, layouts and the dropout rule are those of
csrc/include/dlk/attention.h: dense (B, H, N, D) or packed varlen (total, H, D) tensors with any strides
but a unit one on D, GQA, causal masks aligned top-left or bottom-right, an additive bias, and
Philox dropout that drops exactly the elements the C++ and CUDA backends drop.

Forward. A program owns BLOCK_M query rows of one (query head, sequence) and streams the visible key
blocks through an online softmax: every exponential is an exp2 of (score - row max) * log2(e), O and
the row sums accumulate in fp32, and lse is written as a natural log. (The tutorial folds log2(e)
into the scale instead; that rounds the full score, not the small difference, and P recomputed in
the backward then misses torch's fp32 accuracy: see LOG2E.) Key blocks split into two ranges: those
every row of the block sees entirely (no score masks) and the band at the causal diagonal and the
ragged last block (causal and length masks). Causal programs never visit the blocks above the
diagonal. On Hopper, Q, K and V arrive through tensor descriptors (TMA) where the layout allows
(USE_TMA, chosen by _use_tma); the scores are masked exactly as with pointer loads.

Backward. Three kernels, none with atomics, so gradients are bitwise reproducible:
1. _attn_bwd_delta_kernel: D_i = rowsum(dO_i * O_i) (fp32, laid out like lse; see _DELTA_BLOCK_M).
2. _attn_bwd_dkdv_kernel: a program owns BLOCK_N keys of one (kv head, sequence) and loops over the
   query heads of its GQA group, in order, and their visible query blocks, recomputing P^T from lse;
   it works on transposed tiles (keys x queries) so dV += P^T dO and dK += dS^T Q need no transpose
   of a computed tile.
3. _attn_bwd_dq_kernel: a program owns BLOCK_M query rows and loops over the visible key blocks,
   dQ += dS K.
With dropout (P' = P * keep / (1 - p), O = P' V) the chain rule gives dS = P * (keep * dP' / (1 - p) - D)
with dP' = dO V^T and D = rowsum(dO * O): the same D as without dropout.

Rows with no visible key (causal rows before the first key, or a bias of -inf everywhere) output 0
and get lse = -inf. The kernels never form exp(-inf - -inf): the forward subtracts a running max of 0
from such rows, and the backward reads their lse (and that of rows past the sequence end) as +inf,
which turns every P of the row into exactly 0.
"""
import math
import os

import torch
import triton
import triton.language as tl
from ._common import INTERPRETING, autotune_configs, cast_for_store, dot_dtype, input_precision

# Tiles. The first config of each list is the only one the interpreter runs (it cannot benchmark):
# small and with BLOCK_M != BLOCK_N, so CPU tests cover several blocks, ragged edges and a causal
# band that does not line up with the blocks. The others target H100: 64-128 rows (wgmma wants a
# multiple of 64 per warpgroup), 2-4 pipeline stages for the K / V (Q / dO) streams. Configs whose
# shared memory does not fit (large head dims with deep pipelines) fail to launch and the autotuner
# skips them.
_FWD_CONFIGS = autotune_configs([
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=4),
])
# dK / dV: BLOCK_N keys per program, BLOCK_M query rows per step.
_DKDV_CONFIGS = autotune_configs([
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 128}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=4, num_stages=4),
])
# dQ: BLOCK_M query rows per program, BLOCK_N keys per step.
_DQ_CONFIGS = autotune_configs([
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=4),
])
# D = rowsum(dO * O): memory bound, one fixed tile. Every dS of the row subtracts D from dP, so its
# rounding error reaches all of dQ and dK: fp32 inputs sum in fp64 (free in a memory-bound kernel on
# H100 / A100) to stay within torch's fp32 error; fp16 / bf16 inputs carry far larger errors anyway.
_DELTA_BLOCK_M = 32 if INTERPRETING else 128

# What decides the best tile. The sequence lengths enter as powers of two (the *_bucket arguments):
# varlen batches change max_seqlen every step and must not re-tune each time. Dtypes are added by
# Triton.
_KEY = ["seqlen_q_bucket", "seqlen_k_bucket", "HEAD_DIM", "CAUSAL", "HAS_BIAS", "DROPOUT", "VARLEN",
        "INPUT_PRECISION"]
# Values that change from call to call; specialising them would only multiply compilations.
_UNSPECIALIZED = ["seqlen_q", "seqlen_k", "total_q", "dropout_threshold", "seqlen_q_bucket",
                  "seqlen_k_bucket"]

# exp(x) = exp2(x * log2(e)), the hardware's exponential. Scores stay in natural units (scale * q.k +
# bias) and only the difference to the row's max (forward) or lse (backward) is converted: that
# difference is small where P matters, so its rounding is too, and forward and backward compute
# the same S bit for bit, which keeps P recomputed from lse within a few ulps of the forward's.
LOG2E = tl.constexpr(math.log2(math.e))


# --- helpers shared by the kernels --------------------------------------------------------------

@triton.jit
def _sequence(cu_seqlens_ptr, b, seqlen, VARLEN: tl.constexpr):
    """(first token, length) of sequence b: from cu_seqlens when packed, (0, seqlen) when dense."""
    if VARLEN:
        start = tl.load(cu_seqlens_ptr + b).to(tl.int64)
        return start, (tl.load(cu_seqlens_ptr + b + 1) - start).to(tl.int32)
    else:
        return tl.zeros([], tl.int64), seqlen


@triton.jit
def _causal_shift(len_q, len_k, BOTTOM_RIGHT: tl.constexpr):
    # Key j is visible to query i iff j <= i + shift (dlk::attention_key_end).
    if BOTTOM_RIGHT:
        return len_k - len_q
    else:
        return 0


@triton.jit
def _load_rows(ptr, rows, num_rows, row_stride, cols, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
               MASK_ROWS: tl.constexpr):
    """[rows, BLOCK_D] tile of a (row, D) matrix, rows counted from ptr's (int64 pointer arithmetic
    for the tile's start, int32 inside it); zero past num_rows (when MASK_ROWS) and past HEAD_DIM
    (head dim 96 runs on a 128-wide tile)."""
    ptrs = ptr + rows[:, None] * row_stride + cols[None, :]
    if MASK_ROWS and BLOCK_D != HEAD_DIM:
        return tl.load(ptrs, mask=(rows < num_rows)[:, None] & (cols < HEAD_DIM)[None, :], other=0.0)
    elif MASK_ROWS:
        return tl.load(ptrs, mask=(rows < num_rows)[:, None], other=0.0)
    elif BLOCK_D != HEAD_DIM:
        return tl.load(ptrs, mask=(cols < HEAD_DIM)[None, :], other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def _row_source(base, num_rows, row_stride, BLOCK_ROWS: tl.constexpr, HEAD_DIM: tl.constexpr,
                USE_TMA: tl.constexpr):
    """What _load_block reads the (num_rows, HEAD_DIM) matrix at base through: a tensor descriptor of
    [BLOCK_ROWS, HEAD_DIM] blocks bounded by num_rows (TMA), or the pointer itself."""
    if USE_TMA:
        return tl.make_tensor_descriptor(base, shape=[num_rows, HEAD_DIM], strides=[row_stride, 1],
                                         block_shape=[BLOCK_ROWS, HEAD_DIM])
    else:
        return base


@triton.jit
def _load_block(source, first_row, num_rows, row_stride, BLOCK_ROWS: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_D: tl.constexpr, MASK_ROWS: tl.constexpr, USE_TMA: tl.constexpr):
    """Rows first_row + [0, BLOCK_ROWS) of a _row_source, zero past num_rows: the descriptor zero-fills
    them by itself, the pointer path masks them when MASK_ROWS (see _load_rows)."""
    if USE_TMA:
        return source.load([first_row, 0])
    else:
        return _load_rows(source + tl.cast(first_row, tl.int64) * row_stride, tl.arange(0, BLOCK_ROWS),
                          num_rows - first_row, row_stride, tl.arange(0, BLOCK_D), HEAD_DIM, BLOCK_D, MASK_ROWS)


@triton.jit
def _store_rows(ptr, value, rows, num_rows, row_stride, cols, HEAD_DIM: tl.constexpr):
    mask = (rows < num_rows)[:, None] & (cols < HEAD_DIM)[None, :]
    tl.store(ptr + rows[:, None] * row_stride + cols[None, :], cast_for_store(value, ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _exceeds_bounds(len_q, len_k, seqlen_q, seqlen_k, VARLEN: tl.constexpr):
    """Whether a packed sequence is longer than max_seqlen_q / max_seqlen_k: the grid, sized by those, would
    leave its last rows unwritten (garbage). The launcher refuses such calls when it can read cu_seqlens for
    free (host tensors); on a GPU that read would synchronise, so the kernels fill the sequence's outputs with
    NaN instead: loud, and no stale memory."""
    if VARLEN:
        return (len_q > seqlen_q) | (len_k > seqlen_k)
    else:
        return False


@triton.jit
def _fill_nan_rows(base, num_rows, row_stride, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_ROWS: tl.constexpr):
    """NaN into rows [0, num_rows) of a (row, D) matrix at base (see _exceeds_bounds)."""
    rows = tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_D)
    nan = tl.full([BLOCK_ROWS, BLOCK_D], float("nan"), tl.float32)
    for start in range(0, num_rows, BLOCK_ROWS):
        _store_rows(base + tl.cast(start, tl.int64) * row_stride, nan, rows, num_rows - start, row_stride, cols,
                    HEAD_DIM)


@triton.jit
def _load_bias(tile_ptr, rows, cols, num_rows, num_cols, row_stride, TRANSPOSED: tl.constexpr):
    """fp32 bias tile, indices relative to the tile's first element at tile_ptr: [rows, cols], or
    [cols, rows] when TRANSPOSED (the dK / dV kernel); zero past num_rows queries / num_cols keys."""
    if TRANSPOSED:
        ptrs = tile_ptr + rows[None, :] * row_stride + cols[:, None]
        mask = (rows < num_rows)[None, :] & (cols < num_cols)[:, None]
    else:
        ptrs = tile_ptr + rows[:, None] * row_stride + cols[None, :]
        mask = (rows < num_rows)[:, None] & (cols < num_cols)[None, :]
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _dropout_keep(seed_ptr, row_counters, cols, threshold, TRANSPOSED: tl.constexpr):
    """Kept elements of a tile: Philox word >= threshold (unsigned), counter = row_counter + key
    index (dlk::dropout_counter, row_counter = (h * total_q + query token) * seqlen_k). The 64-bit
    seed is read from memory (one load per tile: a CUDA graph draws a new one per replay); the
    32-bit threshold arrives as an int32 bit pattern (see _Problem.scalars)."""
    if TRANSPOSED:
        counters = row_counters[None, :] + cols[:, None]
    else:
        counters = row_counters[:, None] + cols[None, :]
    seed = tl.load(seed_ptr).to(tl.uint64)
    return tl.randint(seed, counters) >= threshold.to(tl.uint32)


# --- forward ------------------------------------------------------------------------------------

@triton.jit
def _attn_fwd_inner(
    acc, l_i, m_i, q, k_source, v_source, bias_base, start_m, lo, hi, len_q, len_k, shift,
    k_row_stride, v_row_stride, bias_row_stride, scale, seed_ptr, row_counters, dropout_threshold,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_BIAS: tl.constexpr, DROPOUT: tl.constexpr, DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    USE_TMA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Online softmax of query rows start_m + [0, BLOCK_M) over key blocks [lo, hi). k_source and
    v_source are _row_sources of the sequence's keys; bias_base points at row start_m, key 0. MASKED:
    the causal band / ragged end, where scores of hidden or out-of-range keys become -inf; otherwise
    every key of every block is visible."""
    rows = tl.arange(0, BLOCK_M)
    offs_m = start_m + rows
    cols = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + cols
        k = _load_block(k_source, start_n, len_k, k_row_stride, BLOCK_N, HEAD_DIM, BLOCK_D, MASKED, USE_TMA)
        s = tl.dot(q, tl.trans(k.to(DOT_DTYPE)), input_precision=INPUT_PRECISION, out_dtype=tl.float32) * scale
        if HAS_BIAS:
            s += _load_bias(bias_base + tl.cast(start_n, tl.int64), rows, cols, len_q - start_m, len_k - start_n,
                            bias_row_stride, False)
        if MASKED:
            visible = (offs_n < len_k)[None, :]
            if CAUSAL:
                visible = visible & (offs_n[None, :] <= offs_m[:, None] + shift)
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row that has seen no visible key yet keeps m = -inf; subtracting 0 instead gives p = 0.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2((m_i - m_safe) * LOG2E)
        p = tl.math.exp2((s - m_safe[:, None]) * LOG2E)
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:  # the row sum above is the softmax's; only the product with V drops
            p = tl.where(_dropout_keep(seed_ptr, row_counters, offs_n, dropout_threshold, False), p, 0.0)
        v = _load_block(v_source, start_n, len_k, v_row_stride, BLOCK_N, HEAD_DIM, BLOCK_D, MASKED, USE_TMA)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE), acc, input_precision=INPUT_PRECISION, out_dtype=tl.float32)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_FWD_CONFIGS, key=_KEY + ["USE_TMA"])
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _attn_fwd_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, lse_ptr, cu_seqlens_q_ptr, cu_seqlens_k_ptr,
    q_strides, k_strides, v_strides, out_strides, bias_strides, lse_strides,  # (batch, head, row)
    seqlen_q, seqlen_k, total_q, group_size, scale, seed_ptr, dropout_threshold, dropout_scale,
    seqlen_q_bucket, seqlen_k_bucket,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, BOTTOM_RIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, VARLEN: tl.constexpr, DROPOUT: tl.constexpr,
    DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    seq_q, len_q = _sequence(cu_seqlens_q_ptr, b, seqlen_q, VARLEN)
    seq_k, len_k = _sequence(cu_seqlens_k_ptr, b, seqlen_k, VARLEN)
    if _exceeds_bounds(len_q, len_k, seqlen_q, seqlen_k, VARLEN):
        if start_m == 0:  # one program per (head, sequence) poisons all of its rows, past the grid too
            _fill_nan_rows(out_ptr + b * out_strides[0] + h * out_strides[1] + seq_q * out_strides[2], len_q,
                           out_strides[2], HEAD_DIM, BLOCK_D, BLOCK_M)
            lse_row0 = lse_ptr + b * lse_strides[0] + h * lse_strides[1] + seq_q
            for start in range(0, len_q, BLOCK_M):
                offs = start + tl.arange(0, BLOCK_M)
                tl.store(lse_row0 + offs, tl.full([BLOCK_M], float("nan"), tl.float32), mask=offs < len_q)
        return
    if start_m >= len_q:  # the grid covers max_seqlen_q; shorter packed sequences end early
        return
    kv_h = h // group_size
    # Row bases in int64 (tensors may pass 2**31 elements); offsets inside a tile stay int32.
    q_base = q_ptr + b * q_strides[0] + h * q_strides[1] + seq_q * q_strides[2]  # the sequence's row 0
    out_base = out_ptr + b * out_strides[0] + h * out_strides[1] + (seq_q + start_m) * out_strides[2]
    k_base = k_ptr + b * k_strides[0] + kv_h * k_strides[1] + seq_k * k_strides[2]
    v_base = v_ptr + b * v_strides[0] + kv_h * v_strides[1] + seq_k * v_strides[2]
    k_source = _row_source(k_base, len_k, k_strides[2], BLOCK_N, HEAD_DIM, USE_TMA)
    v_source = _row_source(v_base, len_k, v_strides[2], BLOCK_N, HEAD_DIM, USE_TMA)
    bias_base = bias_ptr + b * bias_strides[0] + h * bias_strides[1] + start_m.to(tl.int64) * bias_strides[2]
    lse_base = lse_ptr + b * lse_strides[0] + h * lse_strides[1] + seq_q + start_m

    rows = tl.arange(0, BLOCK_M)  # relative to start_m
    offs_m = start_m + rows
    offs_d = tl.arange(0, BLOCK_D)
    q_source = _row_source(q_base, len_q, q_strides[2], BLOCK_M, HEAD_DIM, USE_TMA)
    q = _load_block(q_source, start_m, len_q, q_strides[2], BLOCK_M, HEAD_DIM, BLOCK_D, True, USE_TMA).to(DOT_DTYPE)
    # Dropout counters: dense sequences number their tokens b * seqlen_q + i, packed ones globally.
    first_token = seq_q if VARLEN else b * seqlen_q
    row_counters = ((h * total_q + first_token + offs_m) * seqlen_k).to(tl.int64)

    # Keys [0, full_end) are visible to every row of the block (whole blocks); [full_end, hi) is the
    # causal band and the ragged end.
    shift = _causal_shift(len_q, len_k, BOTTOM_RIGHT)
    if CAUSAL:
        last_row = tl.minimum(start_m + BLOCK_M, len_q) - 1
        hi = tl.maximum(tl.minimum(len_k, last_row + shift + 1), 0)
        full_end = tl.maximum(tl.minimum(len_k, start_m + shift + 1), 0) // BLOCK_N * BLOCK_N
    else:
        hi = len_k
        full_end = len_k // BLOCK_N * BLOCK_N

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_source, v_source, bias_base, start_m, 0, full_end, len_q, len_k, shift,
        k_strides[2], v_strides[2], bias_strides[2], scale, seed_ptr, row_counters, dropout_threshold,
        HEAD_DIM, BLOCK_D, False, CAUSAL, HAS_BIAS, DROPOUT, DOT_DTYPE, INPUT_PRECISION, USE_TMA, BLOCK_M,
        BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_source, v_source, bias_base, start_m, full_end, hi, len_q, len_k, shift,
        k_strides[2], v_strides[2], bias_strides[2], scale, seed_ptr, row_counters, dropout_threshold,
        HEAD_DIM, BLOCK_D, True, CAUSAL, HAS_BIAS, DROPOUT, DOT_DTYPE, INPUT_PRECISION, USE_TMA, BLOCK_M,
        BLOCK_N)

    # Rows without a visible key have l = 0 and acc = 0: they store 0 and lse = -inf.
    empty = l_i == 0.0
    inv_l = 1.0 / tl.where(empty, 1.0, l_i)
    if DROPOUT:
        inv_l = inv_l * dropout_scale
    _store_rows(out_base, acc * inv_l[:, None], rows, len_q - start_m, out_strides[2], offs_d, HEAD_DIM)
    lse = tl.where(empty, float("-inf"), m_i + tl.log(tl.where(empty, 1.0, l_i)))
    tl.store(lse_base + rows, lse, mask=offs_m < len_q)


# --- backward -----------------------------------------------------------------------------------

@triton.jit
def _attn_bwd_delta_kernel(
    out_ptr, grad_out_ptr, delta_ptr, cu_seqlens_q_ptr, out_strides, grad_out_strides, delta_strides, seqlen_q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, SUM_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    seq_q, len_q = _sequence(cu_seqlens_q_ptr, b, seqlen_q, VARLEN)
    if start_m >= len_q:
        return
    rows = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row = seq_q + start_m
    o = _load_rows(out_ptr + b * out_strides[0] + h * out_strides[1] + row * out_strides[2],
                   rows, len_q - start_m, out_strides[2], offs_d, HEAD_DIM, BLOCK_D, True)
    do = _load_rows(grad_out_ptr + b * grad_out_strides[0] + h * grad_out_strides[1] + row * grad_out_strides[2],
                    rows, len_q - start_m, grad_out_strides[2], offs_d, HEAD_DIM, BLOCK_D, True)
    delta = tl.sum(o.to(SUM_DTYPE) * do.to(SUM_DTYPE), 1).to(tl.float32)
    tl.store(delta_ptr + b * delta_strides[0] + h * delta_strides[1] + row + rows, delta,
             mask=start_m + rows < len_q)


@triton.jit
def _load_row_stats(lse_base, delta_base, offs_m, len_q):
    """lse and D of query rows offs_m. Rows without a visible key (lse = -inf) and rows past the
    sequence read lse = +inf, so every P of theirs is exp(s - inf) = 0."""
    valid = offs_m < len_q
    lse = tl.load(lse_base + offs_m, mask=valid, other=float("-inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    return lse, tl.load(delta_base + offs_m, mask=valid, other=0.0)


@triton.jit
def _attn_bwd_dkdv_inner(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base, bias_base, start_n, lo, hi, len_q, len_k, shift,
    q_row_stride, do_row_stride, bias_row_stride, scale, seed_ptr, token_counter, seqlen_k,
    dropout_threshold, dropout_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr, HAS_BIAS: tl.constexpr,
    DROPOUT: tl.constexpr, DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dK and dV of keys start_n + [0, BLOCK_N) over query blocks [lo, hi), on transposed tiles
    [keys, queries]; q_base .. delta_base point at query row 0, bias_base at row 0, key start_n.
    MASKED: the causal band, where hidden (key, query) pairs get P = 0. Keys past len_k need no mask:
    their rows of dK and dV are never stored."""
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    offs_n = start_n + cols
    offs_d = tl.arange(0, BLOCK_D)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + rows
        first_row = tl.cast(start_m, tl.int64)
        q = _load_rows(q_base + first_row * q_row_stride, rows, len_q - start_m, q_row_stride, offs_d,
                       HEAD_DIM, BLOCK_D, True).to(DOT_DTYPE)
        do = _load_rows(do_base + first_row * do_row_stride, rows, len_q - start_m, do_row_stride, offs_d,
                        HEAD_DIM, BLOCK_D, True).to(DOT_DTYPE)
        lse, delta = _load_row_stats(lse_base + first_row, delta_base + first_row, rows, len_q - start_m)
        s_t = tl.dot(k, tl.trans(q), input_precision=INPUT_PRECISION, out_dtype=tl.float32) * scale
        if HAS_BIAS:
            s_t += _load_bias(bias_base + first_row * bias_row_stride, rows, cols, len_q - start_m,
                              len_k - start_n, bias_row_stride, True)
        if MASKED:
            s_t = tl.where(offs_n[:, None] <= offs_m[None, :] + shift, s_t, float("-inf"))
        p_t = tl.math.exp2((s_t - lse[None, :]) * LOG2E)
        dp_t = tl.dot(v, tl.trans(do), input_precision=INPUT_PRECISION, out_dtype=tl.float32)
        if DROPOUT:
            keep = _dropout_keep(seed_ptr, (token_counter + offs_m) * seqlen_k, offs_n, dropout_threshold, True)
            dropped_p_t = tl.where(keep, p_t * dropout_scale, 0.0)
            dp_t = tl.where(keep, dp_t * dropout_scale, 0.0)
        else:
            dropped_p_t = p_t
        dv = tl.dot(dropped_p_t.to(DOT_DTYPE), do, dv, input_precision=INPUT_PRECISION, out_dtype=tl.float32)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(DOT_DTYPE), q, dk, input_precision=INPUT_PRECISION, out_dtype=tl.float32)
    return dk, dv


@triton.autotune(configs=_DKDV_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _attn_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, grad_out_ptr, lse_ptr, delta_ptr, grad_k_ptr, grad_v_ptr,
    cu_seqlens_q_ptr, cu_seqlens_k_ptr,
    q_strides, k_strides, v_strides, bias_strides, grad_out_strides, lse_strides, grad_k_strides,
    grad_v_strides,  # (batch, head, row); delta shares lse's
    seqlen_q, seqlen_k, total_q, group_size, scale, seed_ptr, dropout_threshold, dropout_scale,
    seqlen_q_bucket, seqlen_k_bucket,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, BOTTOM_RIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, VARLEN: tl.constexpr, DROPOUT: tl.constexpr,
    DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_n = tl.program_id(0) * BLOCK_N
    kv_h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    seq_k, len_k = _sequence(cu_seqlens_k_ptr, b, seqlen_k, VARLEN)
    seq_q, len_q = _sequence(cu_seqlens_q_ptr, b, seqlen_q, VARLEN)
    if _exceeds_bounds(len_q, len_k, seqlen_q, seqlen_k, VARLEN):
        if start_n == 0:
            _fill_nan_rows(grad_k_ptr + b * grad_k_strides[0] + kv_h * grad_k_strides[1] + seq_k * grad_k_strides[2],
                           len_k, grad_k_strides[2], HEAD_DIM, BLOCK_D, BLOCK_N)
            _fill_nan_rows(grad_v_ptr + b * grad_v_strides[0] + kv_h * grad_v_strides[1] + seq_k * grad_v_strides[2],
                           len_k, grad_v_strides[2], HEAD_DIM, BLOCK_D, BLOCK_N)
        return
    if start_n >= len_k:
        return
    cols = tl.arange(0, BLOCK_N)  # relative to start_n
    offs_d = tl.arange(0, BLOCK_D)
    row_k = seq_k + start_n
    k = _load_rows(k_ptr + b * k_strides[0] + kv_h * k_strides[1] + row_k * k_strides[2],
                   cols, len_k - start_n, k_strides[2], offs_d, HEAD_DIM, BLOCK_D, True).to(DOT_DTYPE)
    v = _load_rows(v_ptr + b * v_strides[0] + kv_h * v_strides[1] + row_k * v_strides[2],
                   cols, len_k - start_n, v_strides[2], offs_d, HEAD_DIM, BLOCK_D, True).to(DOT_DTYPE)

    # Query blocks [lo, mid) hold the causal band of these keys, [mid, len_q) see all of them.
    shift = _causal_shift(len_q, len_k, BOTTOM_RIGHT)
    if CAUSAL:
        lo = tl.maximum(start_n - shift, 0) // BLOCK_M * BLOCK_M
        mid = tl.minimum(tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - shift, 0), BLOCK_M) * BLOCK_M, len_q)
        mid = tl.maximum(mid, lo)
    else:
        mid = 0
    first_token = seq_q if VARLEN else b * seqlen_q

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for g in range(group_size):  # the query heads of this kv head's group, in order: deterministic sums
        h = kv_h * group_size + g
        q_base = q_ptr + b * q_strides[0] + h * q_strides[1] + seq_q * q_strides[2]
        do_base = grad_out_ptr + b * grad_out_strides[0] + h * grad_out_strides[1] + seq_q * grad_out_strides[2]
        lse_base = lse_ptr + b * lse_strides[0] + h * lse_strides[1] + seq_q
        delta_base = delta_ptr + b * lse_strides[0] + h * lse_strides[1] + seq_q
        bias_base = bias_ptr + b * bias_strides[0] + h * bias_strides[1] + start_n
        token_counter = h * total_q + first_token
        if CAUSAL:
            dk, dv = _attn_bwd_dkdv_inner(
                dk, dv, k, v, q_base, do_base, lse_base, delta_base, bias_base, start_n, lo, mid, len_q, len_k,
                shift, q_strides[2], grad_out_strides[2], bias_strides[2], scale, seed_ptr, token_counter,
                seqlen_k, dropout_threshold, dropout_scale,
                HEAD_DIM, BLOCK_D, True, HAS_BIAS, DROPOUT, DOT_DTYPE, INPUT_PRECISION, BLOCK_M, BLOCK_N)
        dk, dv = _attn_bwd_dkdv_inner(
            dk, dv, k, v, q_base, do_base, lse_base, delta_base, bias_base, start_n, mid, len_q, len_q, len_k, shift,
            q_strides[2], grad_out_strides[2], bias_strides[2], scale, seed_ptr, token_counter, seqlen_k,
            dropout_threshold, dropout_scale,
            HEAD_DIM, BLOCK_D, False, HAS_BIAS, DROPOUT, DOT_DTYPE, INPUT_PRECISION, BLOCK_M, BLOCK_N)

    # S = scale * Q K^T + bias, so dK = scale * dS^T Q.
    _store_rows(grad_k_ptr + b * grad_k_strides[0] + kv_h * grad_k_strides[1] + row_k * grad_k_strides[2],
                dk * scale, cols, len_k - start_n, grad_k_strides[2], offs_d, HEAD_DIM)
    _store_rows(grad_v_ptr + b * grad_v_strides[0] + kv_h * grad_v_strides[1] + row_k * grad_v_strides[2],
                dv, cols, len_k - start_n, grad_v_strides[2], offs_d, HEAD_DIM)


@triton.jit
def _attn_bwd_dq_inner(
    dq, q, do, lse, delta, k_base, v_base, bias_base, start_m, lo, hi, len_q, len_k, shift,
    k_row_stride, v_row_stride, bias_row_stride, scale, seed_ptr, row_counters, dropout_threshold,
    dropout_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_BIAS: tl.constexpr, DROPOUT: tl.constexpr, DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dQ of query rows start_m + [0, BLOCK_M) over key blocks [lo, hi); bias_base and MASKED as in
    the forward."""
    rows = tl.arange(0, BLOCK_M)
    offs_m = start_m + rows
    cols = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + cols
        first_key = tl.cast(start_n, tl.int64)
        k = _load_rows(k_base + first_key * k_row_stride, cols, len_k - start_n, k_row_stride, offs_d,
                       HEAD_DIM, BLOCK_D, MASKED).to(DOT_DTYPE)
        v = _load_rows(v_base + first_key * v_row_stride, cols, len_k - start_n, v_row_stride, offs_d,
                       HEAD_DIM, BLOCK_D, MASKED).to(DOT_DTYPE)
        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION, out_dtype=tl.float32) * scale
        if HAS_BIAS:
            s += _load_bias(bias_base + first_key, rows, cols, len_q - start_m, len_k - start_n, bias_row_stride,
                            False)
        if MASKED:
            visible = (offs_n < len_k)[None, :]
            if CAUSAL:
                visible = visible & (offs_n[None, :] <= offs_m[:, None] + shift)
            s = tl.where(visible, s, float("-inf"))
        p = tl.math.exp2((s - lse[:, None]) * LOG2E)
        dp = tl.dot(do, tl.trans(v), input_precision=INPUT_PRECISION, out_dtype=tl.float32)
        if DROPOUT:
            keep = _dropout_keep(seed_ptr, row_counters, offs_n, dropout_threshold, False)
            dp = tl.where(keep, dp * dropout_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(DOT_DTYPE), k, dq, input_precision=INPUT_PRECISION, out_dtype=tl.float32)
    return dq


@triton.autotune(configs=_DQ_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=_UNSPECIALIZED)
def _attn_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, grad_out_ptr, lse_ptr, delta_ptr, grad_q_ptr, cu_seqlens_q_ptr, cu_seqlens_k_ptr,
    q_strides, k_strides, v_strides, bias_strides, grad_out_strides, lse_strides, grad_q_strides,
    seqlen_q, seqlen_k, total_q, group_size, scale, seed_ptr, dropout_threshold, dropout_scale,
    seqlen_q_bucket, seqlen_k_bucket,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, BOTTOM_RIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, VARLEN: tl.constexpr, DROPOUT: tl.constexpr,
    DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    seq_q, len_q = _sequence(cu_seqlens_q_ptr, b, seqlen_q, VARLEN)
    seq_k, len_k = _sequence(cu_seqlens_k_ptr, b, seqlen_k, VARLEN)
    if _exceeds_bounds(len_q, len_k, seqlen_q, seqlen_k, VARLEN):
        if start_m == 0:
            _fill_nan_rows(grad_q_ptr + b * grad_q_strides[0] + h * grad_q_strides[1] + seq_q * grad_q_strides[2],
                           len_q, grad_q_strides[2], HEAD_DIM, BLOCK_D, BLOCK_M)
        return
    if start_m >= len_q:
        return
    kv_h = h // group_size
    row_q = seq_q + start_m
    k_base = k_ptr + b * k_strides[0] + kv_h * k_strides[1] + seq_k * k_strides[2]
    v_base = v_ptr + b * v_strides[0] + kv_h * v_strides[1] + seq_k * v_strides[2]
    bias_base = bias_ptr + b * bias_strides[0] + h * bias_strides[1] + start_m.to(tl.int64) * bias_strides[2]
    lse_base = lse_ptr + b * lse_strides[0] + h * lse_strides[1] + row_q
    delta_base = delta_ptr + b * lse_strides[0] + h * lse_strides[1] + row_q

    rows = tl.arange(0, BLOCK_M)
    offs_m = start_m + rows
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_rows(q_ptr + b * q_strides[0] + h * q_strides[1] + row_q * q_strides[2],
                   rows, len_q - start_m, q_strides[2], offs_d, HEAD_DIM, BLOCK_D, True).to(DOT_DTYPE)
    do = _load_rows(grad_out_ptr + b * grad_out_strides[0] + h * grad_out_strides[1] + row_q * grad_out_strides[2],
                    rows, len_q - start_m, grad_out_strides[2], offs_d, HEAD_DIM, BLOCK_D, True).to(DOT_DTYPE)
    lse, delta = _load_row_stats(lse_base, delta_base, rows, len_q - start_m)
    first_token = seq_q if VARLEN else b * seqlen_q
    row_counters = ((h * total_q + first_token + offs_m) * seqlen_k).to(tl.int64)

    # The key ranges of the forward.
    shift = _causal_shift(len_q, len_k, BOTTOM_RIGHT)
    if CAUSAL:
        last_row = tl.minimum(start_m + BLOCK_M, len_q) - 1
        hi = tl.maximum(tl.minimum(len_k, last_row + shift + 1), 0)
        full_end = tl.maximum(tl.minimum(len_k, start_m + shift + 1), 0) // BLOCK_N * BLOCK_N
    else:
        hi = len_k
        full_end = len_k // BLOCK_N * BLOCK_N

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dq = _attn_bwd_dq_inner(
        dq, q, do, lse, delta, k_base, v_base, bias_base, start_m, 0, full_end, len_q, len_k, shift,
        k_strides[2], v_strides[2], bias_strides[2], scale, seed_ptr, row_counters, dropout_threshold,
        dropout_scale,
        HEAD_DIM, BLOCK_D, False, CAUSAL, HAS_BIAS, DROPOUT, DOT_DTYPE, INPUT_PRECISION, BLOCK_M, BLOCK_N)
    dq = _attn_bwd_dq_inner(
        dq, q, do, lse, delta, k_base, v_base, bias_base, start_m, full_end, hi, len_q, len_k, shift,
        k_strides[2], v_strides[2], bias_strides[2], scale, seed_ptr, row_counters, dropout_threshold,
        dropout_scale,
        HEAD_DIM, BLOCK_D, True, CAUSAL, HAS_BIAS, DROPOUT, DOT_DTYPE, INPUT_PRECISION, BLOCK_M, BLOCK_N)
    _store_rows(grad_q_ptr + b * grad_q_strides[0] + h * grad_q_strides[1] + row_q * grad_q_strides[2],
                dq * scale, rows, len_q - start_m, grad_q_strides[2], offs_d, HEAD_DIM)


# --- launchers ----------------------------------------------------------------------------------

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _int32_bits(word):
    """The int32 with the bits of an unsigned 32-bit word."""
    return word - (1 << 32) if word >= 1 << 31 else word


def _unit_stride(tensor):
    # The kernels read rows of D contiguous elements; Python guarantees this, autograd's grad_out may not.
    return tensor if tensor.stride(-1) == 1 else tensor.contiguous()


# The forward reads Q, K and V through tensor descriptors (TMA bulk copies: no address or mask
# arithmetic in the warps, the ragged last block zero-filled by the copy engine) when the launcher
# finds (_use_tma) an NVIDIA GPU of capability >= 9 (Hopper, where TMA exists; Triton would turn the
# descriptors back into pointer loads on older GPUs), dense tensors (a packed sequence may have no
# keys, and a descriptor needs at least one row), a power-of-two head dim (a descriptor block spans
# the whole row; D = 96 would need column masks) and TMA's 16-byte alignment of each (batch, head)
# matrix's start and of its row stride. Everywhere else, and in the backward, the masked pointer
# loads. FORCE_TMA (environment DLK_ATTENTION_TMA=1 / 0) overrides the choice for tests and
# benchmarks: True takes descriptors wherever the layout allows, on any device (the interpreter
# executes them), False never.
_TMA_ENV = os.environ.get("DLK_ATTENTION_TMA", "")
FORCE_TMA = None if _TMA_ENV == "" else _TMA_ENV != "0"


def _tma_aligned(tensor, strides):
    itemsize = tensor.element_size()
    return tensor.data_ptr() % 16 == 0 and strides[2] > 0 and all(stride * itemsize % 16 == 0 for stride in strides)


def _use_tma(problem, q, k, v):
    if FORCE_TMA is False or problem.varlen or problem.head_dim & (problem.head_dim - 1):
        return False
    if FORCE_TMA is None and not (q.is_cuda and torch.version.hip is None
                                  and torch.cuda.get_device_capability(q.device)[0] >= 9):
        return False
    return all(_tma_aligned(tensor, problem.strides(tensor)) for tensor in (q, k, v))


def _tma_scratch(size, alignment, stream):
    # Global memory for the descriptors the programs build (Triton asks for it at each launch, on the
    # current device and stream; the caching allocator's blocks are 512-byte aligned).
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_tma_allocator():
    """Device-side descriptors live in scratch from the allocator of triton.set_allocator (a ContextVar,
    so per thread): install ours unless the caller has set one."""
    try:  # Triton keeps the current allocator private; if that moves, always install ours
        from triton.runtime import _allocation
        caller_set_one = not isinstance(_allocation._allocator.get(), _allocation.NullAllocator)
    except (ImportError, AttributeError):
        caller_set_one = False
    if not caller_set_one:
        triton.set_allocator(_tma_scratch)


class _Problem:
    """Sizes, strides (batch, head, row) and flags of one call, in the header's single indexing rule."""

    def __init__(self, q, k, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                 causal_bottom_right, dropout_p, seed, allow_tf32):
        if q.dtype not in _KERNEL_DTYPES:
            raise TypeError(f"attention (triton): dtype must be float16, bfloat16 or float32, got {q.dtype}")
        self.varlen = cu_seqlens_q is not None
        if self.varlen:
            self.total_q, self.heads_q, self.head_dim = q.shape
            self.batch = cu_seqlens_q.numel() - 1
            self.heads_kv = k.shape[1]
            self.empty_keys = k.shape[0] == 0
        else:
            self.batch, self.heads_q, seqlen_q, self.head_dim = q.shape
            self.heads_kv = k.shape[1]
            self.total_q = self.batch * seqlen_q
            self.empty_keys = k.shape[2] == 0
        self.seqlen_q, self.seqlen_k = int(max_seqlen_q), int(max_seqlen_k)
        self.cu_seqlens_q = cu_seqlens_q if self.varlen else q  # never read when dense
        self.cu_seqlens_k = cu_seqlens_k if self.varlen else q
        self.bias = bias if bias is not None else q  # never read without a bias
        self.bias_strides = tuple(bias.stride()[:3]) if bias is not None else (0, 0, 0)
        self.scale = float(scale)
        self.dropout_p = float(dropout_p)
        # dlk::dropout_threshold: floor(p * 2**32), saturated.
        threshold = math.floor(self.dropout_p * 4294967296.0)
        self.dropout_threshold = 0xFFFFFFFF if threshold >= 4294967295 else threshold
        self.dropout_scale = 1.0 / (1.0 - self.dropout_p)
        self.seed = seed if self.dropout_p > 0.0 else q  # an int64 tensor; never read without dropout
        self.meta = {
            "HEAD_DIM": self.head_dim, "BLOCK_D": triton.next_power_of_2(self.head_dim), "CAUSAL": bool(causal),
            "BOTTOM_RIGHT": bool(causal_bottom_right), "HAS_BIAS": bias is not None, "VARLEN": self.varlen,
            "DROPOUT": self.dropout_p > 0.0, "DOT_DTYPE": dot_dtype(q.dtype),
            "INPUT_PRECISION": input_precision(q.dtype, allow_tf32),
        }

    def strides(self, tensor):
        """(batch, head, row) strides of a q/k/v-like tensor: packed tensors have no batch stride."""
        if self.varlen:
            return (0, tensor.stride(1), tensor.stride(0))
        return tuple(tensor.stride()[:3])

    def lse_strides(self):
        # Dense (B, Hq, Nq), varlen (Hq, total_q); row stride 1.
        return (0, self.total_q) if self.varlen else (self.heads_q * self.seqlen_q, self.seqlen_q)

    def new_lse(self, device):
        shape = (self.heads_q, self.total_q) if self.varlen else (self.batch, self.heads_q, self.seqlen_q)
        return torch.empty(shape, dtype=torch.float32, device=device)

    def scalars(self):
        """seed_ptr .. seqlen_k_bucket of the kernels. The threshold goes as an int32 bit pattern:
        Triton types an int argument by its value (i32, i64, u64), and a type that changed with
        dropout_p would mean another compilation."""
        return (self.seed, _int32_bits(self.dropout_threshold), self.dropout_scale,
                triton.next_power_of_2(max(self.seqlen_q, 1)), triton.next_power_of_2(max(self.seqlen_k, 1)))

    def grid(self, seqlen, block, heads):
        return lambda meta: (triton.cdiv(seqlen, meta[block]), heads, self.batch)


def _check_lengths(problem):
    """Refuses packed sequences longer than max_seqlen_q / max_seqlen_k where cu_seqlens can be read for free
    (host tensors: the interpreter). dlkernels.attention checks this in eager mode but not under torch.compile,
    where cu_seqlens cannot be read while tracing; on a GPU the kernels fill such sequences with NaN."""
    if not problem.varlen or problem.cu_seqlens_q.device.type != "cpu":
        return
    for name, cu_seqlens, bound in (("max_seqlen_q", problem.cu_seqlens_q, problem.seqlen_q),
                                    ("max_seqlen_k", problem.cu_seqlens_k, problem.seqlen_k)):
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        longest = int(lengths.max()) if lengths.numel() else 0
        if longest > bound:
            raise ValueError(f"attention (triton): {name}={bound} is smaller than the longest sequence in "
                             f"cu_seqlens ({longest} tokens, sequence {int(lengths.argmax())})")


def attention_forward(q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                      causal_bottom_right, dropout_p, seed, allow_tf32):
    """(out, lse): out like q (empty_like), lse float32, dense (B, Hq, Nq) or varlen (Hq, total_q).
    Inputs are validated by dlkernels.ops.attention; see dlk/attention.h for the semantics."""
    problem = _Problem(q, k, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                       causal_bottom_right, dropout_p, seed, allow_tf32)
    _check_lengths(problem)
    out = torch.empty_like(q)
    lse = problem.new_lse(q.device)
    if q.numel() == 0 or problem.batch == 0:
        return out, lse
    if problem.empty_keys:  # no key at all: every row is empty (and k, v have no storage to point at)
        return out.zero_(), lse.fill_(float("-inf"))
    use_tma = _use_tma(problem, q, k, v)
    if use_tma:
        _ensure_tma_allocator()
    _attn_fwd_kernel[problem.grid(problem.seqlen_q, "BLOCK_M", problem.heads_q)](
        q, k, v, problem.bias, out, lse, problem.cu_seqlens_q, problem.cu_seqlens_k,
        problem.strides(q), problem.strides(k), problem.strides(v), problem.strides(out), problem.bias_strides,
        problem.lse_strides(),
        problem.seqlen_q, problem.seqlen_k, problem.total_q, problem.heads_q // problem.heads_kv,
        problem.scale, *problem.scalars(), **problem.meta, USE_TMA=use_tma,
    )
    return out, lse


def attention_backward(grad_out, q, k, v, out, lse, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       scale, causal, causal_bottom_right, dropout_p, seed, allow_tf32):
    """(grad_q, grad_k, grad_v), each empty_like its input and fully written; deterministic (no
    atomics: dK / dV sum the query heads of a GQA group in order)."""
    problem = _Problem(q, k, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                       causal_bottom_right, dropout_p, seed, allow_tf32)
    _check_lengths(problem)
    grad_out, out, lse = _unit_stride(grad_out), _unit_stride(out), lse.contiguous()
    grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if problem.batch == 0 or q.numel() == 0 or problem.empty_keys:
        return grad_q.zero_(), grad_k.zero_(), grad_v.zero_()

    delta = torch.empty_like(lse)
    meta, group_size = problem.meta, problem.heads_q // problem.heads_kv
    _attn_bwd_delta_kernel[(triton.cdiv(problem.seqlen_q, _DELTA_BLOCK_M), problem.heads_q, problem.batch)](
        out, grad_out, delta, problem.cu_seqlens_q, problem.strides(out), problem.strides(grad_out),
        problem.lse_strides(), problem.seqlen_q,
        HEAD_DIM=meta["HEAD_DIM"], BLOCK_D=meta["BLOCK_D"], VARLEN=meta["VARLEN"],
        SUM_DTYPE=tl.float64 if q.dtype == torch.float32 else tl.float32, BLOCK_M=_DELTA_BLOCK_M,
    )
    common = (problem.seqlen_q, problem.seqlen_k, problem.total_q, group_size, problem.scale, *problem.scalars())
    _attn_bwd_dkdv_kernel[problem.grid(problem.seqlen_k, "BLOCK_N", problem.heads_kv)](
        q, k, v, problem.bias, grad_out, lse, delta, grad_k, grad_v, problem.cu_seqlens_q, problem.cu_seqlens_k,
        problem.strides(q), problem.strides(k), problem.strides(v), problem.bias_strides, problem.strides(grad_out),
        problem.lse_strides(), problem.strides(grad_k), problem.strides(grad_v),
        *common, **meta,
    )
    _attn_bwd_dq_kernel[problem.grid(problem.seqlen_q, "BLOCK_M", problem.heads_q)](
        q, k, v, problem.bias, grad_out, lse, delta, grad_q, problem.cu_seqlens_q, problem.cu_seqlens_k,
        problem.strides(q), problem.strides(k), problem.strides(v), problem.bias_strides, problem.strides(grad_out),
        problem.lse_strides(), problem.strides(grad_q),
        *common, **meta,
    )
    return grad_q, grad_k, grad_v

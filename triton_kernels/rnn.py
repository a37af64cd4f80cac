"""Triton kernels for the recurrent part of one LSTM / GRU layer and direction: forward and BPTT.

The contract (shapes, gate order, lengths, reverse, saved tensors, dtypes) is
csrc/include/dlk/rnn.h; the math below mirrors its step formulas. x_proj = x W_ih^T (+ biases) and
the weight gradients are large GEMMs that the Python layer runs with torch; these kernels run the
sequential part.

One launch per step. The recurrence makes step t depend on every hidden unit of step t-1, so the
launch boundary is the grid-wide barrier: the launcher loops over the T steps.
- Forward: a program owns BLOCK_B batch rows x BLOCK_H hidden units j, with all G gates of those
  units, so gh = h_{t-1} W_hh^T (tl.dot, one accumulator per gate) feeds the gate math and the
  state update without leaving registers; it writes h_all[t], c_all[t] and saved[t] (and h_n,
  c_n at each row's last valid step).
- Backward, in the reverse order: the program of (rows, units j) first finishes the previous
  launch's recurrent GEMM for its tile, dh[:, j] = carry + grad_gh_{t+1} W_hh[:, j] (the GEMM runs
  over all G*H gate gradients, which only the whole previous grid has), then the fused pointwise
  gate gradients of step t. The carries (dh's direct term, dc) stay in fp32 (fp64) and ping-pong
  between two buffers, so every launch is idempotent, which autotuning needs. A last launch forms
  grad_h0 and grad_c0.

State before a step. h_all[t, b] is 0 at invalid steps, so the h a step starts from is
h_all[prev] only if the previous step was valid for b, and otherwise (no previous step, or, in
reverse, a sequence that has not started yet) h0. c_all holds the state at every step, invalid
ones included, so c comes from c_all[prev], or c0 at the first step.

Launch cost. Each step is one Python-side launch through the autotuner (some 10-40 us of CPU on a
current host), and at the issue's (B, H) = (64, 512) the step's GEMM is only ~70 MFLOP (a few us of
H100 time), so the loop is launch bound: capture it in a CUDA graph where that matters. A
persistent single-launch kernel (loop over t inside, grid-wide barrier through a global atomic
counter) is not implemented: Triton has no cooperative launch, so nothing guarantees that all
programs are resident at once and a spin barrier can deadlock, and the interpreter runs programs
one after another, so such a kernel could not be tested on CPU at all.
"""
import torch
import triton
import triton.language as tl

from ._common import (SUPPORTED_DTYPES, accumulator_dtype, autotune_configs, cast_for_store,
                                    dot_dtype)

# Tiles: BLOCK_B batch rows x BLOCK_H hidden units (x G gates), BLOCK_K-deep GEMM steps. Steps are
# small GEMMs, so tiles are small too: enough programs to spread (B, H) = (64, 512) over the SMs
# matters more than operand reuse. tl.dot needs every dimension >= 16. The first config is the only
# one the interpreter runs; it is small, so CPU tests see several tiles in every dimension.
_STEP_CONFIGS = autotune_configs([
    triton.Config({"BLOCK_B": 16, "BLOCK_H": 16, "BLOCK_K": 16}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_B": 16, "BLOCK_H": 32, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_B": 32, "BLOCK_H": 32, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_B": 64, "BLOCK_H": 16, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_B": 64, "BLOCK_H": 32, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_B": 64, "BLOCK_H": 64, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_B": 128, "BLOCK_H": 32, "BLOCK_K": 32}, num_warps=8, num_stages=3),
])
_MAX_TILE = max(max(c.kwargs.values()) for c in _STEP_CONFIGS)

_STEP_KEY = ["batch", "hidden", "IS_LSTM"]
# Time indices change every launch: specialising them (== 1, divisible by 16) would recompile.
_FWD_UNSPECIALIZED = ["time", "prev_time", "steps"]
_BWD_UNSPECIALIZED = ["time", "prev_time", "next_time", "steps"]


# --- shared pieces ------------------------------------------------------------------------------

@triton.jit
def _tanh(x):
    # sign(x) (1 - e) / (1 + e) with e = exp(-2|x|) <= 1 never overflows; below |x| = 1/16, where
    # 1 - e cancels, a Taylor polynomial (error < 1e-14 relative) keeps full relative accuracy.
    # libdevice.tanh would do, but the interpreter cannot run it, and CPU tests must run this code.
    e = tl.exp(-2.0 * tl.abs(x))
    large = (1.0 - e) / (1.0 + e)
    large = tl.where(x < 0, -large, large)
    x2 = x * x
    small = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))))
    return tl.where(tl.abs(x) < 0.0625, small, large)


@triton.jit
def _step_rows(lengths_ptr, rows, row_mask, time, prev_time, steps, HAS_LENGTHS: tl.constexpr,
               REVERSE: tl.constexpr):
    """Per batch row: whether step `time` is valid, whether the state comes from h_all[prev_time]
    (else from h0; prev_time = -1: no previous step), and whether `time` is the row's last step,
    the one that gives h_n / c_n (rnn_step_valid() and rnn_time_at() of dlk/rnn.h)."""
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_mask, other=0)
    else:
        length = tl.full(rows.shape, steps, tl.int32)
    valid = time < length
    prev_valid = (prev_time >= 0) & (prev_time < length)
    if REVERSE:
        final = valid & (time == 0)
    else:
        final = time == length - 1
    return valid, prev_valid, final


@triton.jit
def _load_prev_state(all_ptr, init_ptr, prev_time, batch, hidden, rows, cols, mask, use_prev):
    """[rows, cols] of the state before the step: all_ptr[prev_time] where use_prev (broadcast
    against the tile), else init_ptr (h0 or c0); the caller upcasts and selects. Two predicated
    loads: only one of them touches memory."""
    offsets = rows[:, None] * hidden + cols[None, :]
    prev = tl.load(all_ptr + prev_time.to(tl.int64) * batch * hidden + offsets, mask=mask & use_prev, other=0.0)
    init = tl.load(init_ptr + offsets, mask=mask & ~use_prev, other=0.0)
    return prev, init


@triton.jit
def _gate_dot(acc, h, w_hh_ptr, w_offsets, w_mask, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr):
    # One gate's part of h W_hh^T: fp32 (fp64) accumulation, exact fp32 products ("ieee", no TF32).
    w = tl.load(w_hh_ptr + w_offsets, mask=w_mask, other=0.0)
    return tl.dot(h, w.to(DOT_DTYPE), acc, input_precision="ieee", out_dtype=ACC_DTYPE)


@triton.jit
def _recurrent_grad(grad_gh_ptr, time, w_hh_ptr, batch, hidden, rows, row_mask, cols, col_mask,
                    GATES: tl.constexpr, INDEX_64: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """[rows, cols] of grad_gh[time] W_hh: the gradient reaching h_{time-1} through the gates. The
    fp32 gate gradients are rounded to the input dtype, so fp16 / bf16 run on tensor cores; the
    sum stays fp32."""
    width = GATES * hidden
    grad_gh_ptr += time.to(tl.int64) * batch * width
    acc = tl.zeros([BLOCK_B, BLOCK_H], ACC_DTYPE)
    for start in range(0, width, BLOCK_K):
        n = start + tl.arange(0, BLOCK_K)
        if INDEX_64:
            n = n.to(tl.int64)
        n_mask = n < width
        g = tl.load(grad_gh_ptr + rows[:, None] * width + n[None, :], mask=row_mask[:, None] & n_mask[None, :],
                    other=0.0)
        w = tl.load(w_hh_ptr + n[:, None] * hidden + cols[None, :], mask=n_mask[:, None] & col_mask[None, :],
                    other=0.0)
        acc = tl.dot(g.to(DOT_DTYPE), w.to(DOT_DTYPE), acc, input_precision="ieee", out_dtype=ACC_DTYPE)
    return acc


@triton.jit
def _tile(batch, hidden, INDEX_64: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    # Axis 0 walks hidden tiles (no grid limit), axis 1 batch tiles.
    cols = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < batch
    col_mask = cols < hidden
    if INDEX_64:
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    return rows, row_mask, cols, col_mask


# --- forward ------------------------------------------------------------------------------------

@triton.autotune(configs=_STEP_CONFIGS, key=_STEP_KEY)
@triton.jit(do_not_specialize=_FWD_UNSPECIALIZED)
def _rnn_fwd_step_kernel(
    x_proj_ptr, w_hh_ptr, b_hh_ptr, h0_ptr, c0_ptr, lengths_ptr,
    h_all_ptr, c_all_ptr, h_n_ptr, c_n_ptr, saved_ptr,
    time, prev_time, steps, batch, hidden,
    IS_LSTM: tl.constexpr, HAS_B_HH: tl.constexpr, HAS_LENGTHS: tl.constexpr, REVERSE: tl.constexpr,
    TRAINING: tl.constexpr, INDEX_64: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    GATES: tl.constexpr = 4 if IS_LSTM else 3
    rows, row_mask, cols, col_mask = _tile(batch, hidden, INDEX_64, BLOCK_B, BLOCK_H)
    valid, prev_valid, final = _step_rows(lengths_ptr, rows, row_mask, time, prev_time, steps, HAS_LENGTHS, REVERSE)

    # gh = h_{t-1} W_hh^T for the G gates of units `cols`: gate g's weights are rows g*H + cols of
    # W_hh, read as [K, units] tiles.
    gh_0 = tl.zeros([BLOCK_B, BLOCK_H], ACC_DTYPE)
    gh_1 = tl.zeros([BLOCK_B, BLOCK_H], ACC_DTYPE)
    gh_2 = tl.zeros([BLOCK_B, BLOCK_H], ACC_DTYPE)
    gh_3 = tl.zeros([BLOCK_B, BLOCK_H], ACC_DTYPE)
    for start in range(0, hidden, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        k_mask = k < hidden
        prev, init = _load_prev_state(h_all_ptr, h0_ptr, prev_time, batch, hidden, rows, k,
                                      row_mask[:, None] & k_mask[None, :], prev_valid[:, None])
        h = tl.where(prev_valid[:, None], prev.to(DOT_DTYPE), init.to(DOT_DTYPE))
        w_mask = k_mask[:, None] & col_mask[None, :]
        gh_0 = _gate_dot(gh_0, h, w_hh_ptr, cols[None, :] * hidden + k[:, None], w_mask, DOT_DTYPE, ACC_DTYPE)
        gh_1 = _gate_dot(gh_1, h, w_hh_ptr, (cols[None, :] + hidden) * hidden + k[:, None], w_mask,
                         DOT_DTYPE, ACC_DTYPE)
        gh_2 = _gate_dot(gh_2, h, w_hh_ptr, (cols[None, :] + 2 * hidden) * hidden + k[:, None], w_mask,
                         DOT_DTYPE, ACC_DTYPE)
        if IS_LSTM:
            gh_3 = _gate_dot(gh_3, h, w_hh_ptr, (cols[None, :] + 3 * hidden) * hidden + k[:, None], w_mask,
                             DOT_DTYPE, ACC_DTYPE)

    # Gate math and state update in the accumulator dtype.
    mask = row_mask[:, None] & col_mask[None, :]
    valid_2d = valid[:, None]
    width = GATES * hidden
    step = time.to(tl.int64) * batch  # rows before this step's first one
    state_offsets = rows[:, None] * hidden + cols[None, :]
    x_ptrs = x_proj_ptr + step * width + rows[:, None] * width + cols[None, :]  # gate 0; gate g at + g*H
    x_0 = tl.load(x_ptrs, mask=mask, other=0.0).to(ACC_DTYPE)
    x_1 = tl.load(x_ptrs + hidden, mask=mask, other=0.0).to(ACC_DTYPE)
    x_2 = tl.load(x_ptrs + 2 * hidden, mask=mask, other=0.0).to(ACC_DTYPE)
    if IS_LSTM:
        x_3 = tl.load(x_ptrs + 3 * hidden, mask=mask, other=0.0).to(ACC_DTYPE)
        gate_i = tl.sigmoid(x_0 + gh_0)
        gate_f = tl.sigmoid(x_1 + gh_1)
        gate_g = _tanh(x_2 + gh_2)
        gate_o = tl.sigmoid(x_3 + gh_3)
        prev, init = _load_prev_state(c_all_ptr, c0_ptr, prev_time, batch, hidden, rows, cols, mask, prev_time >= 0)
        c_prev = tl.where(prev_time >= 0, prev.to(ACC_DTYPE), init.to(ACC_DTYPE))
        c = gate_f * c_prev + gate_i * gate_g
        h = gate_o * _tanh(c)
        c = tl.where(valid_2d, c, c_prev)  # an invalid step leaves the state unchanged
        tl.store(c_all_ptr + step * hidden + state_offsets, c, mask=mask)
        tl.store(c_n_ptr + state_offsets, cast_for_store(c, c_n_ptr.dtype.element_ty), mask=mask & final[:, None])
        saved_0, saved_1, saved_2, saved_3 = gate_i, gate_f, gate_g, gate_o
    else:
        if HAS_B_HH:
            gh_0 += tl.load(b_hh_ptr + cols, mask=col_mask, other=0.0).to(ACC_DTYPE)[None, :]
            gh_1 += tl.load(b_hh_ptr + hidden + cols, mask=col_mask, other=0.0).to(ACC_DTYPE)[None, :]
            gh_2 += tl.load(b_hh_ptr + 2 * hidden + cols, mask=col_mask, other=0.0).to(ACC_DTYPE)[None, :]
        gate_r = tl.sigmoid(x_0 + gh_0)
        gate_z = tl.sigmoid(x_1 + gh_1)
        gate_n = _tanh(x_2 + gate_r * gh_2)  # gh_2 = hn = h W_hn^T + b_hn
        prev, init = _load_prev_state(h_all_ptr, h0_ptr, prev_time, batch, hidden, rows, cols, mask,
                                      prev_valid[:, None])
        h_prev = tl.where(prev_valid[:, None], prev.to(ACC_DTYPE), init.to(ACC_DTYPE))
        h = (1.0 - gate_z) * gate_n + gate_z * h_prev
        saved_0, saved_1, saved_2, saved_3 = gate_r, gate_z, gate_n, gh_2

    tl.store(h_all_ptr + step * hidden + state_offsets, cast_for_store(tl.where(valid_2d, h, 0.0),
                                                                       h_all_ptr.dtype.element_ty), mask=mask)
    tl.store(h_n_ptr + state_offsets, cast_for_store(h, h_n_ptr.dtype.element_ty), mask=mask & final[:, None])
    if TRAINING:  # saved (T, B, 4H): LSTM (i, f, g, o), GRU (r, z, n, hn)
        saved_ptrs = saved_ptr + step * (4 * hidden) + rows[:, None] * (4 * hidden) + cols[None, :]
        tl.store(saved_ptrs, saved_0, mask=mask)
        tl.store(saved_ptrs + hidden, saved_1, mask=mask)
        tl.store(saved_ptrs + 2 * hidden, saved_2, mask=mask)
        tl.store(saved_ptrs + 3 * hidden, saved_3, mask=mask)


# --- backward -----------------------------------------------------------------------------------

@triton.autotune(configs=_STEP_CONFIGS, key=_STEP_KEY)
@triton.jit(do_not_specialize=_BWD_UNSPECIALIZED)
def _rnn_bwd_step_kernel(
    grad_h_all_ptr, w_hh_ptr, h0_ptr, c0_ptr, h_all_ptr, c_all_ptr, saved_ptr, lengths_ptr,
    grad_x_proj_ptr, grad_gh_ptr,  # LSTM: grad_gh_ptr is grad_x_proj_ptr
    dh_in_ptr, dc_in_ptr, dh_out_ptr, dc_out_ptr,  # (B, H) carries in the accumulator dtype
    time, prev_time, next_time, steps, batch, hidden,
    IS_LSTM: tl.constexpr, HAS_GRAD_H_ALL: tl.constexpr, HAS_LENGTHS: tl.constexpr, REVERSE: tl.constexpr,
    INDEX_64: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Step `time` of BPTT. prev_time: the step before it in the forward order (-1: none);
    next_time: the step the previous launch processed (-1: this is the first launch)."""
    GATES: tl.constexpr = 4 if IS_LSTM else 3
    rows, row_mask, cols, col_mask = _tile(batch, hidden, INDEX_64, BLOCK_B, BLOCK_H)
    valid, prev_valid, _ = _step_rows(lengths_ptr, rows, row_mask, time, prev_time, steps, HAS_LENGTHS, REVERSE)
    mask = row_mask[:, None] & col_mask[None, :]
    valid_2d = valid[:, None]
    step = time.to(tl.int64) * batch
    state_offsets = rows[:, None] * hidden + cols[None, :]

    # dh reaching h_t: the direct term the previous launch left (or grad_h_n), plus what flows
    # through the next step's gates, grad_gh[next_time] W_hh, which needed that whole launch done.
    dh = tl.load(dh_in_ptr + state_offsets, mask=mask, other=0.0)
    if next_time >= 0:
        dh += _recurrent_grad(grad_gh_ptr, next_time, w_hh_ptr, batch, hidden, rows, row_mask, cols, col_mask,
                              GATES, INDEX_64, DOT_DTYPE, ACC_DTYPE, BLOCK_B, BLOCK_H, BLOCK_K)
    if HAS_GRAD_H_ALL:  # h_all[t] is a constant 0 at an invalid step: its gradient stops there
        dh += tl.load(grad_h_all_ptr + step * hidden + state_offsets, mask=mask & valid_2d,
                      other=0.0).to(ACC_DTYPE)

    saved_ptrs = saved_ptr + step * (4 * hidden) + rows[:, None] * (4 * hidden) + cols[None, :]
    saved_0 = tl.load(saved_ptrs, mask=mask, other=0.0)
    saved_1 = tl.load(saved_ptrs + hidden, mask=mask, other=0.0)
    saved_2 = tl.load(saved_ptrs + 2 * hidden, mask=mask, other=0.0)
    saved_3 = tl.load(saved_ptrs + 3 * hidden, mask=mask, other=0.0)
    if IS_LSTM:
        gate_i, gate_f, gate_g, gate_o = saved_0, saved_1, saved_2, saved_3
        c = tl.load(c_all_ptr + step * hidden + state_offsets, mask=mask, other=0.0)
        prev, init = _load_prev_state(c_all_ptr, c0_ptr, prev_time, batch, hidden, rows, cols, mask, prev_time >= 0)
        c_prev = tl.where(prev_time >= 0, prev.to(ACC_DTYPE), init.to(ACC_DTYPE))
        tanh_c = _tanh(c)
        dc_in = tl.load(dc_in_ptr + state_offsets, mask=mask, other=0.0)
        dc = dc_in + dh * gate_o * (1.0 - tanh_c * tanh_c)
        # Pre-activation gradients: sigmoid' = s (1 - s), tanh' = 1 - t^2.
        grad_0 = dc * gate_g * gate_i * (1.0 - gate_i)
        grad_1 = dc * c_prev * gate_f * (1.0 - gate_f)
        grad_2 = dc * gate_i * (1.0 - gate_g * gate_g)
        grad_3 = dh * tanh_c * gate_o * (1.0 - gate_o)
        tl.store(dc_out_ptr + state_offsets, tl.where(valid_2d, dc * gate_f, dc_in), mask=mask)
        dh_direct = tl.zeros([BLOCK_B, BLOCK_H], ACC_DTYPE)  # h_{t-1} reaches h_t only through the gates
    else:
        gate_r, gate_z, gate_n, hn = saved_0, saved_1, saved_2, saved_3
        prev, init = _load_prev_state(h_all_ptr, h0_ptr, prev_time, batch, hidden, rows, cols, mask,
                                      prev_valid[:, None])
        h_prev = tl.where(prev_valid[:, None], prev.to(ACC_DTYPE), init.to(ACC_DTYPE))
        grad_n_pre = dh * (1.0 - gate_z) * (1.0 - gate_n * gate_n)
        grad_0 = grad_n_pre * hn * gate_r * (1.0 - gate_r)
        grad_1 = dh * (h_prev - gate_n) * gate_z * (1.0 - gate_z)
        grad_2 = grad_n_pre
        grad_3 = gate_r * grad_n_pre  # d/d hn: the n gate's share of grad_gh
        dh_direct = dh * gate_z

    # Invalid steps: zero gate gradients, and the carries pass through unchanged.
    width = GATES * hidden
    grad_offsets = step * width + rows[:, None] * width + cols[None, :]
    grad_0 = tl.where(valid_2d, grad_0, 0.0)
    grad_1 = tl.where(valid_2d, grad_1, 0.0)
    grad_2 = tl.where(valid_2d, grad_2, 0.0)
    grad_3 = tl.where(valid_2d, grad_3, 0.0)
    tl.store(grad_x_proj_ptr + grad_offsets, grad_0, mask=mask)
    tl.store(grad_x_proj_ptr + grad_offsets + hidden, grad_1, mask=mask)
    tl.store(grad_x_proj_ptr + grad_offsets + 2 * hidden, grad_2, mask=mask)
    if IS_LSTM:
        tl.store(grad_x_proj_ptr + grad_offsets + 3 * hidden, grad_3, mask=mask)
    else:
        tl.store(grad_gh_ptr + grad_offsets, grad_0, mask=mask)
        tl.store(grad_gh_ptr + grad_offsets + hidden, grad_1, mask=mask)
        tl.store(grad_gh_ptr + grad_offsets + 2 * hidden, grad_3, mask=mask)
    tl.store(dh_out_ptr + state_offsets, tl.where(valid_2d, dh_direct, dh), mask=mask)


@triton.autotune(configs=_STEP_CONFIGS, key=_STEP_KEY)
@triton.jit(do_not_specialize=["time"])
def _rnn_bwd_finish_kernel(
    grad_gh_ptr, w_hh_ptr, dh_in_ptr, dc_in_ptr, grad_h0_ptr, grad_c0_ptr,
    time, batch, hidden,
    IS_LSTM: tl.constexpr, INDEX_64: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_h0 = carry + grad_gh[time] W_hh, time being the step the last launch processed (the
    forward's first); grad_c0 = the dc carry."""
    GATES: tl.constexpr = 4 if IS_LSTM else 3
    rows, row_mask, cols, col_mask = _tile(batch, hidden, INDEX_64, BLOCK_B, BLOCK_H)
    mask = row_mask[:, None] & col_mask[None, :]
    state_offsets = rows[:, None] * hidden + cols[None, :]
    dh = tl.load(dh_in_ptr + state_offsets, mask=mask, other=0.0)
    dh += _recurrent_grad(grad_gh_ptr, time, w_hh_ptr, batch, hidden, rows, row_mask, cols, col_mask,
                          GATES, INDEX_64, DOT_DTYPE, ACC_DTYPE, BLOCK_B, BLOCK_H, BLOCK_K)
    tl.store(grad_h0_ptr + state_offsets, cast_for_store(dh, grad_h0_ptr.dtype.element_ty), mask=mask)
    if IS_LSTM:
        dc = tl.load(dc_in_ptr + state_offsets, mask=mask, other=0.0)
        tl.store(grad_c0_ptr + state_offsets, cast_for_store(dc, grad_c0_ptr.dtype.element_ty), mask=mask)


# --- launchers ----------------------------------------------------------------------------------


def _accumulator(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _needs_int64(batch, hidden):
    # In-step offsets: a (B, 4H) block of x_proj / saved / gradients and W_hh (4H, H), plus a tile
    # of slack for masked lanes. Offsets of whole steps (t * B * 4H) are always 64-bit.
    return max((batch + _MAX_TILE) * 4 * hidden, (4 * hidden + _MAX_TILE) * (hidden + _MAX_TILE)) >= 2**31


def _time_at(step, steps, reverse):
    # rnn_time_at() of dlk/rnn.h: the time index processed at iteration `step`.
    return steps - 1 - step if reverse else step


def _is_lstm(op, cell):
    if cell not in ("lstm", "gru"):
        raise ValueError(f"{op} (triton): cell must be 'lstm' or 'gru', got {cell!r}")
    return cell == "lstm"


def _check(op, name, tensor, shape, dtype, device):
    if (not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype
            or tensor.device != device or not tensor.is_contiguous()):
        got = (f"{tensor.dtype} of shape {tuple(tensor.shape)} on {tensor.device}"
               + ("" if tensor.is_contiguous() else " (not contiguous)")) if isinstance(tensor, torch.Tensor) \
            else type(tensor).__name__
        raise ValueError(f"{op} (triton): {name} must be a contiguous {dtype} tensor of shape {tuple(shape)} on "
                         f"{device}, got {got}")


def _check_only_for(op, name, tensor, is_lstm, lstm_only):
    """c0 / grad_c_n exist for LSTM only and b_hh for GRU only (LSTM's x_proj includes it)."""
    wanted = is_lstm if lstm_only else not is_lstm
    if not wanted and tensor is not None:
        raise ValueError(f"{op} (triton): {name} must be None for cell '{'lstm' if is_lstm else 'gru'}', got a "
                         f"tensor of shape {tuple(tensor.shape)}")


def _check_lengths(op, lengths, batch, device):
    if lengths is not None:
        _check(op, "lengths", lengths, (batch,), torch.int32, device)


def _grid(batch, hidden):
    return lambda meta: (triton.cdiv(hidden, meta["BLOCK_H"]), triton.cdiv(batch, meta["BLOCK_B"]))


def rnn_layer_forward(cell, x_proj, w_hh, b_hh, h0, c0, lengths, reverse, training):
    """Runs one LSTM / GRU layer and direction over the sequence (dlk/rnn.h, RnnFwdParams).

    x_proj (T, B, G*H), w_hh (G*H, H), h0 (B, H), c0 (B, H) (LSTM) in one dtype; b_hh (3H,) GRU
    only, may be None; lengths int32 (B,) or None. Returns (h_all (T, B, H), c_all (T, B, H) in the
    accumulator dtype, h_n, c_n (B, H), saved (T, B, 4H) in the accumulator dtype); c_all and c_n
    are empty (0,) in the input dtype for GRU, saved (0,) when not training (as the C++ binding)."""
    op = "rnn_layer_forward"
    is_lstm = _is_lstm(op, cell)
    gates = 4 if is_lstm else 3
    if not isinstance(x_proj, torch.Tensor) or x_proj.dim() != 3 or x_proj.shape[2] % gates:
        raise ValueError(f"{op} (triton): x_proj must be a 3-D (T, B, {gates}*H) tensor, got "
                         f"{tuple(x_proj.shape) if isinstance(x_proj, torch.Tensor) else type(x_proj).__name__}")
    steps, batch, width = x_proj.shape
    hidden = width // gates
    dtype, device = x_proj.dtype, x_proj.device
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{op} (triton): dtype must be one of float16, bfloat16, float32, float64, got {dtype}")
    _check(op, "x_proj", x_proj, x_proj.shape, dtype, device)
    _check(op, "w_hh", w_hh, (width, hidden), dtype, device)
    _check(op, "h0", h0, (batch, hidden), dtype, device)
    _check_only_for(op, "b_hh", b_hh, is_lstm, lstm_only=False)
    if b_hh is not None:
        _check(op, "b_hh", b_hh, (width,), dtype, device)
    _check_only_for(op, "c0", c0, is_lstm, lstm_only=True)
    if is_lstm:
        _check(op, "c0", c0, (batch, hidden), dtype, device)
    _check_lengths(op, lengths, batch, device)

    acc = _accumulator(dtype)
    h_all = torch.empty((steps, batch, hidden), dtype=dtype, device=device)
    c_all = torch.empty((steps, batch, hidden), dtype=acc, device=device) if is_lstm else \
        torch.empty(0, dtype=dtype, device=device)
    h_n = torch.empty((batch, hidden), dtype=dtype, device=device)
    c_n = torch.empty((batch, hidden) if is_lstm else (0,), dtype=dtype, device=device)
    saved = torch.empty((steps, batch, 4 * hidden) if training else (0,), dtype=acc, device=device)
    if steps == 0 or batch * hidden == 0:  # nothing runs: the final state is the initial one
        h_n.copy_(h0)
        if is_lstm:
            c_n.copy_(c0)
        return h_all, c_all, h_n, c_n, saved

    flags = {"IS_LSTM": is_lstm, "HAS_B_HH": b_hh is not None, "HAS_LENGTHS": lengths is not None,
             "REVERSE": bool(reverse), "TRAINING": bool(training), "INDEX_64": _needs_int64(batch, hidden),
             "DOT_DTYPE": dot_dtype(dtype), "ACC_DTYPE": accumulator_dtype(dtype)}
    # Arguments a flag switches off are never read or written; any tensor stands in for them.
    b_hh = b_hh if b_hh is not None else w_hh
    c0 = c0 if is_lstm else h0
    lengths = lengths if lengths is not None else h0
    c_all_arg, c_n_arg = (c_all, c_n) if is_lstm else (h_all, h_n)
    saved_arg = saved if training else h_all
    grid = _grid(batch, hidden)
    prev_time = -1
    for step in range(steps):
        time = _time_at(step, steps, reverse)
        _rnn_fwd_step_kernel[grid](
            x_proj, w_hh, b_hh, h0, c0, lengths,
            h_all, c_all_arg, h_n, c_n_arg, saved_arg,
            time, prev_time, steps, batch, hidden,
            **flags,
        )
        prev_time = time
    return h_all, c_all, h_n, c_n, saved


def rnn_layer_backward(cell, grad_h_all, grad_h_n, grad_c_n, w_hh, h0, c0, h_all, c_all, saved, lengths, reverse):
    """Backpropagation through time of rnn_layer_forward (dlk/rnn.h, RnnBwdParams).

    grad_h_all (T, B, H), grad_h_n, grad_c_n (B, H) may be None (zeros); h_all, c_all, saved are
    the forward's (saved from training=True). Returns (grad_x_proj (T, B, G*H), grad_gh (T, B, G*H;
    GRU only, else empty) in the accumulator dtype, grad_h0, grad_c0 (B, H; grad_c0 LSTM only))."""
    op = "rnn_layer_backward"
    is_lstm = _is_lstm(op, cell)
    gates = 4 if is_lstm else 3
    if not isinstance(h_all, torch.Tensor) or h_all.dim() != 3:
        raise ValueError(f"{op} (triton): h_all must be a 3-D (T, B, H) tensor, got "
                         f"{tuple(h_all.shape) if isinstance(h_all, torch.Tensor) else type(h_all).__name__}")
    steps, batch, hidden = h_all.shape
    width = gates * hidden
    dtype, device = h_all.dtype, h_all.device
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{op} (triton): dtype must be one of float16, bfloat16, float32, float64, got {dtype}")
    acc = _accumulator(dtype)
    _check(op, "h_all", h_all, h_all.shape, dtype, device)
    _check(op, "w_hh", w_hh, (width, hidden), dtype, device)
    _check(op, "h0", h0, (batch, hidden), dtype, device)
    if saved is not None and saved.numel() == 0 and steps * batch * hidden > 0:
        raise ValueError(f"{op} (triton): saved is empty: run rnn_layer_forward with training=True")
    _check(op, "saved", saved, (steps, batch, 4 * hidden), acc, device)
    _check_only_for(op, "c0", c0, is_lstm, lstm_only=True)
    _check_only_for(op, "grad_c_n", grad_c_n, is_lstm, lstm_only=True)
    if is_lstm:
        _check(op, "c0", c0, (batch, hidden), dtype, device)
        _check(op, "c_all", c_all, (steps, batch, hidden), acc, device)
        if grad_c_n is not None:
            _check(op, "grad_c_n", grad_c_n, (batch, hidden), dtype, device)
    if grad_h_all is not None:
        _check(op, "grad_h_all", grad_h_all, (steps, batch, hidden), dtype, device)
    if grad_h_n is not None:
        _check(op, "grad_h_n", grad_h_n, (batch, hidden), dtype, device)
    _check_lengths(op, lengths, batch, device)

    grad_x_proj = torch.empty((steps, batch, width), dtype=acc, device=device)
    grad_gh = torch.empty((0,) if is_lstm else (steps, batch, width), dtype=acc, device=device)
    grad_h0 = torch.empty((batch, hidden), dtype=dtype, device=device)
    grad_c0 = torch.empty((batch, hidden) if is_lstm else (0,), dtype=dtype, device=device)
    # Carries in the accumulator dtype, each a pair of buffers that launches alternate between (read
    # one, write the other); copies, so the caller's gradients are never written.
    dh_in, dh_out = (torch.zeros((batch, hidden), dtype=acc, device=device) for _ in range(2))
    if grad_h_n is not None:
        dh_in.copy_(grad_h_n)
    dc_in, dc_out = (torch.zeros((batch, hidden) if is_lstm else (0,), dtype=acc, device=device) for _ in range(2))
    if grad_c_n is not None:
        dc_in.copy_(grad_c_n)
    if steps == 0 or batch * hidden == 0:  # no step: the gradients pass straight through
        grad_h0.copy_(dh_in)
        if is_lstm:
            grad_c0.copy_(dc_in)
        return grad_x_proj.zero_(), grad_gh.zero_(), grad_h0, grad_c0

    flags = {"IS_LSTM": is_lstm, "INDEX_64": _needs_int64(batch, hidden), "DOT_DTYPE": dot_dtype(dtype),
             "ACC_DTYPE": accumulator_dtype(dtype)}
    gate_grads = grad_x_proj if is_lstm else grad_gh  # what the recurrent GEMM multiplies with W_hh
    grid = _grid(batch, hidden)
    next_time = -1
    for step in reversed(range(steps)):
        time = _time_at(step, steps, reverse)
        prev_time = _time_at(step - 1, steps, reverse) if step > 0 else -1
        _rnn_bwd_step_kernel[grid](
            grad_h_all if grad_h_all is not None else h_all, w_hh, h0, c0 if is_lstm else h0, h_all,
            c_all if is_lstm else h_all, saved, lengths if lengths is not None else h0,
            grad_x_proj, gate_grads, dh_in, dc_in if is_lstm else dh_in, dh_out, dc_out if is_lstm else dh_out,
            time, prev_time, next_time, steps, batch, hidden,
            HAS_GRAD_H_ALL=grad_h_all is not None, HAS_LENGTHS=lengths is not None, REVERSE=bool(reverse),
            **flags,
        )
        dh_in, dh_out = dh_out, dh_in
        dc_in, dc_out = dc_out, dc_in
        next_time = time
    _rnn_bwd_finish_kernel[grid](
        gate_grads, w_hh, dh_in, dc_in if is_lstm else dh_in, grad_h0, grad_c0 if is_lstm else grad_h0,
        next_time, batch, hidden,
        **flags,
    )
    return grad_x_proj, grad_gh, grad_h0, grad_c0

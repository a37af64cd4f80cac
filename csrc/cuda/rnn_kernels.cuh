// LSTM/GRU step kernels (launchers in rnn.cu; contract and step math in dlk/rnn.h).
//
// Work decomposition, shared by the forward and the backward, per-step and persistent:
//   A CTA (4 warps) owns kHiddenTile = 16 hidden units j0 .. j0+15 and kBatchTile batch rows
//   b0 .. b0+kBatchTile-1 and computes, per step, a small GEMM "rows x batch" with the weights as
//   the row operand:
//     forward   gh^T  (G*16 gate rows of W_hh: row g*H + j)     x  h_{t-1}^T     K = H
//     backward  dh^T  (16 rows of W_hh^T: row j)                x  grad_gh^T     K = G*H
//   Putting the weights on the mma's M side (16 rows) and the batch on its N side (8 columns)
//   wastes little for the small batches RNNs run with, and both operands are then read row-major,
//   two consecutive k per 32-bit register, straight from global memory (no transposes).
//   The 4 warps split K (warp w takes k-steps w, w+4, ...); their fp32 partials meet in shared
//   memory and the pointwise phase sums them in warp order (deterministic), so a thread holds all
//   G gates of its (j, b) and the cell update, the stores of h/c/saved and the carried gradients
//   stay local.
// Every function here that a host harness can run is DLK_HOST_DEVICE: the fragment index maps,
// the operand loads, the SIMT staging, the pointwise math. Only the mma, the barriers and the
// kernels themselves are device-only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.cuh"
#include "dlk/rnn.h"
#include "tensor_core.cuh"

namespace dlk {
namespace rnn {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kHiddenTile = 16;  // the M of one m16n8k16 tile
constexpr int kKStep = 16;       // k per mma and per SIMT staging chunk
constexpr int kMaxGates = 4;

template <typename T> constexpr bool kUsesTensorCores = sizeof(T) == 2;  // __half, __nv_bfloat16

DLK_HOST_DEVICE constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
DLK_HOST_DEVICE constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Static shape of one CTA's step.
template <typename T, RnnCell kCell, bool kBackward, int kNTiles>
struct StepTile {
  using Acc = AccumulateType<T>;
  static constexpr bool kTensorCores = kUsesTensorCores<T>;
  static constexpr int kGates = kCell == RnnCell::kLSTM ? 4 : 3;
  static constexpr int kRowTiles = kBackward ? 1 : kGates;  // 16-row tiles of the weight operand
  static constexpr int kRows = kRowTiles * kHiddenTile;
  static constexpr int kBatchTile = kNTiles * 8;
  // Partials are stored [warp][batch n][row]: the pointwise phase reads 16 consecutive rows per n
  // (conflict-free), and +4 spreads the mma fragment stores (n = 2 * quad) over distinct banks.
  static constexpr int kPartialLd = kRows + 4;
  static constexpr int64_t kPartialElems = int64_t(kWarps) * kBatchTile * kPartialLd;
  // SIMT: each warp stages a kKStep-wide chunk of both operands, rows padded to avoid conflicts.
  static constexpr int kStageLd = kKStep + 1;
  static constexpr int64_t kStageElemsPerWarp = int64_t(kRows + kBatchTile) * kStageLd;
  static constexpr int kSimtRowsPerLane = kRows / 8;         // rows lane % 8 + 8 i
  static constexpr int kSimtBatchPerLane = kBatchTile / 4;   // batch lane / 8 + 4 i
  static constexpr int64_t kPartialBytes = int64_t(sizeof(Acc)) * kPartialElems;
  static constexpr int64_t kStageBytes = kTensorCores ? 0 : int64_t(sizeof(Acc)) * kWarps * kStageElemsPerWarp;
  // Shared memory: partials and SIMT staging alias (a barrier separates them), then the step's
  // batch row pointers; the persistent kernels append their weight slice.
  static constexpr size_t kScratchBytes = size_t(round_up(kPartialBytes > kStageBytes ? kPartialBytes : kStageBytes, 16));
  static constexpr size_t kRowPointerBytes = sizeof(void*) * kBatchTile;
  static constexpr size_t kStepSmemBytes = kScratchBytes + kRowPointerBytes;
  // Persistent path: the CTA's weight rows in shared memory, k padded to a whole k-step plus 8
  // elements so that rows start on different banks.
  DLK_HOST_DEVICE static int64_t slice_ld(int64_t k_extent) { return round_up(k_extent, kKStep) + 8; }
  DLK_HOST_DEVICE static size_t persistent_smem_bytes(int64_t k_extent) {
    return kStepSmemBytes + size_t(round_up(int64_t(sizeof(T)) * kRows * slice_ld(k_extent), 16));
  }
};

// ---------------------------------------------------------------------------------------------
// Math in the accumulation type.

DLK_HOST_DEVICE float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
DLK_HOST_DEVICE double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
DLK_HOST_DEVICE float tanh_acc(float x) { return tanhf(x); }
DLK_HOST_DEVICE double tanh_acc(double x) { return tanh(x); }

// ---------------------------------------------------------------------------------------------
// Operands.

// The weight operand: kRowTiles tiles of 16 rows, row m of tile `tile` at
// base + (tile * tile_stride + m) * ld; rows m >= valid_rows (past the last hidden unit) read as 0.
template <typename T>
struct WeightRows {
  const T* base;
  int64_t ld;
  int64_t tile_stride;
  int valid_rows;
  DLK_HOST_DEVICE const T* row(int tile, int m) const {
    return m < valid_rows ? base + (tile * tile_stride + m) * ld : nullptr;
  }
};

// Forward batch operand of step s: h_{t-1} of batch row b0 + n, as stored in the input dtype: h_all
// at the previous time when that step was valid for b, else h0 (the first step, or a reversed
// sequence that starts at its own last valid step). nullptr past the batch.
template <typename T>
struct PrevHiddenRows {
  const T* h_all;
  const T* h0;
  const int* lengths;
  int64_t t_prev;  // -1 at the first step
  int64_t batch, hidden, b0;
  DLK_HOST_DEVICE const T* operator()(int n) const {
    const int64_t b = b0 + n;
    if (b >= batch) return nullptr;
    if (t_prev >= 0 && (lengths == nullptr || t_prev < lengths[b])) return h_all + (t_prev * batch + b) * hidden;
    return h0 + b * hidden;
  }
};

// Backward batch operand: the previous step's gate gradients (B, G*H) in the input dtype.
template <typename T>
struct GateGradRows {
  const T* grads;
  int64_t batch, ld, b0;
  DLK_HOST_DEVICE const T* operator()(int n) const { return b0 + n < batch ? grads + (b0 + n) * ld : nullptr; }
};

DLK_HOST_DEVICE uint32_t bits_of(__half v) {
  uint16_t u;
  memcpy(&u, &v, sizeof(u));
  return u;
}
DLK_HOST_DEVICE uint32_t bits_of(__nv_bfloat16 v) {
  uint16_t u;
  memcpy(&u, &v, sizeof(u));
  return u;
}

// One element; kCacheGlobal loads with ld.global.cg (L2 only): data written by other CTAs of a
// persistent grid since the last barrier must not come from a stale L1 line. Global memory only.
template <bool kCacheGlobal, typename T>
DLK_HOST_DEVICE T load_value(const T* p) {
#ifdef __CUDA_ARCH__
  if constexpr (kCacheGlobal) {
    if constexpr (sizeof(T) == 2) {
      const unsigned short u = __ldcg(reinterpret_cast<const unsigned short*>(p));
      T v;
      memcpy(&v, &u, sizeof(v));
      return v;
    } else {
      return __ldcg(p);
    }
  }
#endif
  return *p;
}

// The 32-bit mma operand register holding elements k and k+1 of `row` (k even), zero past K or for
// a null row. `aligned`: row + k is 4-byte aligned (even row length and base); otherwise (odd H) the
// two halves are loaded separately.
template <bool kCacheGlobal, typename T>
DLK_HOST_DEVICE uint32_t load_pair(const T* row, int64_t k, int64_t k_extent, bool aligned) {
  if (row == nullptr || k >= k_extent) return 0u;
  if (aligned) {
#ifdef __CUDA_ARCH__
    // One 32-bit load (memcpy would not know the alignment and read bytes).
    if constexpr (kCacheGlobal) return __ldcg(reinterpret_cast<const unsigned int*>(row + k));
    return *reinterpret_cast<const uint32_t*>(row + k);
#else
    uint32_t word;
    memcpy(&word, row + k, sizeof(word));
    return word;
#endif
  }
  const uint32_t lo = bits_of(load_value<kCacheGlobal>(row + k));
  const uint32_t hi = k + 1 < k_extent ? bits_of(load_value<kCacheGlobal>(row + k + 1)) : 0u;
  return lo | (hi << 16);
}

// ---------------------------------------------------------------------------------------------
// Tensor-core GEMM (fp16/bf16), per lane. Fragment maps (tensor_core.cuh), g = lane / 4, q4 = lane % 4:
//   A (weights, 16 x 16, row-major) reg r: row g + 8 (r % 2), k 2 q4 + 8 (r / 2) + {0, 1}
//   B (batch^T, 16 x 8, "col" = batch row n contiguous in k) reg r: n = g, k 2 q4 + 8 r + {0, 1}
//   C (rows x batch) element e: row g + 8 (e / 2), n 2 q4 + e % 2

DLK_HOST_DEVICE int tc_a_row(int lane, int reg) { return lane / 4 + 8 * (reg % 2); }
DLK_HOST_DEVICE int tc_a_k(int lane, int reg) { return 2 * (lane % 4) + 8 * (reg / 2); }
DLK_HOST_DEVICE int tc_b_n(int lane) { return lane / 4; }
DLK_HOST_DEVICE int tc_b_k(int lane, int reg) { return 2 * (lane % 4) + 8 * reg; }
DLK_HOST_DEVICE int tc_c_row(int lane, int e) { return lane / 4 + 8 * (e / 2); }
DLK_HOST_DEVICE int tc_c_n(int lane, int e) { return 2 * (lane % 4) + e % 2; }

// A lane's row pointers, fixed for the whole K loop.
template <typename T, int kRowTiles, int kNTiles>
struct TcLaneRows {
  const T* a[kRowTiles][2];  // rows g and g + 8 of each tile
  const T* b[kNTiles];       // batch row 8 nt + g
};

template <typename T, int kRowTiles, int kNTiles>
DLK_HOST_DEVICE TcLaneRows<T, kRowTiles, kNTiles> tc_lane_rows(const WeightRows<T>& w, const T* const* batch_rows,
                                                             int lane) {
  TcLaneRows<T, kRowTiles, kNTiles> rows;
  DLK_UNROLL
  for (int rt = 0; rt < kRowTiles; ++rt) {
    rows.a[rt][0] = w.row(rt, tc_a_row(lane, 0));
    rows.a[rt][1] = w.row(rt, tc_a_row(lane, 1));
  }
  DLK_UNROLL
  for (int nt = 0; nt < kNTiles; ++nt) rows.b[nt] = batch_rows[8 * nt + tc_b_n(lane)];
  return rows;
}

template <int kRowTiles, int kNTiles>
struct TcFragments {
  uint32_t a[kRowTiles][4];
  uint32_t b[kNTiles][2];
};

// The operand registers of one k-step starting at k0. The weights are read through L1 (or from
// shared memory); the batch operand, written by other CTAs during the previous step, through L2.
template <typename T, int kRowTiles, int kNTiles>
DLK_HOST_DEVICE void tc_load_a_fragments(uint32_t (&a)[kRowTiles][4], const TcLaneRows<T, kRowTiles, kNTiles>& rows,
                                         int64_t k0, int64_t k_extent, bool aligned, int lane) {
  DLK_UNROLL
  for (int rt = 0; rt < kRowTiles; ++rt) {
    DLK_UNROLL
    for (int reg = 0; reg < 4; ++reg) {
      a[rt][reg] = load_pair<false>(rows.a[rt][reg % 2], k0 + tc_a_k(lane, reg), k_extent, aligned);
    }
  }
}

template <typename T, int kRowTiles, int kNTiles>
DLK_HOST_DEVICE void tc_load_b_fragments(uint32_t (&b)[kNTiles][2], const TcLaneRows<T, kRowTiles, kNTiles>& rows,
                                         int64_t k0, int64_t k_extent, bool aligned, int lane) {
  DLK_UNROLL
  for (int nt = 0; nt < kNTiles; ++nt) {
    DLK_UNROLL
    for (int reg = 0; reg < 2; ++reg) {
      b[nt][reg] = load_pair<true>(rows.b[nt], k0 + tc_b_k(lane, reg), k_extent, aligned);
    }
  }
}

template <typename T, int kRowTiles, int kNTiles>
DLK_HOST_DEVICE void tc_load_fragments(TcFragments<kRowTiles, kNTiles>& f, const TcLaneRows<T, kRowTiles, kNTiles>& rows,
                                       int64_t k0, int64_t k_extent, bool a_aligned, bool b_aligned, int lane) {
  tc_load_a_fragments(f.a, rows, k0, k_extent, a_aligned, lane);
  tc_load_b_fragments(f.b, rows, k0, k_extent, b_aligned, lane);
}

// ---------------------------------------------------------------------------------------------
// SIMT GEMM (fp32/fp64), per lane: a warp stages a kKStep chunk of both operands (converted to the
// accumulation type) and each lane accumulates a kSimtRowsPerLane x kSimtBatchPerLane outer product.

template <class Tile, typename T>
DLK_HOST_DEVICE void simt_stage(typename Tile::Acc* stage, const WeightRows<T>& w, const T* const* batch_rows,
                                int64_t k0, int64_t k_extent, int lane) {
  using Acc = typename Tile::Acc;
  Acc* stage_a = stage;
  Acc* stage_b = stage + Tile::kRows * Tile::kStageLd;
  for (int e = lane; e < Tile::kRows * kKStep; e += 32) {
    const int r = e / kKStep, kk = e % kKStep;
    const T* row = w.row(r / kHiddenTile, r % kHiddenTile);
    const int64_t k = k0 + kk;
    stage_a[r * Tile::kStageLd + kk] = row != nullptr && k < k_extent ? to_accumulate(row[k]) : Acc(0);
  }
  for (int e = lane; e < Tile::kBatchTile * kKStep; e += 32) {
    const int n = e / kKStep, kk = e % kKStep;
    const T* row = batch_rows[n];
    const int64_t k = k0 + kk;
    stage_b[n * Tile::kStageLd + kk] = row != nullptr && k < k_extent ? to_accumulate(load_value<true>(row + k)) : Acc(0);
  }
}

template <class Tile>
DLK_HOST_DEVICE int simt_row(int lane, int i) { return lane % 8 + 8 * i; }
template <class Tile>
DLK_HOST_DEVICE int simt_n(int lane, int i) { return lane / 8 + 4 * i; }

template <class Tile>
DLK_HOST_DEVICE void simt_accumulate(typename Tile::Acc (&acc)[Tile::kSimtRowsPerLane][Tile::kSimtBatchPerLane],
                                     const typename Tile::Acc* stage, int lane) {
  using Acc = typename Tile::Acc;
  const Acc* stage_a = stage;
  const Acc* stage_b = stage + Tile::kRows * Tile::kStageLd;
  DLK_UNROLL
  for (int kk = 0; kk < kKStep; ++kk) {
    Acc a[Tile::kSimtRowsPerLane], b[Tile::kSimtBatchPerLane];
    DLK_UNROLL
    for (int i = 0; i < Tile::kSimtRowsPerLane; ++i) a[i] = stage_a[simt_row<Tile>(lane, i) * Tile::kStageLd + kk];
    DLK_UNROLL
    for (int i = 0; i < Tile::kSimtBatchPerLane; ++i) b[i] = stage_b[simt_n<Tile>(lane, i) * Tile::kStageLd + kk];
    DLK_UNROLL
    for (int i = 0; i < Tile::kSimtRowsPerLane; ++i) {
      DLK_UNROLL
      for (int jb = 0; jb < Tile::kSimtBatchPerLane; ++jb) acc[i][jb] += a[i] * b[jb];
    }
  }
}

// Index of (warp, batch n, row) in the partials.
template <class Tile>
DLK_HOST_DEVICE int64_t partial_index(int warp, int n, int row) {
  return (int64_t(warp) * Tile::kBatchTile + n) * Tile::kPartialLd + row;
}

// The K-split sum for one (row, n), in warp order.
template <class Tile>
DLK_HOST_DEVICE typename Tile::Acc sum_partials(const typename Tile::Acc* partial, int n, int row) {
  typename Tile::Acc sum = 0;
  DLK_UNROLL
  for (int w = 0; w < kWarps; ++w) sum += partial[partial_index<Tile>(w, n, row)];
  return sum;
}

// Persistent path: the CTA's weight rows into shared memory, zero-padded to slice_ld columns. Row by
// row, threads along k (coalesced): a flat element loop would split every index with a 64-bit
// division, a ~70-instruction subroutine per element. slice_ld is below 2^31: the slice fits in
// shared memory.
template <class Tile, typename T>
DLK_HOST_DEVICE void copy_weight_slice(T* slice, int64_t slice_ld, const WeightRows<T>& w, int64_t k_extent,
                                       int first, int stride) {
  const int ld = int(slice_ld);
  const T zero = from_accumulate<T>(AccumulateType<T>(0));
  for (int r = 0; r < Tile::kRows; ++r) {
    const T* row = w.row(r / kHiddenTile, r % kHiddenTile);
    T* dst = slice + r * ld;
    for (int k = first; k < ld; k += stride) dst[k] = row != nullptr && k < k_extent ? row[k] : zero;
  }
}

// ---------------------------------------------------------------------------------------------
// Pointwise step math: one (hidden unit j, batch row b), all gates. gh holds the recurrent GEMM
// result per gate (without b_hh).

template <typename T, RnnCell kCell>
DLK_HOST_DEVICE void forward_pointwise(const RnnFwdParams& p, int64_t s, int64_t j, int64_t b,
                                       const AccumulateType<T> (&gh)[kMaxGates]) {
  using Acc = AccumulateType<T>;
  constexpr int kGates = kCell == RnnCell::kLSTM ? 4 : 3;
  const int64_t batch = p.batch, hidden = p.hidden;
  const int64_t t = rnn_time_at(p, s);
  const int64_t t_prev = s > 0 ? rnn_time_at(p, s - 1) : -1;
  const bool valid = rnn_step_valid(p, t, b);
  // The state after this step is final for b at its last valid step: t = 0 reversed, else len - 1.
  const bool final_step = p.reverse ? t == 0 : t == (p.lengths != nullptr ? p.lengths[b] - 1 : p.steps - 1);
  const int64_t bj = b * hidden + j;
  const int64_t out = (t * batch + b) * hidden + j;
  const T* x = static_cast<const T*>(p.x_proj) + (t * batch + b) * kGates * hidden + j;
  Acc* saved = p.training && p.saved != nullptr ? static_cast<Acc*>(p.saved) + (t * batch + b) * 4 * hidden + j
                                                 : nullptr;
  Acc gates[4] = {0, 0, 0, 0};
  Acc h = 0;
  if constexpr (kCell == RnnCell::kLSTM) {
    Acc* c_all = static_cast<Acc*>(p.c_all);
    // c_all holds the unchanged c at invalid steps, so the previous time's entry is always the state.
    const Acc c_prev = t_prev >= 0 ? c_all[(t_prev * batch + b) * hidden + j]
                                   : to_accumulate(static_cast<const T*>(p.c0)[bj]);
    Acc c = c_prev;
    if (valid) {
      gates[0] = sigmoid(to_accumulate(x[0]) + gh[0]);
      gates[1] = sigmoid(to_accumulate(x[hidden]) + gh[1]);
      gates[2] = tanh_acc(to_accumulate(x[2 * hidden]) + gh[2]);
      gates[3] = sigmoid(to_accumulate(x[3 * hidden]) + gh[3]);
      c = gates[1] * c_prev + gates[0] * gates[2];
      h = gates[3] * tanh_acc(c);
    }
    c_all[out] = c;
    if (valid && final_step) static_cast<T*>(p.c_n)[bj] = from_accumulate<T>(c);
  } else {
    if (valid) {
      const T* b_hh = static_cast<const T*>(p.b_hh);
      Acc bias[3] = {0, 0, 0};
      if (b_hh != nullptr) {
        DLK_UNROLL
        for (int g = 0; g < 3; ++g) bias[g] = to_accumulate(b_hh[g * hidden + j]);
      }
      const bool prev_valid = t_prev >= 0 && rnn_step_valid(p, t_prev, b);
      const Acc h_prev = to_accumulate(prev_valid ? static_cast<const T*>(p.h_all)[(t_prev * batch + b) * hidden + j]
                                                  : static_cast<const T*>(p.h0)[bj]);
      gates[0] = sigmoid(to_accumulate(x[0]) + gh[0] + bias[0]);                // r
      gates[1] = sigmoid(to_accumulate(x[hidden]) + gh[1] + bias[1]);           // z
      gates[3] = gh[2] + bias[2];                                               // hn
      gates[2] = tanh_acc(to_accumulate(x[2 * hidden]) + gates[0] * gates[3]);  // n
      h = (Acc(1) - gates[1]) * gates[2] + gates[1] * h_prev;
    }
  }
  const T h_stored = from_accumulate<T>(h);
  static_cast<T*>(p.h_all)[out] = h_stored;
  if (valid && final_step) static_cast<T*>(p.h_n)[bj] = h_stored;
  if (saved != nullptr) {
    DLK_UNROLL
    for (int g = 0; g < 4; ++g) saved[g * hidden] = gates[g];
  }
}

// Backward scratch in the workspace (layout in rnn.cu).
template <typename T>
struct BwdScratch {
  using Acc = AccumulateType<T>;
  T* weight_t;           // W_hh^T (H, G*H)
  T* gate_grads[2];      // (B, G*H) input dtype: step s writes [s % 2], reads [(s + 1) % 2]
  // Selected without indexing the array by a runtime value (that would put it in local memory).
  DLK_HOST_DEVICE T* gate_grads_of(int64_t s) const { return s % 2 == 0 ? gate_grads[0] : gate_grads[1]; }
  Acc* dh_carry;         // (B, H): the part of dh_{t-1} not in gate_grads W_hh
  Acc* dc_carry;         // (B, H): dc_{t-1} (LSTM)
  unsigned int* barrier;
};

// Backward iteration s = 0 .. T-1 undoes forward iteration T-1-s; dh_recurrent = (previous
// iteration's gate gradients) W_hh at (b, j), 0 at s = 0.
template <typename T, RnnCell kCell>
DLK_HOST_DEVICE void backward_pointwise(const RnnBwdParams& p, const BwdScratch<T>& ws, int64_t s, int64_t j,
                                        int64_t b, AccumulateType<T> dh_recurrent) {
  using Acc = AccumulateType<T>;
  constexpr int kGates = kCell == RnnCell::kLSTM ? 4 : 3;
  const int64_t batch = p.batch, hidden = p.hidden;
  const int64_t forward_iteration = p.steps - 1 - s;
  const int64_t t = rnn_time_at(p, forward_iteration);
  const int64_t t_prev = forward_iteration > 0 ? rnn_time_at(p, forward_iteration - 1) : -1;
  const int64_t bj = b * hidden + j;
  const int64_t out = (t * batch + b) * hidden + j;
  Acc dh = dh_recurrent;
  Acc dc = 0;
  if (s == 0) {
    if (p.grad_h_n != nullptr) dh += to_accumulate(static_cast<const T*>(p.grad_h_n)[bj]);
    if (kCell == RnnCell::kLSTM && p.grad_c_n != nullptr) dc = to_accumulate(static_cast<const T*>(p.grad_c_n)[bj]);
  } else {
    dh += ws.dh_carry[bj];
    if (kCell == RnnCell::kLSTM) dc = ws.dc_carry[bj];
  }
  Acc* grad_x = static_cast<Acc*>(p.grad_x_proj) + (t * batch + b) * kGates * hidden + j;
  Acc* grad_gh = kCell == RnnCell::kGRU ? static_cast<Acc*>(p.grad_gh) + (t * batch + b) * kGates * hidden + j : nullptr;
  T* gate_grad_out = ws.gate_grads_of(s) + b * kGates * hidden + j;
  if (!rnn_step_valid(p, t, b)) {
    // The state passed through unchanged (and h_all[t] = 0 is a constant): gradients pass through.
    DLK_UNROLL
    for (int g = 0; g < kGates; ++g) {
      grad_x[g * hidden] = 0;
      if (grad_gh != nullptr) grad_gh[g * hidden] = 0;
      gate_grad_out[g * hidden] = from_accumulate<T>(Acc(0));
    }
    ws.dh_carry[bj] = dh;
    if (kCell == RnnCell::kLSTM) ws.dc_carry[bj] = dc;
    return;
  }
  if (p.grad_h_all != nullptr) dh += to_accumulate(static_cast<const T*>(p.grad_h_all)[out]);
  const Acc* saved = static_cast<const Acc*>(p.saved) + (t * batch + b) * 4 * hidden + j;
  if constexpr (kCell == RnnCell::kLSTM) {
    const Acc i = saved[0], f = saved[hidden], g = saved[2 * hidden], o = saved[3 * hidden];
    const Acc* c_all = static_cast<const Acc*>(p.c_all);
    const Acc c = c_all[out];
    const Acc c_prev = t_prev >= 0 ? c_all[(t_prev * batch + b) * hidden + j]
                                   : to_accumulate(static_cast<const T*>(p.c0)[bj]);
    const Acc tanh_c = tanh_acc(c);
    dc += dh * o * (Acc(1) - tanh_c * tanh_c);
    const Acc pre[4] = {dc * g * i * (Acc(1) - i), dc * c_prev * f * (Acc(1) - f), dc * i * (Acc(1) - g * g),
                        dh * tanh_c * o * (Acc(1) - o)};
    DLK_UNROLL
    for (int q = 0; q < 4; ++q) {
      grad_x[q * hidden] = pre[q];
      gate_grad_out[q * hidden] = from_accumulate<T>(pre[q]);
    }
    ws.dh_carry[bj] = 0;
    ws.dc_carry[bj] = dc * f;
  } else {
    const Acc r = saved[0], z = saved[hidden], n = saved[2 * hidden], hn = saved[3 * hidden];
    const bool prev_valid = t_prev >= 0 && rnn_step_valid(p, t_prev, b);
    const Acc h_prev = to_accumulate(prev_valid ? static_cast<const T*>(p.h_all)[(t_prev * batch + b) * hidden + j]
                                                : static_cast<const T*>(p.h0)[bj]);
    const Acc dn_pre = dh * (Acc(1) - z) * (Acc(1) - n * n);
    const Acc dr_pre = dn_pre * hn * r * (Acc(1) - r);
    const Acc dz_pre = dh * (h_prev - n) * z * (Acc(1) - z);
    const Acc x_grads[3] = {dr_pre, dz_pre, dn_pre};
    const Acc gh_grads[3] = {dr_pre, dz_pre, dn_pre * r};
    DLK_UNROLL
    for (int q = 0; q < 3; ++q) {
      grad_x[q * hidden] = x_grads[q];
      grad_gh[q * hidden] = gh_grads[q];
      gate_grad_out[q * hidden] = from_accumulate<T>(gh_grads[q]);
    }
    ws.dh_carry[bj] = dh * z;
  }
}

// After the last backward iteration (s = T): the gradients of the initial state.
template <typename T, RnnCell kCell>
DLK_HOST_DEVICE void backward_finalize(const RnnBwdParams& p, const BwdScratch<T>& ws, int64_t j, int64_t b,
                                       AccumulateType<T> dh_recurrent) {
  const int64_t bj = b * p.hidden + j;
  static_cast<T*>(p.grad_h0)[bj] = from_accumulate<T>(ws.dh_carry[bj] + dh_recurrent);
  if (kCell == RnnCell::kLSTM) static_cast<T*>(p.grad_c0)[bj] = from_accumulate<T>(ws.dc_carry[bj]);
}

// ---------------------------------------------------------------------------------------------
// Device-only: the block GEMM, barriers, kernels.

#ifdef __CUDACC__

// Grid-wide barrier for the persistent kernels (all CTAs co-resident: cooperative launch). The
// counter only grows: barrier number k waits until k * gridDim CTAs have arrived, so it needs no
// reset between steps, only zeroing before the launch.
__device__ __forceinline__ unsigned int load_acquire_gpu(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void grid_barrier(unsigned int* counter, unsigned int target) {
  __syncthreads();  // every thread of this CTA has finished the step ...
  if (threadIdx.x == 0) {
    __threadfence();  // ... and its writes are ordered (cumulatively) before the arrival
    atomicAdd(counter, 1u);
    while (load_acquire_gpu(counter) < target) __nanosleep(32);
  }
  __syncthreads();
}

// Publishes the CTA's batch row pointers for this step in shared memory (computing them involves
// `lengths`; every lane needs several).
template <class Tile, typename T, class BatchRows>
__device__ __forceinline__ const T* const* publish_batch_rows(unsigned char* smem, const BatchRows& rows) {
  const T** row_pointers = reinterpret_cast<const T**>(smem + Tile::kScratchBytes);
  if (threadIdx.x < Tile::kBatchTile) row_pointers[threadIdx.x] = rows(int(threadIdx.x));
  __syncthreads();
  return row_pointers;
}

// rows x batch GEMM over k < k_extent; leaves the K-split partials in shared memory (visible to
// the whole CTA on return).
template <class Tile, typename T>
__device__ __forceinline__ void block_gemm(unsigned char* smem, const WeightRows<T>& w, bool w_aligned,
                                           const T* const* batch_rows, bool batch_aligned, int64_t k_extent) {
  using Acc = typename Tile::Acc;
  Acc* partial = reinterpret_cast<Acc*>(smem);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  if constexpr (Tile::kTensorCores) {
    constexpr int kNTiles = Tile::kBatchTile / 8;
    constexpr int64_t kWarpStride = kWarps * kKStep;
    float acc[Tile::kRowTiles][kNTiles][4] = {};
    const auto rows = tc_lane_rows<T, Tile::kRowTiles, kNTiles>(w, batch_rows, lane);
    // The batch operand comes from L2 (written by other CTAs during the previous step): its loads for
    // k-step k0 + kWarpStride are issued before the mma of k-step k0, so that each L2 round trip
    // overlaps a k-step's work instead of stalling it (register double buffering).
    TcFragments<Tile::kRowTiles, kNTiles> f;
    int64_t k0 = int64_t(warp) * kKStep;
    if (k0 < k_extent) tc_load_b_fragments(f.b, rows, k0, k_extent, batch_aligned, lane);
    for (; k0 < k_extent; k0 += kWarpStride) {
      uint32_t next_b[kNTiles][2] = {};
      if (k0 + kWarpStride < k_extent) {
        tc_load_b_fragments(next_b, rows, k0 + kWarpStride, k_extent, batch_aligned, lane);
      }
      tc_load_a_fragments(f.a, rows, k0, k_extent, w_aligned, lane);
      DLK_UNROLL
      for (int rt = 0; rt < Tile::kRowTiles; ++rt) {
        DLK_UNROLL
        for (int nt = 0; nt < kNTiles; ++nt) mma_sync_unordered(acc[rt][nt], f.a[rt], f.b[nt], TypeTag<T>{});
      }
      DLK_UNROLL
      for (int nt = 0; nt < kNTiles; ++nt) {
        f.b[nt][0] = next_b[nt][0];
        f.b[nt][1] = next_b[nt][1];
      }
    }
    DLK_UNROLL
    for (int rt = 0; rt < Tile::kRowTiles; ++rt) {
      DLK_UNROLL
      for (int nt = 0; nt < Tile::kBatchTile / 8; ++nt) {
        DLK_UNROLL
        for (int e = 0; e < 4; ++e) {
          partial[partial_index<Tile>(warp, 8 * nt + tc_c_n(lane, e), kHiddenTile * rt + tc_c_row(lane, e))] =
              acc[rt][nt][e];
        }
      }
    }
  } else {
    (void)w_aligned;
    (void)batch_aligned;
    Acc acc[Tile::kSimtRowsPerLane][Tile::kSimtBatchPerLane] = {};
    Acc* stage = partial + warp * Tile::kStageElemsPerWarp;  // aliases the partials
    for (int64_t k0 = int64_t(warp) * kKStep; k0 < k_extent; k0 += kWarps * kKStep) {
      simt_stage<Tile>(stage, w, batch_rows, k0, k_extent, lane);
      __syncwarp();
      simt_accumulate<Tile>(acc, stage, lane);
      __syncwarp();
    }
    __syncthreads();  // every warp is done with its staging area before the partials overwrite it
    DLK_UNROLL
    for (int i = 0; i < Tile::kSimtRowsPerLane; ++i) {
      DLK_UNROLL
      for (int jb = 0; jb < Tile::kSimtBatchPerLane; ++jb) {
        partial[partial_index<Tile>(warp, simt_n<Tile>(lane, jb), simt_row<Tile>(lane, i))] = acc[i][jb];
      }
    }
  }
  __syncthreads();
}

// Runtime facts of one launch that the kernels need besides the params.
struct StepArgs {
  int64_t first_step = 0;  // iteration index s of the first step this launch runs
  int64_t num_steps = 1;
  bool weights_aligned = false;  // 32-bit operand loads from the global weights are aligned
  bool batch_aligned = false;    // ... from the batch operand rows
  unsigned int* barrier = nullptr;  // persistent only
  int64_t batch_tile_offset = 0;    // per-step launches beyond 65,535 batch tiles: first tile of this launch
};

template <typename T, RnnCell kCell, int kNTiles, bool kPersistent>
__global__ void __launch_bounds__(kThreads) rnn_forward_kernel(const RnnFwdParams p, const StepArgs args) {
  using Tile = StepTile<T, kCell, false, kNTiles>;
  using Acc = typename Tile::Acc;
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t j0 = int64_t(blockIdx.x) * kHiddenTile;
  const int64_t b0 = (int64_t(blockIdx.y) + args.batch_tile_offset) * Tile::kBatchTile;
  const int64_t hidden = p.hidden;
  const int valid_rows = int(hidden - j0 < kHiddenTile ? hidden - j0 : kHiddenTile);
  // Gate g of hidden unit j is W_hh row g * H + j: tile g starts H rows after tile g - 1.
  WeightRows<T> w{static_cast<const T*>(p.w_hh) + j0 * hidden, hidden, hidden, valid_rows};
  bool w_aligned = args.weights_aligned;
  if constexpr (kPersistent) {
    T* slice = reinterpret_cast<T*>(smem + Tile::kStepSmemBytes);
    const int64_t slice_ld = Tile::slice_ld(hidden);
    copy_weight_slice<Tile>(slice, slice_ld, w, hidden, int(threadIdx.x), kThreads);
    w = WeightRows<T>{slice, slice_ld, kHiddenTile, valid_rows};
    w_aligned = true;
    __syncthreads();
  }
  const unsigned int ctas = gridDim.x * gridDim.y;
  for (int64_t s = args.first_step; s < args.first_step + args.num_steps; ++s) {
    if (kPersistent && s > args.first_step) grid_barrier(args.barrier, unsigned(s - args.first_step) * ctas);
    const int64_t t_prev = s > 0 ? rnn_time_at(p, s - 1) : -1;
    const T* const* batch_rows = publish_batch_rows<Tile, T>(
        smem, PrevHiddenRows<T>{static_cast<const T*>(p.h_all), static_cast<const T*>(p.h0), p.lengths, t_prev,
                                p.batch, hidden, b0});
    block_gemm<Tile>(smem, w, w_aligned, batch_rows, args.batch_aligned, hidden);
    const Acc* partial = reinterpret_cast<const Acc*>(smem);
    for (int pair = int(threadIdx.x); pair < kHiddenTile * Tile::kBatchTile; pair += kThreads) {
      const int m = pair % kHiddenTile, n = pair / kHiddenTile;
      if (m >= valid_rows || b0 + n >= p.batch) continue;
      Acc gh[kMaxGates] = {0, 0, 0, 0};
      DLK_UNROLL
      for (int g = 0; g < Tile::kGates; ++g) gh[g] = sum_partials<Tile>(partial, n, g * kHiddenTile + m);
      forward_pointwise<T, kCell>(p, s, j0 + m, b0 + n, gh);
    }
  }
}

template <typename T, RnnCell kCell, int kNTiles, bool kPersistent>
__global__ void __launch_bounds__(kThreads)
    rnn_backward_kernel(const RnnBwdParams p, const BwdScratch<T> ws, const StepArgs args) {
  using Tile = StepTile<T, kCell, true, kNTiles>;
  using Acc = typename Tile::Acc;
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t j0 = int64_t(blockIdx.x) * kHiddenTile;
  const int64_t b0 = (int64_t(blockIdx.y) + args.batch_tile_offset) * Tile::kBatchTile;
  const int64_t hidden = p.hidden, gate_rows = int64_t(Tile::kGates) * hidden;
  const int valid_rows = int(hidden - j0 < kHiddenTile ? hidden - j0 : kHiddenTile);
  // dh_{t-1}[b, j] = sum_r gate_grad[b, r] W_hh[r, j]: row j of W_hh^T against the gate gradients.
  WeightRows<T> w{ws.weight_t + j0 * gate_rows, gate_rows, 0, valid_rows};
  bool w_aligned = args.weights_aligned;
  if constexpr (kPersistent) {
    T* slice = reinterpret_cast<T*>(smem + Tile::kStepSmemBytes);
    const int64_t slice_ld = Tile::slice_ld(gate_rows);
    copy_weight_slice<Tile>(slice, slice_ld, w, gate_rows, int(threadIdx.x), kThreads);
    w = WeightRows<T>{slice, slice_ld, 0, valid_rows};
    w_aligned = true;
    __syncthreads();
  }
  const unsigned int ctas = gridDim.x * gridDim.y;
  // s = 0 .. T-1 are the backward iterations, s = T writes grad_h0 / grad_c0.
  for (int64_t s = args.first_step; s < args.first_step + args.num_steps; ++s) {
    if (kPersistent && s > args.first_step) grid_barrier(args.barrier, unsigned(s - args.first_step) * ctas);
    if (s > 0) {  // uniform over the CTA
      const T* const* batch_rows =
          publish_batch_rows<Tile, T>(smem, GateGradRows<T>{ws.gate_grads_of(s + 1), p.batch, gate_rows, b0});
      block_gemm<Tile>(smem, w, w_aligned, batch_rows, args.batch_aligned, gate_rows);
    }
    const Acc* partial = reinterpret_cast<const Acc*>(smem);
    for (int pair = int(threadIdx.x); pair < kHiddenTile * Tile::kBatchTile; pair += kThreads) {
      const int m = pair % kHiddenTile, n = pair / kHiddenTile;
      if (m >= valid_rows || b0 + n >= p.batch) continue;
      const Acc dh_recurrent = s > 0 ? sum_partials<Tile>(partial, n, m) : Acc(0);
      if (s < p.steps) {
        backward_pointwise<T, kCell>(p, ws, s, j0 + m, b0 + n, dh_recurrent);
      } else {
        backward_finalize<T, kCell>(p, ws, j0 + m, b0 + n, dh_recurrent);
      }
    }
  }
}

// (rows, cols) -> (cols, rows) through a 32 x 33 shared tile (coalesced on both sides). Row tiles on
// grid.x (up to 2^31 - 1): W_hh has G * H rows, column tiles (H / 32) on grid.y.
template <typename T>
__global__ void __launch_bounds__(256) rnn_transpose_kernel(const T* in, T* out, int64_t rows, int64_t cols) {
  __shared__ T tile[32][33];
  const int64_t r0 = int64_t(blockIdx.x) * 32, c0 = int64_t(blockIdx.y) * 32;
  for (int i = int(threadIdx.y); i < 32; i += 8) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (int i = int(threadIdx.y); i < 32; i += 8) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[c * rows + r] = tile[threadIdx.x][i];
  }
}

#endif  // __CUDACC__

}  // namespace rnn
}  // namespace dlk

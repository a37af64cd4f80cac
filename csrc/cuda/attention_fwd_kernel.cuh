// Flash-attention forward kernels (FlashAttention-2), included by attention_fwd.cu (dispatch) and
// the attention_fwd_<dtype>.cu files (one dtype's instantiations each, compiled in parallel).
//
// fp16 / bf16 (tensor cores): one CTA per (block of kBlockM query rows, query head, sequence);
// kWarps warps, warp w owning query rows [16 w, 16 w + 16) of the block, so a warp's softmax rows
// never leave its registers. Per key block of kBlockN keys:
//   S = Q K^T          mma.sync m16n8k16, fp32 accumulators (16 x kBlockN per warp)
//   x = S * scale * log2(e) (+ bias * log2(e)), -inf where masked       (log2 domain: exp2f)
//   m_new = max(m, rowmax(x)); O, l *= 2^(m - m_new); P = 2^(x - m_new); l += rowsum(P)
//   P *= keep (dropout; l keeps the un-dropped sum, as FA2)             O += P V (P as fp16/bf16)
// and at the end out = O / l (* 1 / (1 - p)), lse = (m + log2 l) * ln 2. A row that sees no key
// (or only bias -inf) keeps m = -inf: exponents are then taken against 0 instead of m (no
// -inf - -inf), l stays 0, and the row writes out 0 and lse -inf.
//
// Memory: Q (kBlockM x D) and a 2-stage ring of (K, V) tiles (kBlockN x D each) in swizzled shared
// memory (attention_common.cuh), filled by cp.async one key block ahead of the math; Q moves to
// registers once (D <= 96) or is re-read by ldmatrix per k-step (D = 128, 256: as FA2 does by
// default; holding it spilled registers at D = 128). The output is staged through Q's shared memory for 16-byte coalesced stores.
//
// Causal: only key blocks [0, key_block_end) are visited (the rest are hidden from every row), and
// only blocks at or past the first one holding a diagonal (or the ragged end of the keys) pay for
// the mask. GQA: head h reads K/V head h / (Hq / Hk). Varlen: sequence offsets from cu_seqlens.
//
// fp32: exact SIMT FMA kernel (16 query rows x 32 keys per step, plain loads, no tensor cores);
// allow_tf32 is accepted and ignored (TF32 mma is not implemented: exact results instead).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "attention_common.cuh"
#include "common.cuh"
#include "dlk/attention.h"
#include "tensor_core.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "the attention kernels need sm_80 or newer (cp.async, ldmatrix, mma.sync m16n8k16)"
#endif

#ifdef __CUDA_ARCH__
#define DLK_ATTN_UNROLL_8 _Pragma("unroll 8")
#else
#define DLK_ATTN_UNROLL_8
#endif

namespace dlk {
namespace attn {

// Everything a forward launch needs beyond the params: host-computed constants.
struct ForwardArgs {
  AttentionFwdParams params;
  float scale_log2 = 0.0f;      // scale * log2(e)
  float dropout_scale = 1.0f;   // 1 / (1 - p)
  uint32_t dropout_threshold = 0;
  bool dropout = false;
  bool aligned = false;         // q, k, v, out: 16-byte aligned bases and row/head/batch strides
  int group_size = 1;           // Hq / Hk
  int batch_offset = 0;         // first sequence of this launch (grid.z <= 65535 per launch)
};

// Tile shapes per head dim (fp16 / bf16). Registers per thread ~ D/2 (O) + kBlockN/2 (S) + D/4 (Q
// fragments when held) fp32/b32 values, which sets kBlockN; shared memory = (kBlockM + 4 kBlockN)
// * D * 2 bytes must fit the 163 KB an sm_80 block may use:
//   D = 32, 64:  kBlockN 128 (O 16/32 + S 64 + Q 8/16 registers; 36 / 72 KB)
//   D = 96:      kBlockN 64  (O 48 + S 32 + Q 24; 60 KB)
//   D = 128:     kBlockN 64, Q re-read from shared memory (O 64 + S 32; 80 KB, 2 CTAs per SM)
//   D = 256:     8 warps (kBlockM 128: K/V reused by twice the rows), kBlockN 32, Q re-read from
//                shared memory (O 128 + S 16; 128 KB)
template <int kHeadDim>
struct ForwardConfig {
  static constexpr int kWarps = kHeadDim == 256 ? 8 : 4;
  static constexpr int kThreads = kWarps * kWarpSize;
  static constexpr int kBlockM = 16 * kWarps;
  static constexpr int kBlockN = kHeadDim <= 64 ? 128 : kHeadDim <= 128 ? 64 : 32;
  static constexpr bool kQInRegisters = kHeadDim <= 96;
  using QLayout = TileLayout<kBlockM, kHeadDim>;
  using KVLayout = TileLayout<kBlockN, kHeadDim>;
  static constexpr int kStages = 2;
  static constexpr int kSmemBytes = QLayout::kBytes + kStages * 2 * KVLayout::kBytes;
};

// ---------------------------------------------------------------------------------------------
// Per-element rules shared by both kernels (host-callable: the harness replays them).

// The score of one (row, key) in log2 units, -inf when the key is hidden from the row. bias_row is
// null without bias (or for rows past len_q, whose results are discarded).
template <typename T>
DLK_HOST_DEVICE float score_log2(float qk, float scale_log2, const T* bias_row, int key, bool visible) {
  if (!visible) return -INFINITY;
  const float x = qk * scale_log2;
  return bias_row != nullptr ? fmaf(to_accumulate(bias_row[key]), kLog2e, x) : x;
}

// Online softmax, one row: folds in a key block whose largest score is block_max. Returns the factor
// that rescales the running sum and O; `base` is what the block's exponents are taken against
// (0 while the row has seen nothing visible, so that 2^(-inf - base) = 0 and never NaN).
DLK_HOST_DEVICE float online_softmax_step(float& row_max, float block_max, float& base) {
  const float new_max = fmaxf(row_max, block_max);
  base = new_max == -INFINITY ? 0.0f : new_max;
  const float rescale = exp2f(row_max - base);  // row_max = -inf: 0 (O and l are 0 anyway)
  row_max = new_max;
  return rescale;
}

// The end of a row: out = O * out_factor; lse in natural log. Rows that saw no key: 0 and -inf.
DLK_HOST_DEVICE void softmax_finish(float row_max, float row_sum, float dropout_scale, float& out_factor,
                                    float& lse) {
  const bool empty = row_max == -INFINITY || !(row_sum > 0.0f);
  out_factor = empty ? 0.0f : dropout_scale / row_sum;
  lse = empty ? -INFINITY : row_max * kLn2 + logf(row_sum);
}

// seed = dropout_seed(args.params), loaded where dropout runs: the key lives in device memory (a CUDA
// graph draws a new one per replay), and a load per call of these helpers would repeat in the loop.
DLK_HOST_DEVICE bool keep_after_dropout(const ForwardArgs& args, uint64_t seed, int h, int64_t q_token, int key) {
  const AttentionFwdParams& p = args.params;
  return dropout_keep(seed, dropout_counter(h, p.total_q, q_token, p.seqlen_k, key), args.dropout_threshold);
}

// Keep bits of one row's elements in an S accumulator block: bit 2 n + e for key
// key0 + 8 n + 2 quad_lane + e (n < kSTiles). A rolled loop: ten Philox rounds per element unrolled
// over the whole block would cost code size and registers for nothing.
template <int kSTiles>
DLK_HOST_DEVICE uint32_t dropout_keep_bits(const ForwardArgs& args, uint64_t seed, int h, int64_t q_token, int key0,
                                           int quad_lane) {
  static_assert(2 * kSTiles <= 32, "one bit per element in a 32-bit mask");
  uint32_t bits = 0;
  DLK_ATTN_NO_UNROLL
  for (int idx = 0; idx < 2 * kSTiles; ++idx) {
    const int key = key0 + 8 * (idx / 2) + 2 * quad_lane + idx % 2;
    bits |= uint32_t(keep_after_dropout(args, seed, h, q_token, key)) << idx;
  }
  return bits;
}

// ---------------------------------------------------------------------------------------------
// fp16 / bf16 tensor-core kernel.

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(ForwardConfig<kHeadDim>::kThreads)
    attention_forward_kernel(const __grid_constant__ ForwardArgs args) {
  using Config = ForwardConfig<kHeadDim>;
  using QLayout = typename Config::QLayout;
  using KVLayout = typename Config::KVLayout;
  constexpr int kBlockM = Config::kBlockM, kBlockN = Config::kBlockN, kThreads = Config::kThreads;
  constexpr int kSTiles = kBlockN / 8;   // n8 tiles of S per warp
  constexpr int kOTiles = kHeadDim / 8;  // n8 tiles of O per warp
  constexpr int kDSteps = kHeadDim / 16;  // k16 steps of Q K^T
  constexpr int kNSteps = kBlockN / 16;   // k16 steps of P V
  constexpr TypeTag<T> kTag{};

  extern __shared__ __align__(128) char smem[];
  char* const q_tile = smem;
  const auto k_tile = [&](int stage) { return smem + QLayout::kBytes + stage * 2 * KVLayout::kBytes; };
  const auto v_tile = [&](int stage) { return k_tile(stage) + KVLayout::kBytes; };
  const uint32_t q_smem = shared_address(q_tile);

  const AttentionFwdParams& p = args.params;
  const int b = int(blockIdx.z) + args.batch_offset, h = blockIdx.y;
  const int row_begin = int(blockIdx.x) * kBlockM;
  const AttentionSequence seq = attention_sequence(p, b);
  if (attention_sequence_too_long(p, seq)) {  // a caller's error: NaN, not stale memory
    if (blockIdx.x == 0) fill_forward_with_nan<T>(p, seq, b, h);
    return;
  }
  if (row_begin >= seq.len_q) return;  // varlen: this sequence is shorter than max_seqlen_q
  const int h_kv = h / args.group_size;
  const int valid_rows = seq.len_q - row_begin;

  // Named pointers, not a structured binding: C++17 lambdas cannot capture those.
  const ForwardInputs<T> inputs = forward_inputs<T>(p, seq, b, h, h_kv, row_begin);
  const T* const q = inputs.q;
  const T* const k = inputs.k;
  const T* const v = inputs.v;

  const int key_blocks = attention_key_block_end(p, row_begin, row_begin + kBlockM, seq.len_q, seq.len_k, kBlockN);
  const int unmasked_blocks = attention_unmasked_key_blocks(p, row_begin, seq.len_q, seq.len_k, kBlockN);

  const int tid = threadIdx.x, warp = tid / kWarpSize, lane = tid % kWarpSize;
  const int group = lane / 4, quad_lane = lane % 4;  // mma C fragment: rows group, group + 8

  // This thread's two rows (CTA-local warp * 16 + group + 8 rr): visibility bound, bias row, token.
  int key_end[2];
  const T* bias_row[2];
  int64_t q_token[2];
  bool row_valid[2];
  DLK_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    const int i = row_begin + warp * 16 + group + 8 * rr;
    row_valid[rr] = i < seq.len_q;
    key_end[rr] = attention_key_end(p, i, seq.len_q, seq.len_k);
    bias_row[rr] = p.bias != nullptr && row_valid[rr]
                       ? static_cast<const T*>(p.bias) + b * p.bias_batch_stride + h * p.bias_head_stride +
                             int64_t(i) * p.bias_row_stride
                       : nullptr;
    q_token[rr] = seq.token_q + i;
  }

  const auto load_key_block = [&](int block, int stage) {
    const int64_t key0 = int64_t(block) * kBlockN;
    const int valid_keys = seq.len_k - int(key0);
    load_tile<kBlockN, kHeadDim, kThreads>(k_tile(stage), k + key0 * p.k_row_stride, p.k_row_stride, valid_keys,
                                           args.aligned, tid);
    load_tile<kBlockN, kHeadDim, kThreads>(v_tile(stage), v + key0 * p.v_row_stride, p.v_row_stride, valid_keys,
                                           args.aligned, tid);
  };

  // Prologue: Q and key block 0 form cp.async group 0, key block 1 group 1 (groups are committed
  // even when empty, so that "group n holds key block n" always holds for the waits below).
  load_tile<kBlockM, kHeadDim, kThreads>(q_tile, q, p.q_row_stride, valid_rows, args.aligned, tid);
  if (key_blocks > 0) load_key_block(0, 0);
  cp_async_commit();
  if (key_blocks > 1) load_key_block(1, 1);
  cp_async_commit();

  float acc_o[kOTiles][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // this lane's part of l; the quad's lanes are summed at the end
  uint32_t q_frag[Config::kQInRegisters ? kDSteps : 1][4];

  // Each lane's ldmatrix row offset within a fragment at (row 0, chunk 0); fragment (row0, chunk0)
  // is then TileLayout::shifted_offset of it (one XOR and an immediate).
  uint32_t q_lane, k_lane, v_lane;
  {
    int row, chunk;
    a_fragment_lane(lane, 0, 0, row, chunk);
    q_lane = QLayout::offset(row, chunk);
    b_fragment_lane(lane, 0, 0, row, chunk);
    k_lane = KVLayout::offset(row, chunk);
    b_trans_fragment_lane(lane, 0, 0, row, chunk);
    v_lane = KVLayout::offset(row, chunk);
  }
  const auto load_q_fragment = [&](uint32_t(&a)[4], int d_step) {
    ldmatrix_x4_memory_clobber(a, q_smem + QLayout::shifted_offset(q_lane, warp * 16, 2 * d_step));
  };

  for (int block = 0; block < key_blocks; ++block) {
    const int stage = block % Config::kStages;
    cp_async_wait<1>();  // this thread's copies of key block `block` (group `block`) have landed
    __syncthreads();     // ... and every other thread's
    if constexpr (Config::kQInRegisters) {
      if (block == 0) {
        DLK_UNROLL
        for (int d = 0; d < kDSteps; ++d) load_q_fragment(q_frag[d], d);
      }
    }

    // S = Q K^T for this warp's 16 rows.
    const uint32_t k_smem = shared_address(k_tile(stage)), v_smem = shared_address(v_tile(stage));
    float acc_s[kSTiles][4] = {};
    DLK_UNROLL
    for (int d = 0; d < kDSteps; ++d) {
      uint32_t a[4];
      if constexpr (Config::kQInRegisters) {
        DLK_UNROLL
        for (int r = 0; r < 4; ++r) a[r] = q_frag[d][r];
      } else {
        load_q_fragment(a, d);
      }
      DLK_UNROLL
      for (int n = 0; n < kSTiles / 2; ++n) {
        uint32_t b_regs[4];
        ldmatrix_x4_memory_clobber(b_regs, k_smem + KVLayout::shifted_offset(k_lane, 16 * n, 2 * d));
        const uint32_t b_lo[2] = {b_regs[0], b_regs[1]}, b_hi[2] = {b_regs[2], b_regs[3]};
        mma_sync(acc_s[2 * n], a, b_lo, kTag);
        mma_sync(acc_s[2 * n + 1], a, b_hi, kTag);
      }
    }

    // Online softmax over the block (acc_s becomes P), rows group (rr = 0) and group + 8 (rr = 1).
    const int key0 = block * kBlockN;
    const bool masked = block >= unmasked_blocks;
    DLK_UNROLL
    for (int rr = 0; rr < 2; ++rr) {
      float block_max = -INFINITY;
      DLK_UNROLL
      for (int n = 0; n < kSTiles; ++n) {
        DLK_UNROLL
        for (int e = 0; e < 2; ++e) {
          const int key = key0 + 8 * n + 2 * quad_lane + e;
          float& s = acc_s[n][2 * rr + e];
          s = score_log2(s, args.scale_log2, bias_row[rr], key, !masked || key < key_end[rr]);
          block_max = fmaxf(block_max, s);
        }
      }
      float base;
      const float rescale = online_softmax_step(row_max[rr], quad_max(block_max), base);
      row_sum[rr] *= rescale;
      DLK_UNROLL
      for (int n = 0; n < kOTiles; ++n) {
        acc_o[n][2 * rr] *= rescale;
        acc_o[n][2 * rr + 1] *= rescale;
      }
      DLK_UNROLL
      for (int n = 0; n < kSTiles; ++n) {
        DLK_UNROLL
        for (int e = 0; e < 2; ++e) {
          float& s = acc_s[n][2 * rr + e];
          s = exp2f(s - base);
          row_sum[rr] += s;  // l sums P before dropout
        }
      }
      if (args.dropout) {
        const uint32_t keep = dropout_keep_bits<kSTiles>(args, dropout_seed(p), h, q_token[rr], key0, quad_lane);
        DLK_UNROLL
        for (int n = 0; n < kSTiles; ++n) {
          DLK_UNROLL
          for (int e = 0; e < 2; ++e) {
            if (!((keep >> (2 * n + e)) & 1u)) acc_s[n][2 * rr + e] = 0.0f;
          }
        }
      }
    }

    // O += P V: the C fragments of S tiles 2j, 2j+1 are the A fragment of k-step j.
    DLK_UNROLL
    for (int j = 0; j < kNSteps; ++j) {
      uint32_t a[4];
      accumulators_to_a_fragment<T>(a, acc_s[2 * j], acc_s[2 * j + 1]);
      DLK_UNROLL
      for (int n = 0; n < kOTiles / 2; ++n) {
        uint32_t b_regs[4];
        ldmatrix_x4_trans(b_regs, v_smem + KVLayout::shifted_offset(v_lane, 16 * j, 2 * n));
        const uint32_t b_lo[2] = {b_regs[0], b_regs[1]}, b_hi[2] = {b_regs[2], b_regs[3]};
        mma_sync(acc_o[2 * n], a, b_lo, kTag);
        mma_sync(acc_o[2 * n + 1], a, b_hi, kTag);
      }
    }

    __syncthreads();  // every warp is done with this stage before it is refilled
    if (block + Config::kStages < key_blocks) load_key_block(block + Config::kStages, stage);
    cp_async_commit();
  }

  // Epilogue: normalize, write lse, stage O (as T) in Q's shared memory, store 16-byte chunks.
  cp_async_wait<0>();
  __syncthreads();  // Q's shared memory is free (no warp reads it any more, no copy in flight)
  float* const lse = static_cast<float*>(p.lse) + b * p.lse_batch_stride + h * p.lse_head_stride + seq.start_q;
  DLK_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    float out_factor, row_lse;
    softmax_finish(row_max[rr], quad_sum(row_sum[rr]), args.dropout_scale, out_factor, row_lse);
    const int local_row = warp * 16 + group + 8 * rr;
    if (quad_lane == 0 && row_valid[rr]) lse[row_begin + local_row] = row_lse;
    DLK_UNROLL
    for (int n = 0; n < kOTiles; ++n) {
      const uint32_t pair = pack_pair<T>(acc_o[n][2 * rr] * out_factor, acc_o[n][2 * rr + 1] * out_factor);
      *reinterpret_cast<uint32_t*>(q_tile + QLayout::offset(local_row, n) + 4 * quad_lane) = pair;
    }
  }
  __syncthreads();
  T* const out = static_cast<T*>(p.out) + b * p.out_batch_stride + (seq.start_q + row_begin) * p.out_row_stride +
                 h * p.out_head_stride;
  constexpr int kChunkElems = QLayout::kChunkElems;
  DLK_UNROLL
  for (int pass = 0; pass < QLayout::kChunks / kThreads; ++pass) {
    int row, chunk;
    thread_chunk<kBlockM, kHeadDim, kThreads>(tid, pass, row, chunk);
    if (row >= valid_rows) continue;
    const auto value = *reinterpret_cast<const Vector<T, kChunkElems>*>(q_tile + QLayout::offset(row, chunk));
    T* dst = out + int64_t(row) * p.out_row_stride + chunk * kChunkElems;
    if (args.aligned) {
      *reinterpret_cast<Vector<T, kChunkElems>*>(dst) = value;
    } else {
      DLK_UNROLL
      for (int e = 0; e < kChunkElems; ++e) dst[e] = value.val[e];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Exact fp32 kernel: SIMT FMA, correctness over speed. 128 threads, 16 query rows per CTA, 8
// threads per row; key blocks of 32 through shared memory with plain loads. Thread (row r, c)
// computes the scores of keys c + 8u (u < 4) and owns output dims c + 8u (u < D / 8). Q and K rows
// are padded by 4 floats: the 4 rows (Q) and 8 keys (K) a warp reads at one d then fall in distinct
// banks.
struct ForwardFloatConfig {
  static constexpr int kThreads = 128;
  static constexpr int kBlockM = 16;
  static constexpr int kBlockN = 32;
  static constexpr int kThreadsPerRow = kThreads / kBlockM;  // 8
  static constexpr int kKeysPerThread = kBlockN / kThreadsPerRow;
  static constexpr int kPad = 4;
  template <int kHeadDim>
  static constexpr int smem_bytes() {
    return int(sizeof(float)) * ((kBlockM + kBlockN) * (kHeadDim + kPad) + kBlockN * kHeadDim);
  }
};

template <int kHeadDim>
__global__ void __launch_bounds__(ForwardFloatConfig::kThreads)
    attention_forward_float_kernel(const __grid_constant__ ForwardArgs args) {
  using Config = ForwardFloatConfig;
  constexpr int kBlockM = Config::kBlockM, kBlockN = Config::kBlockN, kThreads = Config::kThreads;
  constexpr int kPadded = kHeadDim + Config::kPad;
  constexpr int kGroup = Config::kThreadsPerRow;
  constexpr int kDimsPerThread = kHeadDim / kGroup;

  extern __shared__ __align__(128) char smem[];
  float* const q_tile = reinterpret_cast<float*>(smem);  // [kBlockM][kPadded]
  float* const k_tile = q_tile + kBlockM * kPadded;       // [kBlockN][kPadded]
  float* const v_tile = k_tile + kBlockN * kPadded;       // [kBlockN][kHeadDim]

  const AttentionFwdParams& p = args.params;
  const int b = int(blockIdx.z) + args.batch_offset, h = blockIdx.y;
  const int row_begin = int(blockIdx.x) * kBlockM;
  const AttentionSequence seq = attention_sequence(p, b);
  if (attention_sequence_too_long(p, seq)) {
    if (blockIdx.x == 0) fill_forward_with_nan<float>(p, seq, b, h);
    return;
  }
  if (row_begin >= seq.len_q) return;
  const int h_kv = h / args.group_size;

  // Named pointers, not a structured binding: C++17 lambdas cannot capture those.
  const ForwardInputs<float> inputs = forward_inputs<float>(p, seq, b, h, h_kv, row_begin);
  const float* const q = inputs.q;
  const float* const k = inputs.k;
  const float* const v = inputs.v;

  const int tid = threadIdx.x;
  const int local_row = tid / kGroup, c = tid % kGroup;
  const int i = row_begin + local_row;
  const bool row_valid = i < seq.len_q;
  const int key_end = attention_key_end(p, i, seq.len_q, seq.len_k);
  const float* bias_row = p.bias != nullptr && row_valid
                              ? static_cast<const float*>(p.bias) +
                                    row_offset(p.bias_batch_stride, p.bias_head_stride, p.bias_row_stride, b, h, i)
                              : nullptr;
  const int64_t q_token = seq.token_q + i;

  // Rows past `valid` are zero-filled; consecutive threads read consecutive d (coalesced).
  const auto load_rows = [&](float* tile, int stride, const float* src, int64_t src_stride, int rows, int valid) {
    for (int e = tid; e < rows * kHeadDim; e += kThreads) {
      const int r = e / kHeadDim, d = e % kHeadDim;
      tile[r * stride + d] = r < valid ? src[int64_t(r) * src_stride + d] : 0.0f;
    }
  };
  load_rows(q_tile, kPadded, q, p.q_row_stride, kBlockM, seq.len_q - row_begin);

  const int key_blocks = attention_key_block_end(p, row_begin, row_begin + kBlockM, seq.len_q, seq.len_k, kBlockN);
  float acc_o[kDimsPerThread] = {};
  float row_max = -INFINITY, row_sum = 0.0f;  // identical in the 8 threads of a row
  for (int block = 0; block < key_blocks; ++block) {
    const int key0 = block * kBlockN;
    __syncthreads();  // the previous block's K and V are no longer read
    load_rows(k_tile, kPadded, k + int64_t(key0) * p.k_row_stride, p.k_row_stride, kBlockN, seq.len_k - key0);
    load_rows(v_tile, kHeadDim, v + int64_t(key0) * p.v_row_stride, p.v_row_stride, kBlockN, seq.len_k - key0);
    __syncthreads();

    float s[Config::kKeysPerThread];
    float block_max = -INFINITY;
    DLK_UNROLL
    for (int u = 0; u < Config::kKeysPerThread; ++u) {
      const int key_local = c + kGroup * u;
      float dot = 0.0f;
      DLK_ATTN_UNROLL_8  // fully unrolled, D = 256 spills
      for (int d = 0; d < kHeadDim; ++d) dot = fmaf(q_tile[local_row * kPadded + d], k_tile[key_local * kPadded + d], dot);
      s[u] = score_log2(dot, args.scale_log2, bias_row, key0 + key_local, key0 + key_local < key_end);
      block_max = fmaxf(block_max, s[u]);
    }
    DLK_UNROLL
    for (int offset = 1; offset < kGroup; offset *= 2)
      block_max = fmaxf(block_max, __shfl_xor_sync(0xffffffffu, block_max, offset));
    float base;
    const float rescale = online_softmax_step(row_max, block_max, base);
    float block_sum = 0.0f;
    const uint64_t seed = args.dropout ? dropout_seed(p) : 0;
    DLK_UNROLL
    for (int u = 0; u < Config::kKeysPerThread; ++u) {
      s[u] = exp2f(s[u] - base);
      block_sum += s[u];
      if (args.dropout && s[u] != 0.0f && !keep_after_dropout(args, seed, h, q_token, key0 + c + kGroup * u))
        s[u] = 0.0f;
    }
    DLK_UNROLL
    for (int offset = 1; offset < kGroup; offset *= 2) block_sum += __shfl_xor_sync(0xffffffffu, block_sum, offset);
    row_sum = row_sum * rescale + block_sum;

    DLK_UNROLL
    for (int u = 0; u < kDimsPerThread; ++u) acc_o[u] *= rescale;
    DLK_UNROLL
    for (int key_local = 0; key_local < kBlockN; ++key_local) {
      // P of key key_local lives in lane key_local % 8 of this row's 8 lanes, slot key_local / 8.
      const float prob = __shfl_sync(0xffffffffu, s[key_local / kGroup], key_local % kGroup, kGroup);
      DLK_UNROLL
      for (int u = 0; u < kDimsPerThread; ++u) acc_o[u] = fmaf(prob, v_tile[key_local * kHeadDim + c + kGroup * u], acc_o[u]);
    }
  }

  float out_factor, row_lse;
  softmax_finish(row_max, row_sum, args.dropout_scale, out_factor, row_lse);
  if (!row_valid) return;
  float* const out = static_cast<float*>(p.out) +
                     row_offset(p.out_batch_stride, p.out_head_stride, p.out_row_stride, b, h, seq.start_q + i);
  DLK_UNROLL
  for (int u = 0; u < kDimsPerThread; ++u) out[c + kGroup * u] = acc_o[u] * out_factor;
  if (c == 0) {
    static_cast<float*>(p.lse)[b * p.lse_batch_stride + h * p.lse_head_stride + seq.start_q + i] = row_lse;
  }
}

// ---------------------------------------------------------------------------------------------
// Launch, per dtype and head dim (instantiated in attention_fwd_<dtype>.cu).
//
// The launches need a CUDA compiler (<<<>>>). A host compiler stops here: the warp emulator
// (tests/emulator) compiles everything above, kernels included, with g++ and runs them on the CPU.
#ifdef __CUDACC__

template <typename Kernel>
Status launch_over_batches(Kernel kernel, ForwardArgs args, int block_m, int threads, int smem_bytes,
                           cudaStream_t stream) {
  constexpr int kMaxGridZ = 65535;
  if (!allow_dynamic_smem(kernel, size_t(smem_bytes))) return Status::kLaunchFailed;
  const AttentionFwdParams& p = args.params;
  const unsigned query_blocks = unsigned((int64_t(p.seqlen_q) + block_m - 1) / block_m);
  for (int first = 0; first < p.batch; first += kMaxGridZ) {
    args.batch_offset = first;
    const dim3 grid(query_blocks, unsigned(p.heads_q), unsigned(min_int(kMaxGridZ, p.batch - first)));
    kernel<<<grid, threads, smem_bytes, stream>>>(args);
    if (check_launch() != Status::kOk) return Status::kLaunchFailed;
  }
  return Status::kOk;
}

template <typename T, int kHeadDim>
Status launch_attention_forward(const ForwardArgs& args, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    using Config = ForwardFloatConfig;
    return launch_over_batches(attention_forward_float_kernel<kHeadDim>, args, Config::kBlockM, Config::kThreads,
                               Config::smem_bytes<kHeadDim>(), stream);
  } else {
    using Config = ForwardConfig<kHeadDim>;
    return launch_over_batches(attention_forward_kernel<T, kHeadDim>, args, Config::kBlockM, Config::kThreads,
                               Config::kSmemBytes, stream);
  }
}

// Instantiated in the generated attention_fwd_<dtype>.cu files, one dtype per file.
// BEGIN GENERATED by csrc/cuda/generate_kernels.py: do not edit by hand
extern template Status launch_attention_forward<__half, 32>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<__half, 64>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<__half, 96>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<__half, 128>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<__half, 256>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<__nv_bfloat16, 32>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<__nv_bfloat16, 64>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<__nv_bfloat16, 96>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<__nv_bfloat16, 128>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<__nv_bfloat16, 256>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<float, 32>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<float, 64>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<float, 96>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<float, 128>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward<float, 256>(const ForwardArgs&, cudaStream_t);
// END GENERATED by csrc/cuda/generate_kernels.py

#endif  // __CUDACC__

}  // namespace attn
}  // namespace dlk

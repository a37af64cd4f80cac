// Flash-attention backward kernels (FlashAttention-2 algorithm, deterministic). Included by the
// per-dtype instantiation files attention_bwd_{f16,bf16,f32}.cu; the launcher and the argument
// checks are in attention_bwd.cu. Semantics, layouts and the dropout rule: dlk/attention.h.
//
// Three kernels per backward:
//   1. row_terms:  D_i = rowsum(dO_i * O_i) in fp32 into the workspace (indexed like lse).
//   2. dkdv:       one CTA per (key block, kv head, sequence). K_j and V_j stay in shared memory;
//                  the CTA walks the query heads of its GQA group, and for each their query blocks
//                  that can see the key block (causal blocks above the diagonal are skipped),
//                  recomputing S^T = K Q^T, P^T from lse, dP^T = V dO^T, and accumulating
//                  dV += P'^T dO and dK += dS^T Q in registers. Heads are summed in a fixed order.
//   3. dq:         one CTA per (query block, q head, sequence), walking the visible key blocks and
//                  accumulating dQ += dS K in registers, written once at the end.
// No floating-point atomics anywhere: every output element is written by exactly one CTA, so the
// gradients are bitwise reproducible. The price against FlashAttention-2's atomic dQ is that S, P
// and dP are computed twice (once per kernel): the backward does 7 instead of 5 block matmuls
// (QK^T and dO V^T recomputed), ~1.4x the tensor-core work, in exchange for no fp32 dQ accumulator
// in global memory, no atomics traffic and no conversion pass.
//
// Tensor-core path (fp16 / bf16, sm_80+): mma.sync m16n8k16 with fp32 accumulators. Every warp owns
// 16 rows of its CTA's resident block (keys in dkdv, queries in dq) and all columns of S, so S, P
// and dS never leave registers: the m16n8 accumulator of two adjacent n-tiles is exactly the A
// fragment of the next m16n8k16 (FlashAttention-2's register reuse). Tiles live in shared memory as
// rows of head_dim elements in 16-byte chunks, XOR-swizzled (tile_chunk_offset) so that the eight
// rows of every ldmatrix phase and every 8 consecutive cp.async chunks hit 8 distinct bank groups.
// The streamed operands (Q, dO in dkdv; K, V in dq) are double-buffered with cp.async. Sequence
// offsets, causal block ranges, ldmatrix lane maps and fragment packing: attention_common.cuh.
//
// SIMT path: fp32 (exact, FMA in fp32), and the fallback for fp16 / bf16 inputs whose pointers or
// strides are not 16-byte aligned, or when a tensor-core configuration does not fit the device's
// shared memory. Same decomposition with 16 x 16 blocks; one thread per score, then one thread
// per output element.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "attention_common.cuh"
#include "common.cuh"
#include "dlk/attention.h"
#include "dlk/launch_plan.h"
#include "tensor_core.cuh"

namespace dlk {
namespace attention_bwd {

// The helpers shared with the forward: sequence offsets (attention_sequence, row_offset), causal
// block ranges, ldmatrix lane maps, pack_pair / accumulators_to_a_fragment, kWarpSize, kChunkBytes,
// kLog2e, ceil_div_int / min_int / max_int.
using namespace attn;

// ---------------------------------------------------------------------------------------------
// Index math shared by every kernel (host-callable: the emulation harness runs it).

// Query blocks [first, end) that a dkdv CTA for key block `key_block` visits (of kBlockQ queries).
struct BlockRange {
  int first = 0, end = 0;
  DLK_HOST_DEVICE int count() const { return end > first ? end - first : 0; }
};

// The query blocks that see any key at or after key j0 (j0 < len_k): from the block of the first
// query that sees key j0 (attention_key_end is non-decreasing in i) to the last block.
DLK_HOST_DEVICE BlockRange query_blocks_for_keys(const AttentionParams& p, const AttentionSequence& seq, int j0,
                                                 int block_q) {
  const int first_query = attention_first_query(p, j0, seq.len_q, seq.len_k);
  if (first_query >= seq.len_q) return {0, 0};  // top-left causal, keys past the last query's reach
  return {first_query / block_q, ceil_div_int(seq.len_q, block_q)};
}

// The workspace's fp32 row terms D_i, laid out like lse: dense (B, Hq, Nq), varlen (Hq, total_q).
struct RowTermsLayout {
  int64_t batch_stride = 0, head_stride = 0, elements = 0;
};

DLK_HOST_DEVICE RowTermsLayout row_terms_layout(const AttentionParams& p) {
  RowTermsLayout l;
  if (p.cu_seqlens_q != nullptr) {
    l.head_stride = p.total_q;
    l.elements = int64_t(p.heads_q) * p.total_q;
  } else {
    l.head_stride = p.seqlen_q;
    l.batch_stride = int64_t(p.heads_q) * p.seqlen_q;
    l.elements = int64_t(p.batch) * l.batch_stride;
  }
  return l;
}

// log2-domain lse of a row: P = exp2(S * scale * log2e - lse * log2e). Rows without a visible key
// (lse = -inf) and rows past the sequence get +inf, so exp2 gives exactly 0 for every score of the
// row (finite or -inf) instead of exp(-inf - -inf) = NaN.
DLK_HOST_DEVICE float lse_log2_of(float lse, bool valid_row) {
  return (valid_row && lse != -INFINITY) ? lse * kLog2e : INFINITY;
}

// Dropout decisions (dlk/attention.h). Query tokens are numbered as in the forward and the CPU /
// Triton references: b * Nq + i in dense mode, cu_seqlens_q[b] + i in varlen mode. The kernels pass
// sequence_token(b, seq.start_q + i): start_q is 0 (dense) or cu_seqlens_q[b] (varlen) and already
// live for the row offsets, b and tokens_per_sequence are uniform. Keeping AttentionSequence::token_q
// live across the main loops instead costs up to 60 registers (dq_tc, head dim 96, sm_90a).
struct Dropout {
  bool enabled = false;
  uint64_t seed = 0;
  uint32_t threshold = 0;
  float keep_scale = 1.0f;  // 1 / (1 - p); 1 without dropout
  int64_t total_q = 0;
  int seqlen_k = 0;
  int tokens_per_sequence = 0;  // dense: Nq; varlen: 0 (start_q already counts from cu_seqlens_q[b])

  // Query token of row `row` (= seq.start_q + i) of sequence b.
  DLK_HOST_DEVICE int64_t sequence_token(int b, int64_t row) const { return int64_t(b) * tokens_per_sequence + row; }

  DLK_HOST_DEVICE uint64_t counter(int h, int64_t q_token, int j) const {
    return dropout_counter(h, total_q, q_token, seqlen_k, j);
  }

  // keep / (1 - p) of element (h, query token, key j); 1 without dropout.
  DLK_HOST_DEVICE float factor(int h, int64_t q_token, int j) const {
    if (!enabled) return 1.0f;
    return dropout_keep(seed, counter(h, q_token, j), threshold) ? keep_scale : 0.0f;
  }

  // Keep bits of kElems elements, all ones without dropout: bit idx is the decision for the element
  // (query token + di, key + dj) of first_counter = counter(h, query token, key), where
  // offsets(idx, di, dj) gives di, dj (counter(h, t + di, j + dj) = counter(h, t, j) + di * seqlen_k
  // + dj). A rolled loop, as the forward's dropout_keep_bits: ten Philox rounds per element unrolled
  // over a whole accumulator block cost code size and registers.
  template <int kElems, typename Offsets>
  DLK_HOST_DEVICE uint32_t keep_bits(uint64_t first_counter, Offsets offsets) const {
    static_assert(kElems <= 32, "one bit per element in a 32-bit mask");
    if (!enabled) return ~0u;
    uint32_t bits = 0;
    DLK_ATTN_NO_UNROLL
    for (int idx = 0; idx < kElems; ++idx) {
      int di, dj;
      offsets(idx, di, dj);
      const uint64_t element_counter = first_counter + uint64_t(di) * uint64_t(seqlen_k) + uint64_t(dj);
      bits |= uint32_t(dropout_keep(seed, element_counter, threshold)) << idx;
    }
    return bits;
  }
  // factor() of element idx of a keep_bits mask.
  DLK_HOST_DEVICE float factor_of(uint32_t bits, int idx) const { return (bits >> idx) & 1u ? keep_scale : 0.0f; }
};

DLK_HOST_DEVICE Dropout make_dropout(const AttentionParams& p) {
  Dropout d;
  d.enabled = p.dropout_p > 0.0;
  d.seed = dropout_seed(p);  // one load per thread, before the main loops
  d.threshold = dropout_threshold(p.dropout_p);
  d.keep_scale = d.enabled ? static_cast<float>(1.0 / (1.0 - p.dropout_p)) : 1.0f;
  d.total_q = p.total_q;
  d.seqlen_k = p.seqlen_k;
  d.tokens_per_sequence = p.cu_seqlens_q == nullptr ? p.seqlen_q : 0;
  return d;
}

// Score in natural-log units, s = scale * q.k (+ bias[b, h, i, j]). Apart from the forward's
// score_log2 (scale * log2e folded, bias fma'd in log2 units): merging would change P's rounding.
template <typename T>
DLK_HOST_DEVICE float biased_score(const AttentionParams& p, float dot, int b, int h, int i, int j) {
  float s = dot * p.scale;
  if (p.bias != nullptr) {
    const T* bias = static_cast<const T*>(p.bias);
    s += to_accumulate(bias[row_offset(p.bias_batch_stride, p.bias_head_stride, p.bias_row_stride, b, h, i) + j]);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Shared-memory tiles: kRows rows of head_dim 16-bit elements, kRowChunks 16-byte chunks per row.
// Chunk c of row r is stored at chunk position c ^ f(r) of that row (a bijection of the row):
//   kRowChunks % 8 == 0 (head_dim 64, 128, 256): f(r) = r % 8. An ldmatrix phase reads one logical
//     chunk of 8 consecutive rows: 8 distinct chunk positions modulo 8 = 8 bank groups.
//   otherwise (head_dim 32, 96: 4 or 12 chunks, rows 64 or 192 bytes): f(r) = (r / 2) % 4, which
//     only flips the low two bits (stays inside the row). Row r starts at bank group 4 * (r % 2)
//     (mod 8), so 8 consecutive rows give 4 * (r % 2) + ((c ^ r / 2) % 4): 8 distinct groups.
// tiles_test in the emulation harness checks the bijection and the conflict freedom.
// Kept apart from the forward's TileLayout (atom-major, unrolled load_tile): measured at the
// backward's tile shapes and loops, that costs up to 70 more registers per thread, and spills.
template <int kRowChunks>
DLK_HOST_DEVICE uint32_t tile_chunk_offset(int row, int chunk) {
  static_assert(kRowChunks % 4 == 0, "rows of whole 64-byte units");
  const int swizzled = (kRowChunks % 8 == 0) ? (chunk ^ (row & 7)) : (chunk ^ ((row >> 1) & 3));
  return uint32_t(row * kRowChunks + swizzled) * kChunkBytes;
}

// ---------------------------------------------------------------------------------------------
// Tensor-core configurations per head dim (fp16 / bf16). 4 warps; the resident block is 16 rows per
// warp = 64 rows; the streamed block is sized so that accumulators + S + dP fit the 255-register
// budget without spills and the double-buffered tiles fit shared memory (numbers in the report at
// the bottom of attention_bwd.cu):
//   dkdv: accumulators dK + dV = 2 * 16 * D / 32 = D floats per thread, S^T + dP^T = 2 * Nq / 8.
//   dq:   accumulator dQ = D / 2 floats per thread, S + dP = 2 * Nk / 8.
// head_dim 256 runs dkdv twice (dV pass, then dK pass): 2 x 128 accumulator registers cannot fit.
template <int kHeadDim> struct TensorCoreConfig;
template <> struct TensorCoreConfig<32> { static constexpr int kDkdvBlockQ = 64, kDqBlockK = 64; static constexpr bool kSplitDkdv = false; };
template <> struct TensorCoreConfig<64> { static constexpr int kDkdvBlockQ = 64, kDqBlockK = 64; static constexpr bool kSplitDkdv = false; };
template <> struct TensorCoreConfig<96> { static constexpr int kDkdvBlockQ = 32, kDqBlockK = 64; static constexpr bool kSplitDkdv = false; };
template <> struct TensorCoreConfig<128> { static constexpr int kDkdvBlockQ = 32, kDqBlockK = 64; static constexpr bool kSplitDkdv = false; };
template <> struct TensorCoreConfig<256> { static constexpr int kDkdvBlockQ = 32, kDqBlockK = 32; static constexpr bool kSplitDkdv = true; };

constexpr int kTcWarps = 4;
constexpr int kTcThreads = kTcWarps * kWarpSize;
constexpr int kTcResidentRows = 16 * kTcWarps;  // keys per dkdv CTA, queries per dq CTA

template <typename T, int kHeadDim>
struct TileShape {
  static constexpr int kRowBytes = kHeadDim * int(sizeof(T));
  static constexpr int kRowChunks = kRowBytes / kChunkBytes;
  static constexpr int kChunkElems = kChunkBytes / int(sizeof(T));
  static constexpr int kKSteps = kHeadDim / 16;  // m16n8k16 steps over the head dim
};

// Shared-memory bytes of the two tensor-core kernels (resident tiles + 2 stages of streamed tiles
// + 2 stages of fp32 row terms in dkdv).
template <typename T, int kHeadDim>
constexpr int dkdv_smem_bytes() {
  return 2 * kTcResidentRows * TileShape<T, kHeadDim>::kRowBytes +
         2 * 2 * TensorCoreConfig<kHeadDim>::kDkdvBlockQ * TileShape<T, kHeadDim>::kRowBytes +
         2 * 2 * TensorCoreConfig<kHeadDim>::kDkdvBlockQ * int(sizeof(float));
}
template <typename T, int kHeadDim>
constexpr int dq_smem_bytes() {
  return 2 * kTcResidentRows * TileShape<T, kHeadDim>::kRowBytes +
         2 * 2 * TensorCoreConfig<kHeadDim>::kDqBlockK * TileShape<T, kHeadDim>::kRowBytes;
}

// Rows [first_row, first_row + kRows) of one head of a tensor into a swizzled tile with cp.async;
// rows at or past valid_rows are zero-filled (their source is not read). `base` points at row 0.
template <typename T, int kHeadDim, int kRows>
__device__ __forceinline__ void load_tile_async(char* tile, const T* base, int64_t row_stride, int first_row,
                                                int valid_rows) {
  using Shape = TileShape<T, kHeadDim>;
  for (int idx = threadIdx.x; idx < kRows * Shape::kRowChunks; idx += blockDim.x) {
    const int row = idx / Shape::kRowChunks, chunk = idx % Shape::kRowChunks;
    const bool valid = first_row + row < valid_rows;
    const T* src = valid ? base + (first_row + row) * row_stride + chunk * Shape::kChunkElems : base;
    cp_async_16(shared_address(tile + tile_chunk_offset<Shape::kRowChunks>(row, chunk)), src, valid);
  }
}

// Rows [first_row, min(first_row + kRows, valid_rows)) of a swizzled tile to global memory, 16 bytes
// per store.
template <typename T, int kHeadDim, int kRows>
__device__ __forceinline__ void store_tile(const char* tile, T* base, int64_t row_stride, int first_row,
                                           int valid_rows) {
  using Shape = TileShape<T, kHeadDim>;
  for (int idx = threadIdx.x; idx < kRows * Shape::kRowChunks; idx += blockDim.x) {
    const int row = idx / Shape::kRowChunks, chunk = idx % Shape::kRowChunks;
    if (first_row + row >= valid_rows) continue;
    const uint4 value = *reinterpret_cast<const uint4*>(tile + tile_chunk_offset<Shape::kRowChunks>(row, chunk));
    *reinterpret_cast<uint4*>(base + (first_row + row) * row_stride + chunk * Shape::kChunkElems) = value;
  }
}

// Fragment loads (layouts: tensor_core.cuh). g = lane / 4, t = lane % 4.
// A (16 rows x 16 k) from a tile whose rows are the A rows: matrices (rows 0-7, k 0-7), (rows 8-15,
// k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) = a[0..3].
template <int kRowChunks>
__device__ __forceinline__ void load_a_fragment(uint32_t (&a)[4], const char* tile, int row0, int k0, int lane) {
  int row, chunk;
  a_fragment_lane(lane, row0, k0 / 8, row, chunk);
  ldmatrix_x4_memory_clobber(a, shared_address(tile + tile_chunk_offset<kRowChunks>(row, chunk)));
}

// B of two n8 tiles (n0..n0+15, k0..k0+15) from a tile whose rows are n (k contiguous): matrices
// (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15): b[0..1] is n-tile 0, b[2..3]
// n-tile 1.
template <int kRowChunks>
__device__ __forceinline__ void load_b_fragments(uint32_t (&b)[4], const char* tile, int n0, int k0, int lane) {
  int row, chunk;
  b_fragment_lane(lane, n0, k0 / 8, row, chunk);
  ldmatrix_x4_memory_clobber(b, shared_address(tile + tile_chunk_offset<kRowChunks>(row, chunk)));
}

// B of two n8 tiles from a tile whose rows are k (n contiguous), through ldmatrix.trans: matrices
// (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
template <int kRowChunks>
__device__ __forceinline__ void load_b_fragments_trans(uint32_t (&b)[4], const char* tile, int k0, int n0,
                                                       int lane) {
  int row, chunk;
  b_trans_fragment_lane(lane, k0, n0 / 8, row, chunk);
  ldmatrix_x4_trans(b, shared_address(tile + tile_chunk_offset<kRowChunks>(row, chunk)));
}

// acc[nt] (16 rows x kCols columns of one warp, rows row0 + g (+ 8)) scaled, into a swizzled tile of T.
template <typename T, int kHeadDim>
__device__ __forceinline__ void stage_accumulators(char* tile, const float (&acc)[kHeadDim / 8][4], float scale,
                                                   int row0, int lane) {
  using Shape = TileShape<T, kHeadDim>;
  const int g = lane >> 2, t = lane & 3;
  DLK_UNROLL
  for (int nt = 0; nt < kHeadDim / 8; ++nt) {
    DLK_UNROLL
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + g + 8 * half;
      const uint32_t bits = pack_pair<T>(acc[nt][2 * half] * scale, acc[nt][2 * half + 1] * scale);
      // Column 8 nt + 2t: chunk nt (8 elements per chunk), byte 4t inside it.
      *reinterpret_cast<uint32_t*>(tile + tile_chunk_offset<Shape::kRowChunks>(row, nt) + 4 * t) = bits;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel 1: D_i = rowsum(dO_i * O_i), one warp per row (16 rows per 128-thread CTA).
constexpr int kRowTermsRows = 16;

template <typename T>
__global__ void __launch_bounds__(128) row_terms_kernel(const AttentionBwdParams p, float* row_terms,
                                                        int batch_offset) {
  const int b = int(blockIdx.z) + batch_offset, h = blockIdx.y;
  const AttentionSequence seq = attention_sequence(p, b);
  const RowTermsLayout layout = row_terms_layout(p);
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const T* out = static_cast<const T*>(p.out);
  const T* grad_out = static_cast<const T*>(p.grad_out);
  for (int r = warp; r < kRowTermsRows; r += blockDim.x / kWarpSize) {
    const int i = blockIdx.x * kRowTermsRows + r;
    if (i >= seq.len_q) break;
    const int64_t token = seq.start_q + i;
    const T* o_row = out + row_offset(p.out_batch_stride, p.out_head_stride, p.out_row_stride, b, h, token);
    const T* do_row =
        grad_out + row_offset(p.grad_out_batch_stride, p.grad_out_head_stride, p.grad_out_row_stride, b, h, token);
    float sum = 0.0f;
    for (int d = lane; d < p.head_dim; d += kWarpSize) sum += to_accumulate(o_row[d]) * to_accumulate(do_row[d]);
    DLK_UNROLL
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) row_terms[b * layout.batch_stride + h * layout.head_stride + token] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel 2 (tensor cores): dK and/or dV of one key block. Warp w owns keys 16w .. 16w + 15 of the
// block; S^T (keys x queries) stays in its registers.
template <typename T, int kHeadDim, bool kGradK, bool kGradV>
__global__ void __launch_bounds__(kTcThreads) dkdv_tc_kernel(const AttentionBwdParams p, const float* row_terms,
                                                              int batch_offset) {
  using Shape = TileShape<T, kHeadDim>;
  constexpr int kBlockK = kTcResidentRows;
  constexpr int kBlockQ = TensorCoreConfig<kHeadDim>::kDkdvBlockQ;
  constexpr int kChunks = Shape::kRowChunks;
  constexpr bool kNeedDP = kGradK;  // dP only feeds dS, i.e. dK

  extern __shared__ __align__(128) char smem[];
  char* k_tile = smem;
  char* v_tile = k_tile + kBlockK * Shape::kRowBytes;
  char* q_tiles = v_tile + kBlockK * Shape::kRowBytes;        // [2 stages][kBlockQ rows]
  char* do_tiles = q_tiles + 2 * kBlockQ * Shape::kRowBytes;  // [2 stages][kBlockQ rows]
  float* lse_tiles = reinterpret_cast<float*>(do_tiles + 2 * kBlockQ * Shape::kRowBytes);  // [2][kBlockQ]
  float* dsum_tiles = lse_tiles + 2 * kBlockQ;                                              // [2][kBlockQ]

  const int key_block = blockIdx.x, kv_head = blockIdx.y, b = int(blockIdx.z) + batch_offset;
  const AttentionSequence seq = attention_sequence(p, b);
  if (attention_sequence_too_long(p, seq)) {  // a caller's error: NaN gradients, not stale memory
    if (blockIdx.x == 0) {
      if (kGradK) fill_rows_with_nan<T>(p.grad_k, p.grad_k_batch_stride, p.grad_k_head_stride, p.grad_k_row_stride, b,
                                        kv_head, seq.start_k, seq.len_k, p.head_dim);
      if (kGradV) fill_rows_with_nan<T>(p.grad_v, p.grad_v_batch_stride, p.grad_v_head_stride, p.grad_v_row_stride, b,
                                        kv_head, seq.start_k, seq.len_k, p.head_dim);
    }
    return;
  }
  const int j0 = key_block * kBlockK;
  if (j0 >= seq.len_k) return;  // varlen: past this sequence's keys
  const int group = p.heads_q / p.heads_kv;
  const BlockRange q_blocks = query_blocks_for_keys(p, seq, j0, kBlockQ);
  const int iterations = group * q_blocks.count();  // (query head, query block) pairs, heads outer
  const RowTermsLayout terms = row_terms_layout(p);
  const Dropout dropout = make_dropout(p);
  const float* lse = static_cast<const float*>(p.lse);

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane >> 2, t = lane & 3;

  const T* k_base = static_cast<const T*>(p.k) +
                    row_offset(p.k_batch_stride, p.k_head_stride, p.k_row_stride, b, kv_head, seq.start_k);
  const T* v_base = static_cast<const T*>(p.v) +
                    row_offset(p.v_batch_stride, p.v_head_stride, p.v_row_stride, b, kv_head, seq.start_k);
  load_tile_async<T, kHeadDim, kBlockK>(k_tile, k_base, p.k_row_stride, j0, seq.len_k);
  if (kNeedDP) load_tile_async<T, kHeadDim, kBlockK>(v_tile, v_base, p.v_row_stride, j0, seq.len_k);
  cp_async_commit();

  // Issues the loads of iteration `it` into stage it % 2: Q and dO by cp.async, the row terms by
  // plain loads (the stage was last read before the previous iteration's closing barrier).
  auto issue = [&](int it) {
    const int stage = it & 1;
    const int h = kv_head * group + it / q_blocks.count();
    const int i0 = (q_blocks.first + it % q_blocks.count()) * kBlockQ;
    const T* q_base = static_cast<const T*>(p.q) +
                      row_offset(p.q_batch_stride, p.q_head_stride, p.q_row_stride, b, h, seq.start_q);
    const T* do_base = static_cast<const T*>(p.grad_out) +
                       row_offset(p.grad_out_batch_stride, p.grad_out_head_stride, p.grad_out_row_stride, b, h,
                                  seq.start_q);
    load_tile_async<T, kHeadDim, kBlockQ>(q_tiles + stage * kBlockQ * Shape::kRowBytes, q_base, p.q_row_stride, i0,
                                          seq.len_q);
    load_tile_async<T, kHeadDim, kBlockQ>(do_tiles + stage * kBlockQ * Shape::kRowBytes, do_base,
                                          p.grad_out_row_stride, i0, seq.len_q);
    for (int r = threadIdx.x; r < kBlockQ; r += blockDim.x) {
      const int i = i0 + r;
      const bool valid = i < seq.len_q;
      const int64_t at = b * p.lse_batch_stride + h * p.lse_head_stride + seq.start_q + i;
      const int64_t term_at = b * terms.batch_stride + h * terms.head_stride + seq.start_q + i;
      lse_tiles[stage * kBlockQ + r] = lse_log2_of(valid ? lse[at] : 0.0f, valid);
      dsum_tiles[stage * kBlockQ + r] = valid ? row_terms[term_at] : 0.0f;
    }
  };

  if (iterations > 0) issue(0);
  cp_async_commit();

  float dk_acc[kHeadDim / 8][4] = {};
  float dv_acc[kHeadDim / 8][4] = {};
  const int key_row0 = warp * 16;  // this warp's keys inside the block

  for (int it = 0; it < iterations; ++it) {
    const int stage = it & 1;
    if (it + 1 < iterations) issue(it + 1);
    cp_async_commit();    // possibly empty: keeps the group count uniform for the wait below
    cp_async_wait<1>();   // everything but the group just issued has landed (K, V, iteration it)
    __syncthreads();

    const int h = kv_head * group + it / q_blocks.count();
    const int i0 = (q_blocks.first + it % q_blocks.count()) * kBlockQ;
    const char* q_tile = q_tiles + stage * kBlockQ * Shape::kRowBytes;
    const char* do_tile = do_tiles + stage * kBlockQ * Shape::kRowBytes;
    const float* lse_tile = lse_tiles + stage * kBlockQ;
    const float* dsum_tile = dsum_tiles + stage * kBlockQ;

    // S^T = K Q^T and dP^T = V dO^T: 16 keys x kBlockQ queries per warp.
    float st[kBlockQ / 8][4] = {};
    float dpt[kBlockQ / 8][4] = {};
    DLK_UNROLL
    for (int ks = 0; ks < Shape::kKSteps; ++ks) {
      uint32_t a[4];
      load_a_fragment<kChunks>(a, k_tile, key_row0, ks * 16, lane);
      DLK_UNROLL
      for (int np = 0; np < kBlockQ / 16; ++np) {
        uint32_t bq[4];
        load_b_fragments<kChunks>(bq, q_tile, np * 16, ks * 16, lane);
        mma_sync_unordered(st[2 * np], a, {bq[0], bq[1]}, TypeTag<T>{});
        mma_sync_unordered(st[2 * np + 1], a, {bq[2], bq[3]}, TypeTag<T>{});
      }
      if (kNeedDP) {
        load_a_fragment<kChunks>(a, v_tile, key_row0, ks * 16, lane);
        DLK_UNROLL
        for (int np = 0; np < kBlockQ / 16; ++np) {
          uint32_t bo[4];
          load_b_fragments<kChunks>(bo, do_tile, np * 16, ks * 16, lane);
          mma_sync_unordered(dpt[2 * np], a, {bo[0], bo[1]}, TypeTag<T>{});
          mma_sync_unordered(dpt[2 * np + 1], a, {bo[2], bo[3]}, TypeTag<T>{});
        }
      }
    }

    // Element (key j, query i): st <- P' = P * dropout factor (for dV), dpt <- dS = P (dP * factor - D_i).
    DLK_UNROLL
    for (int nt = 0; nt < kBlockQ / 8; ++nt) {
      DLK_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int jl = key_row0 + g + 8 * (e >> 1), il = nt * 8 + 2 * t + (e & 1);
        const int j = j0 + jl, i = i0 + il;
        const bool visible = i < seq.len_q && j < attention_key_end(p, i, seq.len_q, seq.len_k);
        float prob = 0.0f, factor = 0.0f;
        if (visible) {
          prob = exp2f(biased_score<T>(p, st[nt][e], b, h, i, j) * kLog2e - lse_tile[il]);
          factor = dropout.factor(h, dropout.sequence_token(b, seq.start_q + i), j);
        }
        st[nt][e] = prob * factor;
        if (kNeedDP) dpt[nt][e] = prob * (dpt[nt][e] * factor - dsum_tile[il]);
      }
    }

    // dV += P'^T dO and dK += dS^T Q: k = the block's queries, n = the head dim.
    DLK_UNROLL
    for (int ks = 0; ks < kBlockQ / 16; ++ks) {
      if (kGradV) {
        uint32_t a[4];
        accumulators_to_a_fragment<T>(a, st[2 * ks], st[2 * ks + 1]);
        DLK_UNROLL
        for (int np = 0; np < kHeadDim / 16; ++np) {
          uint32_t bo[4];
          load_b_fragments_trans<kChunks>(bo, do_tile, ks * 16, np * 16, lane);
          mma_sync_unordered(dv_acc[2 * np], a, {bo[0], bo[1]}, TypeTag<T>{});
          mma_sync_unordered(dv_acc[2 * np + 1], a, {bo[2], bo[3]}, TypeTag<T>{});
        }
      }
      if (kGradK) {
        uint32_t a[4];
        accumulators_to_a_fragment<T>(a, dpt[2 * ks], dpt[2 * ks + 1]);
        DLK_UNROLL
        for (int np = 0; np < kHeadDim / 16; ++np) {
          uint32_t bq[4];
          load_b_fragments_trans<kChunks>(bq, q_tile, ks * 16, np * 16, lane);
          mma_sync_unordered(dk_acc[2 * np], a, {bq[0], bq[1]}, TypeTag<T>{});
          mma_sync_unordered(dk_acc[2 * np + 1], a, {bq[2], bq[3]}, TypeTag<T>{});
        }
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's issue()
  }

  // Epilogue: stage through the (now free) K and V tiles, then 16-byte stores of the valid keys.
  cp_async_wait<0>();
  __syncthreads();
  if (kGradK) stage_accumulators<T, kHeadDim>(k_tile, dk_acc, p.scale, key_row0, lane);
  if (kGradV) stage_accumulators<T, kHeadDim>(v_tile, dv_acc, 1.0f, key_row0, lane);
  __syncthreads();
  if (kGradK) {
    T* dk_base = static_cast<T*>(p.grad_k) + row_offset(p.grad_k_batch_stride, p.grad_k_head_stride,
                                                        p.grad_k_row_stride, b, kv_head, seq.start_k);
    store_tile<T, kHeadDim, kBlockK>(k_tile, dk_base, p.grad_k_row_stride, j0, seq.len_k);
  }
  if (kGradV) {
    T* dv_base = static_cast<T*>(p.grad_v) + row_offset(p.grad_v_batch_stride, p.grad_v_head_stride,
                                                        p.grad_v_row_stride, b, kv_head, seq.start_k);
    store_tile<T, kHeadDim, kBlockK>(v_tile, dv_base, p.grad_v_row_stride, j0, seq.len_k);
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel 3 (tensor cores): dQ of one query block. Warp w owns queries 16w .. 16w + 15.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kTcThreads) dq_tc_kernel(const AttentionBwdParams p, const float* row_terms,
                                                            int batch_offset) {
  using Shape = TileShape<T, kHeadDim>;
  constexpr int kBlockQ = kTcResidentRows;
  constexpr int kBlockK = TensorCoreConfig<kHeadDim>::kDqBlockK;
  constexpr int kChunks = Shape::kRowChunks;

  extern __shared__ __align__(128) char smem[];
  char* q_tile = smem;
  char* do_tile = q_tile + kBlockQ * Shape::kRowBytes;
  char* k_tiles = do_tile + kBlockQ * Shape::kRowBytes;      // [2 stages][kBlockK rows]
  char* v_tiles = k_tiles + 2 * kBlockK * Shape::kRowBytes;  // [2 stages][kBlockK rows]

  const int query_block = blockIdx.x, h = blockIdx.y, b = int(blockIdx.z) + batch_offset;
  const AttentionSequence seq = attention_sequence(p, b);
  if (attention_sequence_too_long(p, seq)) {
    if (blockIdx.x == 0)
      fill_rows_with_nan<T>(p.grad_q, p.grad_q_batch_stride, p.grad_q_head_stride, p.grad_q_row_stride, b, h,
                            seq.start_q, seq.len_q, p.head_dim);
    return;
  }
  const int i0 = query_block * kBlockQ;
  if (i0 >= seq.len_q) return;
  const int kv_head = h / (p.heads_q / p.heads_kv);
  const int key_blocks = attention_key_block_end(p, i0, i0 + kBlockQ, seq.len_q, seq.len_k, kBlockK);
  const RowTermsLayout terms = row_terms_layout(p);
  const Dropout dropout = make_dropout(p);

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane >> 2, t = lane & 3;
  const int query_row0 = warp * 16;

  const T* q_base = static_cast<const T*>(p.q) +
                    row_offset(p.q_batch_stride, p.q_head_stride, p.q_row_stride, b, h, seq.start_q);
  const T* do_base = static_cast<const T*>(p.grad_out) + row_offset(p.grad_out_batch_stride, p.grad_out_head_stride,
                                                                    p.grad_out_row_stride, b, h, seq.start_q);
  const T* k_base = static_cast<const T*>(p.k) +
                    row_offset(p.k_batch_stride, p.k_head_stride, p.k_row_stride, b, kv_head, seq.start_k);
  const T* v_base = static_cast<const T*>(p.v) +
                    row_offset(p.v_batch_stride, p.v_head_stride, p.v_row_stride, b, kv_head, seq.start_k);
  load_tile_async<T, kHeadDim, kBlockQ>(q_tile, q_base, p.q_row_stride, i0, seq.len_q);
  load_tile_async<T, kHeadDim, kBlockQ>(do_tile, do_base, p.grad_out_row_stride, i0, seq.len_q);
  cp_async_commit();

  auto issue = [&](int kb) {
    const int stage = kb & 1;
    load_tile_async<T, kHeadDim, kBlockK>(k_tiles + stage * kBlockK * Shape::kRowBytes, k_base, p.k_row_stride,
                                          kb * kBlockK, seq.len_k);
    load_tile_async<T, kHeadDim, kBlockK>(v_tiles + stage * kBlockK * Shape::kRowBytes, v_base, p.v_row_stride,
                                          kb * kBlockK, seq.len_k);
  };
  if (key_blocks > 0) issue(0);
  cp_async_commit();

  // This thread's two rows (g, g + 8 of the warp's 16): log2-domain lse and D_i.
  float row_lse[2], row_dsum[2];
  DLK_UNROLL
  for (int half = 0; half < 2; ++half) {
    const int i = i0 + query_row0 + g + 8 * half;
    const bool valid = i < seq.len_q;
    const float* lse = static_cast<const float*>(p.lse);
    row_lse[half] = lse_log2_of(valid ? lse[b * p.lse_batch_stride + h * p.lse_head_stride + seq.start_q + i] : 0.0f,
                                valid);
    row_dsum[half] = valid ? row_terms[b * terms.batch_stride + h * terms.head_stride + seq.start_q + i] : 0.0f;
  }

  float dq_acc[kHeadDim / 8][4] = {};
  for (int kb = 0; kb < key_blocks; ++kb) {
    const int stage = kb & 1;
    if (kb + 1 < key_blocks) issue(kb + 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const char* k_tile = k_tiles + stage * kBlockK * Shape::kRowBytes;
    const char* v_tile = v_tiles + stage * kBlockK * Shape::kRowBytes;
    const int j0 = kb * kBlockK;

    // Dropout decisions of this thread's elements of S (bit 4 nt + e: query row g + 8 (e >> 1), key
    // 8 nt + 2t + (e & 1), as in the dS loop below), drawn before S and dP occupy their registers.
    // (dkdv_tc keeps factor() per element: there this form measured +36..42 registers at head dim 64.)
    const int64_t first_token = dropout.sequence_token(b, seq.start_q + i0 + query_row0 + g);
    const uint32_t keep = dropout.keep_bits<kBlockK / 2>(dropout.counter(h, first_token, j0 + 2 * t),
                                                         [](int idx, int& di, int& dj) {
                                                           di = 8 * ((idx % 4) >> 1);
                                                           dj = 8 * (idx / 4) + (idx % 2);
                                                         });

    // S = Q K^T and dP = dO V^T: 16 queries x kBlockK keys per warp.
    float sc[kBlockK / 8][4] = {};
    float dp[kBlockK / 8][4] = {};
    DLK_UNROLL
    for (int ks = 0; ks < Shape::kKSteps; ++ks) {
      uint32_t a[4];
      load_a_fragment<kChunks>(a, q_tile, query_row0, ks * 16, lane);
      DLK_UNROLL
      for (int np = 0; np < kBlockK / 16; ++np) {
        uint32_t bk[4];
        load_b_fragments<kChunks>(bk, k_tile, np * 16, ks * 16, lane);
        mma_sync_unordered(sc[2 * np], a, {bk[0], bk[1]}, TypeTag<T>{});
        mma_sync_unordered(sc[2 * np + 1], a, {bk[2], bk[3]}, TypeTag<T>{});
      }
      load_a_fragment<kChunks>(a, do_tile, query_row0, ks * 16, lane);
      DLK_UNROLL
      for (int np = 0; np < kBlockK / 16; ++np) {
        uint32_t bv[4];
        load_b_fragments<kChunks>(bv, v_tile, np * 16, ks * 16, lane);
        mma_sync_unordered(dp[2 * np], a, {bv[0], bv[1]}, TypeTag<T>{});
        mma_sync_unordered(dp[2 * np + 1], a, {bv[2], bv[3]}, TypeTag<T>{});
      }
    }

    // dS = P (dP * dropout factor - D_i), into sc.
    DLK_UNROLL
    for (int nt = 0; nt < kBlockK / 8; ++nt) {
      DLK_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int half = e >> 1;
        const int i = i0 + query_row0 + g + 8 * half, j = j0 + nt * 8 + 2 * t + (e & 1);
        const bool visible = i < seq.len_q && j < attention_key_end(p, i, seq.len_q, seq.len_k);
        float ds = 0.0f;
        if (visible) {
          const float prob = exp2f(biased_score<T>(p, sc[nt][e], b, h, i, j) * kLog2e - row_lse[half]);
          ds = prob * (dp[nt][e] * dropout.factor_of(keep, 4 * nt + e) - row_dsum[half]);
        }
        sc[nt][e] = ds;
      }
    }

    // dQ += dS K: k = the block's keys, n = the head dim (K read transposed).
    DLK_UNROLL
    for (int ks = 0; ks < kBlockK / 16; ++ks) {
      uint32_t a[4];
      accumulators_to_a_fragment<T>(a, sc[2 * ks], sc[2 * ks + 1]);
      DLK_UNROLL
      for (int np = 0; np < kHeadDim / 16; ++np) {
        uint32_t bk[4];
        load_b_fragments_trans<kChunks>(bk, k_tile, ks * 16, np * 16, lane);
        mma_sync_unordered(dq_acc[2 * np], a, {bk[0], bk[1]}, TypeTag<T>{});
        mma_sync_unordered(dq_acc[2 * np + 1], a, {bk[2], bk[3]}, TypeTag<T>{});
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's issue()
  }

  cp_async_wait<0>();
  __syncthreads();
  stage_accumulators<T, kHeadDim>(q_tile, dq_acc, p.scale, query_row0, lane);
  __syncthreads();
  T* dq_base = static_cast<T*>(p.grad_q) +
               row_offset(p.grad_q_batch_stride, p.grad_q_head_stride, p.grad_q_row_stride, b, h, seq.start_q);
  store_tile<T, kHeadDim, kBlockQ>(q_tile, dq_base, p.grad_q_row_stride, i0, seq.len_q);
}

// ---------------------------------------------------------------------------------------------
// SIMT kernels (fp32 exact; fallback for fp16 / bf16). Blocks of 16 keys x 16 queries, fp32 tiles
// in shared memory (converted on load, any alignment), 128 threads: each score (i, j) is computed
// by one thread (2 per thread), each output element (row, d) owned by one thread.
constexpr int kSimtBlock = 16;
constexpr int kSimtThreads = 128;

// 4 fp32 tiles of kSimtBlock x head_dim, 2 score tiles of kSimtBlock^2, 2 row-term vectors.
inline size_t simt_smem_bytes(int head_dim) {
  return sizeof(float) * (4 * size_t(kSimtBlock) * head_dim + 2 * kSimtBlock * kSimtBlock + 2 * kSimtBlock);
}

// Rows [first_row, first_row + kSimtBlock) of one head into an fp32 tile (rows past valid_rows: 0).
// Not load_tile: this one converts to fp32 and takes any alignment (the SIMT path's reason to be).
template <typename T>
__device__ __forceinline__ void load_tile_simt(float* tile, const T* base, int64_t row_stride, int first_row,
                                               int valid_rows, int head_dim) {
  for (int idx = threadIdx.x; idx < kSimtBlock * head_dim; idx += blockDim.x) {
    const int row = idx / head_dim, d = idx % head_dim;
    tile[idx] = first_row + row < valid_rows ? to_accumulate(base[(first_row + row) * row_stride + d]) : 0.0f;
  }
}

__device__ __forceinline__ float dot_rows(const float* a, const float* b, int n) {
  float sum = 0.0f;
  for (int d = 0; d < n; ++d) sum = fmaf(a[d], b[d], sum);
  return sum;
}

// 3 CTAs per SM up to head dim 128 (at most 170 registers, which these fit without spills): pins
// the occupancy that scheduling noise otherwise moves (the dropout token cost 173 at head dim 128, sm_90a).
template <int kHeadDim>
constexpr int kDkdvSimtMinBlocks = kHeadDim <= 128 ? 3 : 1;

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kSimtThreads, kDkdvSimtMinBlocks<kHeadDim>)
    dkdv_simt_kernel(const AttentionBwdParams p, const float* row_terms, int batch_offset) {
  constexpr int kOwned = kSimtBlock * kHeadDim / kSimtThreads;  // output elements per thread
  static_assert(kSimtBlock * kHeadDim % kSimtThreads == 0, "whole outputs per thread");
  extern __shared__ __align__(16) char smem_raw[];
  float* k_tile = reinterpret_cast<float*>(smem_raw);
  float* v_tile = k_tile + kSimtBlock * kHeadDim;
  float* q_tile = v_tile + kSimtBlock * kHeadDim;
  float* do_tile = q_tile + kSimtBlock * kHeadDim;
  float* prob_tile = do_tile + kSimtBlock * kHeadDim;  // P' [query][key]
  float* ds_tile = prob_tile + kSimtBlock * kSimtBlock;  // dS [query][key]
  float* lse_tile = ds_tile + kSimtBlock * kSimtBlock;
  float* dsum_tile = lse_tile + kSimtBlock;

  const int key_block = blockIdx.x, kv_head = blockIdx.y, b = int(blockIdx.z) + batch_offset;
  const AttentionSequence seq = attention_sequence(p, b);
  if (attention_sequence_too_long(p, seq)) {  // a caller's error: NaN gradients, not stale memory
    if (blockIdx.x == 0) {
      fill_rows_with_nan<T>(p.grad_k, p.grad_k_batch_stride, p.grad_k_head_stride, p.grad_k_row_stride, b, kv_head,
                            seq.start_k, seq.len_k, p.head_dim);
      fill_rows_with_nan<T>(p.grad_v, p.grad_v_batch_stride, p.grad_v_head_stride, p.grad_v_row_stride, b, kv_head,
                            seq.start_k, seq.len_k, p.head_dim);
    }
    return;
  }
  const int j0 = key_block * kSimtBlock;
  if (j0 >= seq.len_k) return;
  const int group = p.heads_q / p.heads_kv;
  const BlockRange q_blocks = query_blocks_for_keys(p, seq, j0, kSimtBlock);
  const RowTermsLayout terms = row_terms_layout(p);
  const Dropout dropout = make_dropout(p);
  const float* lse = static_cast<const float*>(p.lse);

  load_tile_simt(k_tile, static_cast<const T*>(p.k) + row_offset(p.k_batch_stride, p.k_head_stride, p.k_row_stride,
                                                                  b, kv_head, seq.start_k),
                 p.k_row_stride, j0, seq.len_k, kHeadDim);
  load_tile_simt(v_tile, static_cast<const T*>(p.v) + row_offset(p.v_batch_stride, p.v_head_stride, p.v_row_stride,
                                                                  b, kv_head, seq.start_k),
                 p.v_row_stride, j0, seq.len_k, kHeadDim);

  float dk_acc[kOwned] = {}, dv_acc[kOwned] = {};
  for (int h = kv_head * group; h < (kv_head + 1) * group; ++h) {
    for (int qb = q_blocks.first; qb < q_blocks.end; ++qb) {
      const int i0 = qb * kSimtBlock;
      __syncthreads();  // the previous block's tiles are no longer read
      load_tile_simt(q_tile, static_cast<const T*>(p.q) + row_offset(p.q_batch_stride, p.q_head_stride,
                                                                      p.q_row_stride, b, h, seq.start_q),
                     p.q_row_stride, i0, seq.len_q, kHeadDim);
      load_tile_simt(do_tile, static_cast<const T*>(p.grad_out) + row_offset(p.grad_out_batch_stride,
                                                                              p.grad_out_head_stride,
                                                                              p.grad_out_row_stride, b, h, seq.start_q),
                     p.grad_out_row_stride, i0, seq.len_q, kHeadDim);
      for (int r = threadIdx.x; r < kSimtBlock; r += blockDim.x) {
        const int i = i0 + r;
        const bool valid = i < seq.len_q;
        lse_tile[r] = lse_log2_of(valid ? lse[b * p.lse_batch_stride + h * p.lse_head_stride + seq.start_q + i] : 0.0f,
                                  valid);
        dsum_tile[r] = valid ? row_terms[b * terms.batch_stride + h * terms.head_stride + seq.start_q + i] : 0.0f;
      }
      __syncthreads();
      for (int idx = threadIdx.x; idx < kSimtBlock * kSimtBlock; idx += blockDim.x) {
        const int il = idx / kSimtBlock, jl = idx % kSimtBlock;
        const int i = i0 + il, j = j0 + jl;
        float prob = 0.0f, factor = 0.0f, dp = 0.0f;
        if (i < seq.len_q && j < attention_key_end(p, i, seq.len_q, seq.len_k)) {
          const float dot = dot_rows(q_tile + il * kHeadDim, k_tile + jl * kHeadDim, kHeadDim);
          prob = exp2f(biased_score<T>(p, dot, b, h, i, j) * kLog2e - lse_tile[il]);
          factor = dropout.factor(h, dropout.sequence_token(b, seq.start_q + i), j);
          dp = dot_rows(do_tile + il * kHeadDim, v_tile + jl * kHeadDim, kHeadDim);
        }
        prob_tile[idx] = prob * factor;
        ds_tile[idx] = prob * (dp * factor - dsum_tile[il]);
      }
      __syncthreads();
      // Queries outer and not unrolled: unrolling both loops spills at head dim 128 / 256.
      DLK_ATTN_NO_UNROLL
      for (int il = 0; il < kSimtBlock; ++il) {
        DLK_UNROLL
        for (int o = 0; o < kOwned; ++o) {
          const int idx = threadIdx.x + o * kSimtThreads, jl = idx / kHeadDim, d = idx % kHeadDim;
          dv_acc[o] = fmaf(prob_tile[il * kSimtBlock + jl], do_tile[il * kHeadDim + d], dv_acc[o]);
          dk_acc[o] = fmaf(ds_tile[il * kSimtBlock + jl], q_tile[il * kHeadDim + d], dk_acc[o]);
        }
      }
    }
  }

  T* dk = static_cast<T*>(p.grad_k) +
          row_offset(p.grad_k_batch_stride, p.grad_k_head_stride, p.grad_k_row_stride, b, kv_head, seq.start_k);
  T* dv = static_cast<T*>(p.grad_v) +
          row_offset(p.grad_v_batch_stride, p.grad_v_head_stride, p.grad_v_row_stride, b, kv_head, seq.start_k);
  DLK_UNROLL
  for (int o = 0; o < kOwned; ++o) {
    const int idx = threadIdx.x + o * kSimtThreads, jl = idx / kHeadDim, d = idx % kHeadDim;
    const int j = j0 + jl;
    if (j >= seq.len_k) continue;
    dk[j * p.grad_k_row_stride + d] = from_accumulate<T>(dk_acc[o] * p.scale);
    dv[j * p.grad_v_row_stride + d] = from_accumulate<T>(dv_acc[o]);
  }
}

// Head dim 256: 3 CTAs per SM, as many as its 66 KiB of shared memory allows on sm_90 (2 on sm_80).
// Left free, ptxas for sm_90a aims at 4 (128 registers) and spills in the key loop since the batch
// offset keeps b in a register; 3 leave it 170. Other head dims: 0, no minimum (the PTX of a bare
// __launch_bounds__(kSimtThreads)); a minimum of 1 would let ptxas double their registers.
template <int kHeadDim>
constexpr int kDqSimtMinBlocks = kHeadDim == 256 ? 3 : 0;

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kSimtThreads, kDqSimtMinBlocks<kHeadDim>)
    dq_simt_kernel(const AttentionBwdParams p, const float* row_terms, int batch_offset) {
  constexpr int kOwned = kSimtBlock * kHeadDim / kSimtThreads;
  extern __shared__ __align__(16) char smem_raw[];
  float* q_tile = reinterpret_cast<float*>(smem_raw);
  float* do_tile = q_tile + kSimtBlock * kHeadDim;
  float* k_tile = do_tile + kSimtBlock * kHeadDim;
  float* v_tile = k_tile + kSimtBlock * kHeadDim;
  float* ds_tile = v_tile + kSimtBlock * kHeadDim;  // dS [query][key]
  float* lse_tile = ds_tile + 2 * kSimtBlock * kSimtBlock;
  float* dsum_tile = lse_tile + kSimtBlock;

  const int query_block = blockIdx.x, h = blockIdx.y, b = int(blockIdx.z) + batch_offset;
  const AttentionSequence seq = attention_sequence(p, b);
  if (attention_sequence_too_long(p, seq)) {
    if (blockIdx.x == 0)
      fill_rows_with_nan<T>(p.grad_q, p.grad_q_batch_stride, p.grad_q_head_stride, p.grad_q_row_stride, b, h,
                            seq.start_q, seq.len_q, p.head_dim);
    return;
  }
  const int i0 = query_block * kSimtBlock;
  if (i0 >= seq.len_q) return;
  const int kv_head = h / (p.heads_q / p.heads_kv);
  const int key_blocks = attention_key_block_end(p, i0, i0 + kSimtBlock, seq.len_q, seq.len_k, kSimtBlock);
  const RowTermsLayout terms = row_terms_layout(p);
  const Dropout dropout = make_dropout(p);
  const float* lse = static_cast<const float*>(p.lse);

  load_tile_simt(q_tile, static_cast<const T*>(p.q) + row_offset(p.q_batch_stride, p.q_head_stride, p.q_row_stride,
                                                                  b, h, seq.start_q),
                 p.q_row_stride, i0, seq.len_q, kHeadDim);
  load_tile_simt(do_tile, static_cast<const T*>(p.grad_out) + row_offset(p.grad_out_batch_stride,
                                                                          p.grad_out_head_stride,
                                                                          p.grad_out_row_stride, b, h, seq.start_q),
                 p.grad_out_row_stride, i0, seq.len_q, kHeadDim);
  for (int r = threadIdx.x; r < kSimtBlock; r += blockDim.x) {
    const int i = i0 + r;
    const bool valid = i < seq.len_q;
    lse_tile[r] =
        lse_log2_of(valid ? lse[b * p.lse_batch_stride + h * p.lse_head_stride + seq.start_q + i] : 0.0f, valid);
    dsum_tile[r] = valid ? row_terms[b * terms.batch_stride + h * terms.head_stride + seq.start_q + i] : 0.0f;
  }

  const T* k_base = static_cast<const T*>(p.k) +
                    row_offset(p.k_batch_stride, p.k_head_stride, p.k_row_stride, b, kv_head, seq.start_k);
  const T* v_base = static_cast<const T*>(p.v) +
                    row_offset(p.v_batch_stride, p.v_head_stride, p.v_row_stride, b, kv_head, seq.start_k);
  float dq_acc[kOwned] = {};
  for (int kb = 0; kb < key_blocks; ++kb) {
    const int j0 = kb * kSimtBlock;
    __syncthreads();  // the previous block's tiles are no longer read
    load_tile_simt(k_tile, k_base, p.k_row_stride, j0, seq.len_k, kHeadDim);
    load_tile_simt(v_tile, v_base, p.v_row_stride, j0, seq.len_k, kHeadDim);
    __syncthreads();
    for (int idx = threadIdx.x; idx < kSimtBlock * kSimtBlock; idx += blockDim.x) {
      const int il = idx / kSimtBlock, jl = idx % kSimtBlock;
      const int i = i0 + il, j = j0 + jl;
      float ds = 0.0f;
      if (i < seq.len_q && j < attention_key_end(p, i, seq.len_q, seq.len_k)) {
        const float dot = dot_rows(q_tile + il * kHeadDim, k_tile + jl * kHeadDim, kHeadDim);
        const float prob = exp2f(biased_score<T>(p, dot, b, h, i, j) * kLog2e - lse_tile[il]);
        const float dp = dot_rows(do_tile + il * kHeadDim, v_tile + jl * kHeadDim, kHeadDim);
        ds = prob * (dp * dropout.factor(h, dropout.sequence_token(b, seq.start_q + i), j) - dsum_tile[il]);
      }
      ds_tile[idx] = ds;
    }
    __syncthreads();
    DLK_UNROLL
    for (int o = 0; o < kOwned; ++o) {
      const int idx = threadIdx.x + o * kSimtThreads, il = idx / kHeadDim, d = idx % kHeadDim;
      for (int jl = 0; jl < kSimtBlock; ++jl) {
        dq_acc[o] = fmaf(ds_tile[il * kSimtBlock + jl], k_tile[jl * kHeadDim + d], dq_acc[o]);
      }
    }
  }

  T* dq = static_cast<T*>(p.grad_q) +
          row_offset(p.grad_q_batch_stride, p.grad_q_head_stride, p.grad_q_row_stride, b, h, seq.start_q);
  DLK_UNROLL
  for (int o = 0; o < kOwned; ++o) {
    const int idx = threadIdx.x + o * kSimtThreads, il = idx / kHeadDim, d = idx % kHeadDim;
    const int i = i0 + il;
    if (i < seq.len_q) dq[i * p.grad_q_row_stride + d] = from_accumulate<T>(dq_acc[o] * p.scale);
  }
}

// ---------------------------------------------------------------------------------------------
// The launches (<<<>>>: device compilation only; the kernels above also compile on the host, where the
// CPU emulator runs them, tests/emulator/attention_bwd_emulate.cpp).
#if defined(__CUDACC__)

// Per-dtype entry points, explicitly instantiated in attention_bwd_{f16,bf16,f32}.cu (attention_bwd.cu
// sees them as extern templates). The launcher has validated the params (head dim, heads at most
// grid.y's 65,535) and, for tensor_cores, the 16-byte alignment of every tile pointer and stride.

// Larger of the dynamic shared memory of the two main kernels (compared with the device's limit).
template <typename T>
size_t attention_backward_smem_bytes(int head_dim, bool tensor_cores) {
  if (!tensor_cores) return simt_smem_bytes(head_dim);
  if constexpr (sizeof(T) == 2) {
    return dispatch_int(AttentionHeadDimList{}, head_dim, size_t(0), [](auto d) {
      constexpr int kDkdv = dkdv_smem_bytes<T, decltype(d)::value>(), kDq = dq_smem_bytes<T, decltype(d)::value>();
      return size_t(kDkdv > kDq ? kDkdv : kDq);
    });
  }
  return 0;
}

// Grid (row blocks, heads, sequences), with `smem` bytes of dynamic shared memory (opted in above the
// 48 KiB default). Grid z holds at most 65,535 sequences, so larger batches go to further launches
// (plan::plan_attention_grid), each told its first sequence: a kernel's sequence is
// b = blockIdx.z + batch_offset, and every per-sequence index (cu_seqlens, lse, row terms, dropout
// tokens, bias, NaN fill) uses that absolute b.
template <typename Kernel>
Status launch_kernel(Kernel kernel, const plan::AttentionGrid& grid, int threads, size_t smem, cudaStream_t stream,
                     const AttentionBwdParams& p, float* row_terms) {
  if (grid.row_blocks == 0) return Status::kOk;  // nothing to do (e.g. no keys: dK, dV have no rows)
  if (!grid.valid()) return Status::kInvalidArgument;
  if (!allow_dynamic_smem(kernel, smem)) return Status::kLaunchFailed;
  for (int64_t chunk = 0; chunk < grid.sequences.launches; ++chunk) {
    const dim3 blocks(unsigned(grid.row_blocks), unsigned(grid.heads), unsigned(grid.sequences.size(chunk)));
    kernel<<<blocks, threads, smem, stream>>>(p, row_terms, int(grid.sequences.first(chunk)));
    const Status status = check_launch();
    if (status != Status::kOk) return status;
  }
  return Status::kOk;
}

template <typename T, int kHeadDim>
Status run_tensor_core_kernels(const AttentionBwdParams& p, float* row_terms, cudaStream_t stream) {
  using Config = TensorCoreConfig<kHeadDim>;
  const plan::AttentionGrid dkdv_grid = plan::plan_attention_grid(p.seqlen_k, kTcResidentRows, p.heads_kv, p.batch);
  const size_t dkdv_smem = dkdv_smem_bytes<T, kHeadDim>();
  Status status;
  if constexpr (Config::kSplitDkdv) {
    status = launch_kernel(dkdv_tc_kernel<T, kHeadDim, false, true>, dkdv_grid, kTcThreads, dkdv_smem, stream, p,
                           row_terms);
    if (status != Status::kOk) return status;
    status = launch_kernel(dkdv_tc_kernel<T, kHeadDim, true, false>, dkdv_grid, kTcThreads, dkdv_smem, stream, p,
                           row_terms);
  } else {
    status = launch_kernel(dkdv_tc_kernel<T, kHeadDim, true, true>, dkdv_grid, kTcThreads, dkdv_smem, stream, p,
                           row_terms);
  }
  if (status != Status::kOk) return status;
  const plan::AttentionGrid dq_grid = plan::plan_attention_grid(p.seqlen_q, kTcResidentRows, p.heads_q, p.batch);
  return launch_kernel(dq_tc_kernel<T, kHeadDim>, dq_grid, kTcThreads, dq_smem_bytes<T, kHeadDim>(), stream, p,
                       row_terms);
}

template <typename T, int kHeadDim>
Status run_simt_kernels(const AttentionBwdParams& p, float* row_terms, cudaStream_t stream) {
  const size_t smem = simt_smem_bytes(kHeadDim);
  const plan::AttentionGrid dkdv_grid = plan::plan_attention_grid(p.seqlen_k, kSimtBlock, p.heads_kv, p.batch);
  const Status status =
      launch_kernel(dkdv_simt_kernel<T, kHeadDim>, dkdv_grid, kSimtThreads, smem, stream, p, row_terms);
  if (status != Status::kOk) return status;
  const plan::AttentionGrid dq_grid = plan::plan_attention_grid(p.seqlen_q, kSimtBlock, p.heads_q, p.batch);
  return launch_kernel(dq_simt_kernel<T, kHeadDim>, dq_grid, kSimtThreads, smem, stream, p, row_terms);
}

template <typename T, int kHeadDim>
Status run_kernels(const AttentionBwdParams& p, float* row_terms, bool tensor_cores, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {
    if (tensor_cores) return run_tensor_core_kernels<T, kHeadDim>(p, row_terms, stream);
  }
  return run_simt_kernels<T, kHeadDim>(p, row_terms, stream);
}

// Row terms, then dK/dV, then dQ, in stream order (both gradient kernels read the row terms).
template <typename T>
Status run_attention_backward(const AttentionBwdParams& p, float* row_terms, bool tensor_cores,
                              cudaStream_t stream) {
  const plan::AttentionGrid terms_grid = plan::plan_attention_grid(p.seqlen_q, kRowTermsRows, p.heads_q, p.batch);
  const Status status = launch_kernel(row_terms_kernel<T>, terms_grid, 128, 0, stream, p, row_terms);
  if (status != Status::kOk) return status;
  return dispatch_int(AttentionHeadDimList{}, p.head_dim, Status::kInvalidArgument, [&](auto head_dim) {
    return run_kernels<T, decltype(head_dim)::value>(p, row_terms, tensor_cores, stream);
  });
}

// Instantiated in the generated attention_bwd_<dtype>.cu files, one dtype per file.
// BEGIN GENERATED by csrc/cuda/generate_kernels.py: do not edit by hand
extern template Status run_attention_backward<__half>(const AttentionBwdParams&, float*, bool, cudaStream_t);
extern template size_t attention_backward_smem_bytes<__half>(int, bool);
extern template Status run_attention_backward<__nv_bfloat16>(const AttentionBwdParams&, float*, bool, cudaStream_t);
extern template size_t attention_backward_smem_bytes<__nv_bfloat16>(int, bool);
extern template Status run_attention_backward<float>(const AttentionBwdParams&, float*, bool, cudaStream_t);
extern template size_t attention_backward_smem_bytes<float>(int, bool);
// END GENERATED by csrc/cuda/generate_kernels.py

#endif  // __CUDACC__

}  // namespace attention_bwd
}  // namespace dlk
